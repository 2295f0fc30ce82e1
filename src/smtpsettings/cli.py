"""The ``smtpsettings`` command: run the server and administer portals, users, keys, the audit log and the outbox.

Every subcommand reads the same configuration as the server and migrates the database first (a check of one
row when it is up to date already). Only
``serve`` and ``migrate`` create a data directory and a database; every other command refuses a missing
one, naming the database it looked for. Errors end with a one-line message and exit code 1. ``--config``
is accepted before the subcommand and after it alike, since operators write it in either place.

Listings are tab-separated with a header line (``--no-header`` leaves it out, for scripts); an empty one
prints nothing on standard output and says so on standard error. Reading only the first lines (``| head``)
ends the command quietly.

The module imports only click and the configuration at the top: ``--help`` and ``--version`` answer at
once, and each command imports the database, the services and the crypto it uses in its body.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from smtpsettings.config import ConfigError, Settings, load_settings
from smtpsettings.domain.accounts import (
    API_KEY_SCOPES,
    PLACEHOLDER_OWNER_EMAIL,
    Role,
    normalize_email,
    valid_email,
)
from smtpsettings.domain.errors import BadArgument, Conflict, DomainError, NotFound

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from sqlalchemy.engine import Connection

    from smtpsettings.services.accounts import AccountsService
    from smtpsettings.store import outbox as outbox_store
    from smtpsettings.store.database import Database

__all__ = ("main",)

FC = TypeVar("FC", bound=Callable[..., Any] | click.Command)


class Context:
    def __init__(self, config_file: str | None) -> None:
        self._settings: Settings | None = None
        self._db: Database | None = None
        if config_file:
            self.use_config(config_file)

    def use_config(self, config_file: str) -> None:
        # Granian workers are separate processes that read the environment, not our arguments.
        os.environ["SMTPSETTINGS_CONFIG_FILE"] = config_file
        self._settings = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    @property
    def db(self) -> Database:
        """The configured database, brought up to date; it must exist already (see :meth:`open_db`)."""
        return self.open_db(create=False)

    def open_db(self, *, create: bool) -> Database:
        """The configured database, migrated to the newest schema.

        Only ``serve`` and ``migrate`` pass ``create``: they make the data directory and the database. Any
        other command run from the wrong directory, or with a misspelt setting, would otherwise leave an
        empty data directory behind and answer "no portal" about a database nobody meant; it refuses
        instead, naming the database it looked for.
        """
        if self._db is None:
            from smtpsettings.store.database import Database

            s = self.settings
            if create:
                s.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            db = Database(
                s.resolved_database_url,
                timeout=s.database_timeout,
                pool_size=s.database_pool_size,
                sqlite_synchronous=s.sqlite_synchronous,
            )
            try:
                if not create and not db.has_schema():
                    raise ValueError(
                        f"no smtpsettings database: the {db.describe()} (data directory {s.data_dir.resolve()}) "
                        "does not exist or was never set up; point SMTPSETTINGS_DATA_DIR, SMTPSETTINGS_DATABASE_URL "
                        "or --config at yours, or create one with `smtpsettings migrate`"
                    )
                db.migrate()
            except BaseException:
                db.dispose()
                raise
            self._db = db
        return self._db

    @property
    def accounts(self) -> AccountsService:
        from smtpsettings.services.accounts import AccountsService

        return AccountsService(self.db)


def _is_store_unavailable(exc: BaseException) -> bool:
    # Looked up, not imported: before the database module is loaded, nothing can have raised its error.
    database = sys.modules.get("smtpsettings.store.database")
    return database is not None and isinstance(exc, database.StoreUnavailable)


@contextmanager
def _one_line_errors() -> Iterator[None]:
    try:
        yield
    except BrokenPipeError:
        raise  # the reader went away (`| head`): click ends quietly
    except Exception as exc:
        if not (isinstance(exc, ConfigError | DomainError | ValueError | RuntimeError | OSError) or _is_store_unavailable(exc)):
            raise
        message = exc.message if isinstance(exc, DomainError) else str(exc)
        click.echo(f"error: {message}", err=True)
        sys.exit(1)


_CONFIG_HELP = "TOML config file (default: SMTPSETTINGS_CONFIG_FILE, else none)."


def _use_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.find_object(Context).use_config(value)  # type: ignore[union-attr]  # main made it


def config_option(command: FC) -> FC:
    """``--config FILE`` on a subcommand, as on ``main``: the later one given wins."""
    return click.option(
        "--config", type=click.Path(dir_okay=False), expose_value=False, callback=_use_config, help=_CONFIG_HELP
    )(command)


def _read_password(from_stdin: bool, command_line: str | None = None) -> str:
    """A new password: one line of standard input, or asked twice on the terminal without echo.

    ``command_line`` is the old ``--password`` option, kept for compatibility: it shows in ``ps`` and
    in shell history, so the documentation never uses it.
    """
    if command_line is not None:
        if from_stdin:
            raise ValueError("give either --password or --password-stdin, not both")
        return command_line
    if from_stdin:
        return sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not sys.stdin.isatty():
        raise ValueError("standard input is not a terminal: use --password-stdin to read the password from it")
    return str(click.prompt("New password", hide_input=True, confirmation_prompt="Repeat it", err=True))


_no_header_option = click.option("--no-header", is_flag=True, help="Leave out the header line (for scripts).")


def _print_rows(header: Sequence[str], rows: Iterable[Sequence[str]], *, no_header: bool, empty: str) -> None:
    """Rows as tab-separated lines under a header line; for no rows, ``empty`` on standard error.

    Standard output stays empty then (a script reading it sees no rows), and the exit code is 0.
    """
    lines = ["\t".join(_one_line(field) for field in row) for row in rows]
    if not lines:
        click.echo(empty, err=True)
        return
    if not no_header:
        click.echo("\t".join(header))
    for line in lines:
        click.echo(line)


_password_stdin_option = click.option(
    "--password-stdin", is_flag=True, help="Read the password as one line from standard input (for scripts)."
)


def _hold_serve_lock(data_dir: Path) -> int:
    """Hold ``DATA_DIR/serve.lock`` for as long as this process lives, or refuse to start.

    Two servers on one data directory would share its metrics directory (the second one empties it at
    start) and its outbox lock. The lock is the kernel's (flock): it goes with the process, however that
    ends, so a crash never leaves a stale one; the forked workers share it, so a server whose workers still
    run holds it too. A holder gets a moment to finish exiting (a restart right after a kill) before the
    refusal. The descriptor is deliberately never closed, and it is returned: the delivery process inherits
    it too, so an orphan one keeps the next serve out just as an orphan worker would. (The dispatcher's
    ``outbox.lock`` is another lock, taken by the process that delivers.)
    """
    path = data_dir / "serve.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + 2
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RuntimeError(
                f"the data directory {data_dir.resolve()} is in use by another smtpsettings serve (pid {holder}); "
                "stop that one, or give this one a data directory of its own"
            ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


@click.group()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help=_CONFIG_HELP)
@click.version_option(package_name="smtpsettings", prog_name="smtpsettings", message="%(prog)s %(version)s")
@click.pass_context
def main(ctx: click.Context, config_file: str | None) -> None:
    """smtpsettings: the DocSpace SMTP settings API as a self-hosted service."""
    ctx.obj = Context(config_file)


_SERVE_EPILOG = f"""\b
Settings, the first found wins:
  the options above; SMTPSETTINGS_* environment variables;
  the TOML config file named by --config or SMTPSETTINGS_CONFIG_FILE
  (no file by default; same names in lower case, without the prefix);
  the defaults.

\b
Data directory: SMTPSETTINGS_DATA_DIR (data_dir in the file), default
./{Settings().data_dir}, relative to the working directory; created 0700.
It holds the SQLite database smtpsettings.db (unless SMTPSETTINGS_DATABASE_URL
names another database) and the key ring keys.json: `smtpsettings backup DIR`
copies both, consistently, while the server runs.

\b
The first start on an empty database creates the portal localhost and its
owner (SMTPSETTINGS_OWNER_EMAIL; unset: asked for in a terminal, else
{PLACEHOLDER_OWNER_EMAIL}, which mail servers refuse) and prints the owner's
password once; `smtpsettings user set-password` sets a new one.
"""


@main.command(epilog=_SERVE_EPILOG)
@config_option
@click.option("--host", help="Address to listen on (default 127.0.0.1, or SMTPSETTINGS_HOST).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default 8080, or SMTPSETTINGS_PORT).")
@click.option("--workers", type=click.IntRange(1, 64), help="Worker processes (default 1).")
@click.option(
    "--submission-port",
    type=click.IntRange(0, 65535),
    help="SMTP submission port for applications (default off, or SMTPSETTINGS_SUBMISSION_PORT).",
)
@click.option("--submission-host", help="Address of the submission port (default: the HTTP host).")
@click.pass_obj
def serve(
    ctx: Context,
    host: str | None,
    port: int | None,
    workers: int | None,
    submission_port: int | None,
    submission_host: str | None,
) -> None:
    """Run the HTTP server (granian), the SMTP submission port when one is set, and the delivery process.

    The workers accept mail; one process of their own, `smtpsettings deliver`, sends the outbox. It is
    restarted when it dies and stopped after the workers.
    """
    from smtpsettings.deliverer import DeliverySupervisor
    from smtpsettings.httpserver import (  # granian: only here
        bind_listener,
        connection_budget,
        create_server,
        listen,
    )
    from smtpsettings.logs import configure_logging
    from smtpsettings.metrics import use_multiprocess_dir
    from smtpsettings.services.keys import open_key_ring
    from smtpsettings.submission.server import bind_submission, export
    from smtpsettings.wiring import SEPARATE_DELIVERY_ENV

    with _one_line_errors():
        settings = load_settings(
            host=host, port=port, workers=workers, submission_port=submission_port, submission_host=submission_host
        )
        ctx._settings = settings
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        serve_lock = _hold_serve_lock(settings.data_dir)
        # Bound first: on a taken port nothing else happens (no owner made, no password shown).
        listener = bind_listener(settings.host, settings.port)
        try:
            submission = bind_submission(settings)
        except Exception:
            listener.close()
            raise
        per_worker, limit_warning = connection_budget(settings)
        db = ctx.open_db(create=True)
        # Checked (and created, on a fresh database) here, once, before workers race for it.
        open_key_ring(db, settings.key_file)
        owner_email = settings.owner_email or _ask_owner_email(ctx)
        first = ctx.accounts.first_start(owner_email)
        # Emptied and exported before granian forks: every worker writes its counters there, a scrape adds them up.
        use_multiprocess_dir(settings.data_dir / "metrics")
        shown_host = "localhost" if settings.host in ("127.0.0.1", "0.0.0.0", "::") else settings.host
        if first is not None:
            click.echo("First start: created the default portal and its owner.")
            click.echo(f"  Sign in at: http://{shown_host}:{settings.port}/")
            click.echo(f"  Email:      {first.owner.email}")
            click.echo(f"  Password:   {first.password}")
            click.echo("  (The password is shown only this once.)")
            if first.owner.email == PLACEHOLDER_OWNER_EMAIL:
                click.echo(
                    f"warning: the owner's email is {PLACEHOLDER_OWNER_EMAIL}, which mail servers refuse "
                    "(need fully-qualified address), so test mail to the owner will fail; give the owner "
                    "a real address with `smtpsettings user set-email`, and set SMTPSETTINGS_OWNER_EMAIL "
                    "before a first start",
                    err=True,
                )
        listen(listener)
    if limit_warning:
        click.echo(f"warning: {limit_warning}", err=True)
    os.environ.setdefault("SMTPSETTINGS_DATA_DIR", str(settings.data_dir))
    export(submission)  # the workers serve these sockets too
    os.environ[SEPARATE_DELIVERY_ENV] = str(os.getpid())  # the workers accept; the delivery process sends
    click.echo(f"smtpsettings listening on http://{settings.host}:{settings.port} (data in {settings.data_dir.resolve()})")
    for sock, implicit in submission:
        address, bound_port = sock.getsockname()[:2]
        click.echo(f"SMTP submission on {address}:{bound_port} ({'implicit TLS' if implicit else 'STARTTLS'})")
    sys.stdout.flush()
    configure_logging(settings.log_format, settings.log_level)  # the supervisor's lines
    delivery = DeliverySupervisor(pass_fds=[serve_lock])
    server = create_server(settings, listener, per_worker, on_interrupt=delivery.request_stop)
    delivery.start()
    try:
        server.serve()
    finally:
        delivery.stop()  # told to stop with the workers; waited for here, killed if it outlasts its bound


@main.command()
@config_option
@click.pass_obj
def deliver(ctx: Context) -> None:
    """Send the outbox: only the delivery process, until SIGTERM or SIGINT.

    `smtpsettings serve` starts and supervises one itself; run this only to
    deliver from a process (or unit) of your own. Of all processes on one data
    directory, the one holding its outbox.lock sends; any other waits for it.
    """
    from smtpsettings.deliverer import run
    from smtpsettings.logs import configure_logging

    with _one_line_errors():
        settings = ctx.settings
        ctx.db.dispose()  # checked and migrated; the dispatcher opens its own
    configure_logging(settings.log_format, settings.log_level)
    run(settings)


def _ask_owner_email(ctx: Context) -> str:
    """The owner's email for a first start without SMTPSETTINGS_OWNER_EMAIL, asked for if someone can answer.

    Without a terminal (systemd, a container) nobody can: the placeholder keeps the start working as it
    always did, and the first-start output warns about it.
    """
    if not sys.stdin.isatty() or ctx.accounts.list_portals():
        return PLACEHOLDER_OWNER_EMAIL
    return str(click.prompt("Owner's email (sign-in name; test mail goes there)", value_proc=_email_answer))


def _email_answer(value: str) -> str:
    email = normalize_email(value)
    if not valid_email(email):
        raise click.BadParameter(f"{value.strip()!r} is not an email address (name@example.com)")
    return email


@main.command()
@config_option
@click.pass_obj
def migrate(ctx: Context) -> None:
    """Create or upgrade the database schema to the newest version."""
    with _one_line_errors():
        ctx.open_db(create=True)  # opening it migrates
        click.echo("database is up to date")


@main.group()
@config_option
def portal() -> None:
    """Portals, each answering one Host name."""


@portal.command("create")
@config_option
@click.argument("hostname")
@click.option("--default", "is_default", is_flag=True, help="Also answer Hosts that match no portal.")
@click.pass_obj
def portal_create(ctx: Context, hostname: str, is_default: bool) -> None:
    """Create a portal answering HOSTNAME."""
    with _one_line_errors():
        p = ctx.accounts.create_portal(hostname, is_default=is_default)
        click.echo(f"created portal {p.hostname}" + (" (default)" if p.is_default else ""))


@portal.command("list")
@config_option
@_no_header_option
@click.pass_obj
def portal_list(ctx: Context, no_header: bool) -> None:
    """List portals: host name, and "default" for the one answering unknown Hosts."""
    with _one_line_errors():
        rows = [(p.hostname, "default" if p.is_default else "-") for p in ctx.accounts.list_portals()]
        _print_rows(("hostname", "default"), rows, no_header=no_header, empty="no portals")


_PORTAL_TABLES = {
    "users": "user(s)",
    "sessions": "session(s)",
    "api_keys": "API key(s)",
    "outbox_messages": "message(s)",
    "audit_log": "audit row(s)",
    "smtp_settings": "SMTP settings",
    "test_jobs": "test mail job(s)",
}


@portal.command("delete")
@config_option
@click.argument("hostname")
@click.option("--yes", is_flag=True, help="Do not ask (for scripts).")
@click.pass_obj
def portal_delete(ctx: Context, hostname: str, yes: bool) -> None:
    """Delete the portal HOSTNAME with its users, API keys, settings, messages and audit rows.

    Shows what goes, then asks twice: yes or no, and the host name typed again (--yes skips both). All of
    it goes in one transaction. The only portal is never deleted: a server needs one to answer.
    """
    with _one_line_errors():
        contents = ctx.accounts.deletion_preview(hostname)
        summary = ", ".join(f"{contents[t]} {label}" for t, label in _PORTAL_TABLES.items() if contents.get(t))
        click.echo(f"portal {hostname} holds {summary or 'nothing else'}")
        if not yes:
            if not sys.stdin.isatty():
                raise ValueError("standard input is not a terminal: give --yes to delete without asking")
            if not click.confirm(f"Delete portal {hostname} and all of the above?", default=False, err=True):
                raise ValueError("nothing deleted")
            if click.prompt("Type the host name to confirm", err=True) != hostname:
                raise ValueError("the host name does not match: nothing deleted")
        ctx.accounts.delete_portal(hostname)
        click.echo(f"deleted portal {hostname}")


@main.group()
@config_option
def user() -> None:
    """Users of a portal."""


@user.command("create")
@config_option
@click.option("--portal", "hostname", required=True)
@click.option("--email", required=True)
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--name", default="")
@_password_stdin_option
@click.option("--password", help="The password itself (avoid: other users see it in ps, and it stays in shell history).")
@click.pass_obj
def user_create(
    ctx: Context, hostname: str, email: str, role: str, name: str, password_stdin: bool, password: str | None
) -> None:
    """Create a user with a role: owner, admin (both may manage SMTP settings), user or guest.

    The password is asked twice without echo, or read from standard input with --password-stdin.
    """
    with _one_line_errors():
        ctx.accounts.portal(hostname)  # an unknown portal fails before the password is asked
        secret = _read_password(password_stdin, password)
        u = ctx.accounts.create_user(hostname, email=email, password=secret, role=Role(role), name=name)
        click.echo(f"created {u.role.value} {u.email} in {hostname}")


@user.command("set-password")
@config_option
@click.option("--portal", "hostname", required=True)
@click.option("--email", required=True)
@_password_stdin_option
@click.pass_obj
def user_set_password(ctx: Context, hostname: str, email: str, password_stdin: bool) -> None:
    """Set a user's password, e.g. a lost owner password.

    The password is asked twice without echo, or read as one line from standard input with
    --password-stdin. Every session of the user ends at once: whoever signed in with the old password
    (after a compromise, the attacker too) is signed out. The user's API keys are not affected:
    revoke them with `smtpsettings apikey revoke KEY_ID`.
    """
    with _one_line_errors():
        ctx.accounts.portal(hostname)
        secret = _read_password(password_stdin)
        ended = ctx.accounts.set_password(hostname, email, secret)
        click.echo(f"password set for {email} in {hostname}; ended {ended} session(s)")


@user.command("list")
@config_option
@click.option("--portal", "hostname", required=True)
@_no_header_option
@click.pass_obj
def user_list(ctx: Context, hostname: str, no_header: bool) -> None:
    """List the users of a portal: email, role, display name, disabled (yes/no)."""
    with _one_line_errors():
        users = ctx.accounts.list_users(hostname)
        rows = [(u.email, u.role.value, u.display_name, "yes" if u.disabled else "no") for u in users]
        _print_rows(("email", "role", "name", "disabled"), rows, no_header=no_header, empty="no users")


@user.command("set-email")
@config_option
@click.option("--portal", "hostname", required=True)
@click.option("--email", required=True, help="The user's email now.")
@click.option("--new-email", required=True, help="The email to sign in with from now on.")
@click.pass_obj
def user_set_email(ctx: Context, hostname: str, email: str, new_email: str) -> None:
    """Change the email a user signs in with; the password, sessions and API keys stay."""
    with _one_line_errors():
        ctx.accounts.set_email(hostname, email, new_email)
        click.echo(f"{email} in {hostname} is now {new_email.strip().lower()}")


@user.command("set-role")
@config_option
@click.option("--portal", "hostname", required=True)
@click.option("--email", required=True)
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.pass_obj
def user_set_role(ctx: Context, hostname: str, email: str, role: str) -> None:
    """Change a user's role; the portal always keeps one owner or admin.

    Sessions and API keys act with the new role at once.
    """
    with _one_line_errors():
        u = ctx.accounts.set_role(hostname, email, Role(role))
        click.echo(f"{u.email} in {hostname} is now {role}")


@user.command("disable")
@config_option
@click.option("--portal", "hostname", required=True)
@click.option("--email", required=True)
@click.pass_obj
def user_disable(ctx: Context, hostname: str, email: str) -> None:
    """Stop a user from signing in, end its sessions now and stop its API keys; never the last enabled owner.

    Its sign-in fails as a wrong password does. Messages it already queued are still delivered.
    `smtpsettings user enable` undoes it.
    """
    with _one_line_errors():
        ended = ctx.accounts.disable_user(hostname, email)
        click.echo(f"disabled {email} in {hostname}; ended {ended} session(s)")


@user.command("enable")
@config_option
@click.option("--portal", "hostname", required=True)
@click.option("--email", required=True)
@click.pass_obj
def user_enable(ctx: Context, hostname: str, email: str) -> None:
    """Let a disabled user sign in again; its unrevoked API keys work again."""
    with _one_line_errors():
        u = ctx.accounts.enable_user(hostname, email)
        click.echo(f"enabled {u.email} in {hostname}")


@user.command("delete")
@config_option
@click.option("--portal", "hostname", required=True)
@click.option("--email", required=True)
@click.pass_obj
def user_delete(ctx: Context, hostname: str, email: str) -> None:
    """Delete a user with its sessions and API keys; never the portal's last owner or admin.

    Messages the user sent stay in the outbox.
    """
    with _one_line_errors():
        u = ctx.accounts.delete_user(hostname, email)
        click.echo(f"deleted {u.role.value} {u.email} from {hostname}")


@main.group()
@config_option
def apikey() -> None:
    """API keys (sk-…), sent as Authorization: Bearer sk-…"""


@apikey.command("create")
@config_option
@click.option("--portal", "hostname", required=True)
@click.option("--email", required=True)
@click.option(
    "--scope",
    type=click.Choice(API_KEY_SCOPES),
    help="Narrow the key: mail.send sends the portal's mail and reads what it sent, nothing else.",
)
@click.pass_obj
def apikey_create(ctx: Context, hostname: str, email: str, scope: str | None) -> None:
    """Create an API key for a user; it is printed once, alone on the last line."""
    with _one_line_errors():
        key_id, key = ctx.accounts.create_api_key(hostname, email, scope)
        scoped = f" with scope {scope}" if scope else ""
        click.echo(f"created API key {key_id}{scoped} for {email} (store it now: it is not shown again)")
        click.echo(key)


@apikey.command("list")
@config_option
@click.option("--portal", "hostname", required=True)
@_no_header_option
@click.pass_obj
def apikey_list(ctx: Context, hostname: str, no_header: bool) -> None:
    """List a portal's API keys: id, owner's email, scope, created, last used and revoked (UTC).

    Never the key itself. The last use is recorded at most once a minute per key.
    """
    with _one_line_errors():
        rows = [
            (
                str(k["id"]),
                str(k["email"]),
                str(k["scope"] or "all"),
                _when(k["created_at"]),
                _when(k["last_used_at"]),
                _when(k["revoked_at"]),
            )
            for k in ctx.accounts.list_api_keys(hostname)
        ]
        header = ("id", "email", "scope", "created", "last_used", "revoked")
        _print_rows(header, rows, no_header=no_header, empty="no API keys")


def _when(value: object) -> str:
    """A stored time as seconds-precise ISO 8601, or "-" for none."""
    return value.isoformat(timespec="seconds") if isinstance(value, datetime) else "-"


@apikey.command("revoke")
@config_option
@click.argument("key_id")
@click.pass_obj
def apikey_revoke(ctx: Context, key_id: str) -> None:
    """Revoke an API key by its id (key_…)."""
    with _one_line_errors():
        ctx.accounts.revoke_api_key(key_id)
        click.echo(f"revoked {key_id}")


@main.group()
@config_option
def keys() -> None:
    """The encryption key ring of stored secrets."""


@keys.command("rotate")
@config_option
@click.pass_obj
def keys_rotate(ctx: Context) -> None:
    """Add a new key and re-encrypt every stored secret with it (safe while servers run)."""
    from smtpsettings.services.keys import open_key_ring, rotate_keys

    with _one_line_errors():
        db = ctx.db  # before the ring: a missing database must not leave a key ring behind
        key_id, count = rotate_keys(db, open_key_ring(db, ctx.settings.key_file))
        click.echo(f"new primary key {key_id}; re-encrypted {count} secret(s)")


@keys.command("export")
@config_option
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
def keys_export(ctx: Context, file: Path) -> None:
    """Write the key ring to FILE, a new file (0600), for `keys import` on another instance.

    FILE holds every key: move it as you would move a password, and delete it once imported.
    """
    from smtpsettings.crypto import KeyRing

    with _one_line_errors():
        ring = ctx.settings.key_file
        if not ring.is_file():
            raise ValueError(f"there is no key ring at {ring}: check SMTPSETTINGS_DATA_DIR or --config")
        ids = KeyRing(ring).export(file)
        click.echo(f"exported {len(ids)} key(s) to {file}: {', '.join(ids)}")


@keys.command("import")
@config_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def keys_import(ctx: Context, file: Path) -> None:
    """Add the keys in FILE (from `keys export`) that this instance's key ring lacks.

    Keys already in the ring stay; when the exported ring's newest key is new here, it becomes the one new
    secrets are encrypted with. Without a ring yet, FILE's keys become the ring. Servers running on this data
    directory pick the change up without a restart.
    """
    from smtpsettings.crypto import import_keys

    with _one_line_errors():
        added = import_keys(ctx.settings.key_file, file)
        if added:
            click.echo(f"imported {len(added)} key(s) into {ctx.settings.key_file}: {', '.join(added)}")
        else:
            click.echo(f"{ctx.settings.key_file} already holds every key in {file}")


@main.command()
@config_option
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.pass_obj
def backup(ctx: Context, directory: Path) -> None:
    """Copy the SQLite database and the key ring into DIRECTORY, a new directory (0700, files 0600).

    The copy is consistent and taken while servers run; DIRECTORY is itself a data directory that
    `serve` can start on. It holds message bodies and the keys to every stored secret: keep it as private as
    the data directory. On PostgreSQL, back the database up with pg_dump and the key ring with `keys export`.
    """
    from smtpsettings.crypto import KeyRing
    from smtpsettings.store import keys as keys_store

    with _one_line_errors():
        db = ctx.db
        if not db.is_sqlite:
            raise ValueError(
                f"the {db.describe()} is backed up with PostgreSQL's pg_dump, not here; "
                "save the key ring beside it with `smtpsettings keys export FILE`"
            )
        if directory.exists() or directory.is_symlink():
            raise ValueError(f"{directory} exists already: a backup goes into a new directory")
        if not directory.parent.is_dir():
            raise ValueError(f"the directory {directory.parent} does not exist")
        ring = ctx.settings.key_file
        if not ring.is_file() and db.read_sync(keys_store.recorded):
            raise ValueError(f"there is no key ring at {ring}, and the database's secrets need one: nothing copied")
        # Built beside the destination and renamed into place whole: an interrupted backup leaves no
        # directory that looks complete. The ring is copied after the database (rings only grow), so it
        # holds every key the copied secrets use.
        partial = directory.with_name(f".{directory.name}.partial-{os.getpid()}")
        partial.mkdir(mode=0o700)
        try:
            db.backup_to(partial / "smtpsettings.db")
            if ring.is_file():
                KeyRing(ring).export(partial / "keys.json")
            partial.rename(directory)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        copied = f"the key ring {ring}" if ring.is_file() else "no key ring (none made yet)"
        click.echo(f"backed up the {db.describe()} and {copied} to {directory}")


@main.command()
@config_option
@click.option("--portal", "hostname", required=True)
@click.option("--limit", default=100, type=click.IntRange(1, 10_000))
@_no_header_option
@click.pass_obj
def audit(ctx: Context, hostname: str, limit: int, no_header: bool) -> None:
    """Show who changed a portal's SMTP settings, when, from where, and which fields."""
    from smtpsettings.store import smtp as smtp_store

    with _one_line_errors():
        p = ctx.accounts.portal(hostname)
        rows = [
            (str(e.created_at), e.action, e.user_email, e.client_address, ",".join(e.changed_fields) or "-")
            for e in ctx.db.read_sync(lambda c: smtp_store.list_audit(c, p.id, limit))
        ]
        header = ("created", "action", "email", "address", "fields")
        _print_rows(header, rows, no_header=no_header, empty="no audit entries")


# C0 and C1 controls (tab and newline among them) and the Unicode line and paragraph separators.
_LINE_BREAKING = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _one_line(text: str) -> str:
    """``text`` as one tab-free line: a subject or an SMTP reply must not split a row of the listing."""
    return _LINE_BREAKING.sub(" ", text)


@main.group()
@config_option
def messages() -> None:
    """The outbox: the portals' mail, sent through the API or the submission port."""


_MESSAGE_HEADER = ("id", "status", "created", "attempts", "to", "subject", "last_error")
_STATUS_HELP = "queued, sending, sent, partial, deferred, failed, cancelled"


@messages.command("list")
@config_option
@click.option("--portal", "hostname", required=True)
@click.option("--status", help=f"Only messages in this status: {_STATUS_HELP}.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@_no_header_option
@click.pass_obj
def messages_list(ctx: Context, hostname: str, status: str | None, limit: int, no_header: bool) -> None:
    """List a portal's messages, newest first, one per line.

    Tab-separated: id, status, created (UTC), attempts, To, subject, last error. Bcc and bodies are never shown.
    """
    from smtpsettings.store import outbox as outbox_store

    with _one_line_errors():
        if status is not None and status not in outbox_store.STATUSES:
            raise BadArgument(f"unknown status {status!r}: expected one of {', '.join(outbox_store.STATUSES)}")
        p = ctx.accounts.portal(hostname)
        found, _total = ctx.db.read_sync(lambda c: outbox_store.list_messages(c, p.id, status=status, count=limit))
        _print_rows(_MESSAGE_HEADER, map(_message_row, found), no_header=no_header, empty="no messages")


# The headers `messages show` prints from the stored message; Bcc is never among them.
_SHOWN_HEADERS = ("From", "To", "Cc", "Subject", "Date", "Message-ID")


@messages.command("show")
@config_option
@click.argument("message_id")
@click.option("--body", is_flag=True, help="Print the whole stored message (headers and body) instead.")
@_no_header_option
@click.pass_obj
def messages_show(ctx: Context, message_id: str, body: bool, no_header: bool) -> None:
    """One message, by its id alone (ids are unique across portals), and how it went for each recipient.

    First its headers (From, To, Cc, Subject, Date, Message-ID; never Bcc) as "Name: value" lines, then its
    status, attempts and last error, a blank line, and one tab-separated line per To and Cc recipient:
    address, its status (pending, accepted, refused, deferred, failed, cancelled) and the reply that decided
    it. The body is printed only with --body, which prints the stored message as it goes to the mail server.
    """
    from smtpsettings.store import outbox as outbox_store

    with _one_line_errors():
        m, content = ctx.db.read_sync(lambda c: (outbox_store.find_any(c, message_id), outbox_store.content_of(c, message_id)))
        if m is None:
            raise NotFound(f"no message {message_id!r}")
        if body:
            if content is None:
                raise Conflict(f"message {message_id} has no body any more: it was deleted after the retention period")
            click.echo(content, nl=False)
            return
        for name, value in _headers(m, content):
            click.echo(f"{name}: {_one_line(value)}")
        click.echo(f"Status: {m.status}")
        click.echo(f"Attempts: {m.attempts}")
        click.echo(f"Last-Error: {_one_line(m.last_error or '-')}")
        click.echo("")
        rows = [(r.address, r.status, r.reply or "-") for r in m.recipients]
        _print_rows(("recipient", "status", "reply"), rows, no_header=no_header, empty="no To or Cc recipients")


def _headers(m: outbox_store.MessageRecord, content: bytes | None) -> list[tuple[str, str]]:
    """The shown headers, parsed from the stored message; from its recorded fields once the body is gone."""
    if content is None:
        recorded = {"To": ", ".join(m.to), "Cc": ", ".join(m.cc), "Subject": m.subject, "Message-ID": m.message_id}
        return [(name, value) for name, value in recorded.items() if value]
    from email import policy
    from email.parser import BytesHeaderParser

    parsed = BytesHeaderParser(policy=policy.default).parsebytes(content)
    return [(name, str(value)) for name in _SHOWN_HEADERS for value in parsed.get_all(name, [])]


def _message_row(m: outbox_store.MessageRecord) -> tuple[str, ...]:
    created = m.created_at.isoformat(timespec="seconds")
    return (m.id, m.status, created, str(m.attempts), ",".join(m.to) or "-", m.subject, m.last_error or "-")


@messages.command("retry")
@config_option
@click.argument("message_id", required=False)
@click.option("--portal", "hostname", help="With --status failed: every failed message of this portal.")
@click.option("--status", type=click.Choice(["failed"]), help="Which messages of --portal: failed ones.")
@click.pass_obj
def messages_retry(ctx: Context, message_id: str | None, hostname: str | None, status: str | None) -> None:
    """Queue a failed message again, due now, with a fresh retry horizon (the id is unique across portals).

    With --portal P --status failed instead of an id: every failed message of the portal, and how many were
    requeued and how many skipped because their bodies are gone.
    """
    from smtpsettings.store import outbox as outbox_store

    with _one_line_errors():
        if message_id is None:
            if hostname is None or status is None:
                raise BadArgument("give a message id, or --portal P --status failed for all of a portal's failed messages")
            p = ctx.accounts.portal(hostname)
            requeued, skipped = ctx.db.write_sync(lambda c: outbox_store.requeue_all_failed(c, p.id))
            click.echo(f"requeued {requeued} message(s); skipped {skipped} whose body is gone")
            return
        if hostname is not None or status is not None:
            raise BadArgument("give either a message id or --portal and --status, not both")
        _retry_one(ctx, message_id)


def _retry_one(ctx: Context, message_id: str) -> None:
    from smtpsettings.store import outbox as outbox_store

    def requeue(conn: Connection) -> tuple[outbox_store.MessageRecord | None, bool]:
        record = outbox_store.find_any(conn, message_id)
        if record is None:
            return None, False
        return record, outbox_store.requeue_failed(conn, record.portal_id, message_id)

    record, requeued = ctx.db.write_sync(requeue)
    if record is None:
        raise NotFound(f"no message {message_id!r}")
    if not requeued:
        if record.status == "failed":  # failed, but its body is gone
            raise Conflict(f"message {message_id} can no longer be sent: its body was deleted after the retention period")
        raise Conflict(f"message {message_id} is {record.status}: only a failed message can be retried")
    click.echo(f"requeued {message_id}")


@messages.command("flush")
@config_option
@click.option("--portal", "hostname", required=True)
@click.pass_obj
def messages_flush(ctx: Context, hostname: str) -> None:
    """Make every waiting (queued or deferred) message of the portal due now, as Postfix's `postqueue -f`.

    Attempts are unchanged. A running server sends them at its next poll of the outbox; a destination it
    has found unavailable is still waited for (that back-off is held in the server's memory).
    """
    from smtpsettings.store import outbox as outbox_store

    with _one_line_errors():
        p = ctx.accounts.portal(hostname)
        flushed = ctx.db.write_sync(lambda c: outbox_store.flush_portal(c, p.id))
        click.echo(f"{flushed} message(s) of {hostname} due now")


@main.group()
@config_option
def lockout() -> None:
    """Failed sign-in counters: HTTP (per account, per address, per API key), SMTP AUTH (per address, per key)."""


_LOCKOUT_HEADER = ("kind", "subject", "failures", "seconds_left", "locked")
_NO_HEADER_HELP = "Print the rows only, without the header line."


def _echo_lockouts(lockouts: list[Any], header: bool) -> None:
    """One TSV row per counter, after a header line; "no lockouts" on stderr when there is none."""
    rows = (
        (item.kind, item.subject, str(item.failures), str(item.seconds_left), "yes" if item.locked else "no")
        for item in lockouts
    )
    _print_rows(_LOCKOUT_HEADER, rows, no_header=not header, empty="no lockouts")


@lockout.command("list")
@config_option
@click.option("--no-header", is_flag=True, help=_NO_HEADER_HELP)
@click.pass_obj
def lockout_list(ctx: Context, no_header: bool) -> None:
    """Show the running counters of failed sign-ins and whether each locks something out now.

    \b
    kind: http-account (portal/email), http-address, http-key, smtp-address
    (an IPv6 client: its /64) or smtp-key (keys: the API key's id, never
    the key).
    """
    from smtpsettings.services.lockouts import LockoutService

    with _one_line_errors():
        _echo_lockouts(LockoutService(ctx.db, ctx.settings).current(), not no_header)


@lockout.command("clear")
@config_option
@click.option("--address", help="A client address: its HTTP and SMTP counters (IPv6: its /64's).")
@click.option("--key", "key_id", help="An API key's id (key_…): its HTTP and SMTP counters.")
@click.option("--portal", "hostname", help="With --email: that account's HTTP sign-in counter.")
@click.option("--email", help="With --portal: that account's HTTP sign-in counter.")
@click.option("--no-header", is_flag=True, help=_NO_HEADER_HELP)
@click.pass_obj
def lockout_clear(
    ctx: Context,
    address: str | None,
    key_id: str | None,
    hostname: str | None,
    email: str | None,
    no_header: bool,
) -> None:
    """Lift lockouts now: the counters named, or every running one if none is named; prints what it cleared."""
    from smtpsettings.services.lockouts import LockoutService

    with _one_line_errors():
        if (hostname is None) != (email is None):
            raise BadArgument("--portal and --email go together: they name one account")
        account = (hostname, email) if hostname is not None and email is not None else None
        cleared = LockoutService(ctx.db, ctx.settings).clear(address=address, key_id=key_id, account=account)
        _echo_lockouts(cleared, not no_header)
