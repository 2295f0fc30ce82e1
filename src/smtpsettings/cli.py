"""The ``smtpsettings`` command: run the server and administer portals, users, keys and the audit log.

Every subcommand reads the same configuration as the server and migrates the database first, so any of
them works on a fresh data directory. Errors end with a one-line message and exit code 1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
import click

from smtpsettings.config import ConfigError, Settings, load_settings
from smtpsettings.crypto import KeyRing
from smtpsettings.domain.accounts import Role
from smtpsettings.domain.errors import DomainError
from smtpsettings.services.accounts import AccountsService
from smtpsettings.services.keys import rotate_keys
from smtpsettings.store import smtp as smtp_store
from smtpsettings.store.database import Database, StoreUnavailable

__all__ = ("main",)


class Context:
    def __init__(self, config_file: str | None) -> None:
        if config_file:
            # Granian workers are separate processes that read the environment, not our arguments.
            os.environ["SMTPSETTINGS_CONFIG_FILE"] = config_file
        self._settings: Settings | None = None
        self._db: Database | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    @property
    def db(self) -> Database:
        if self._db is None:
            self.settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            s = self.settings
            self._db = Database(
                s.resolved_database_url,
                timeout=s.database_timeout,
                pool_size=s.database_pool_size,
                sqlite_synchronous=s.sqlite_synchronous,
            )
            self._db.migrate()
        return self._db

    @property
    def accounts(self) -> AccountsService:
        return AccountsService(self.db)


@contextmanager
def _one_line_errors() -> Iterator[None]:
    try:
        yield
    except (ConfigError, DomainError, StoreUnavailable, ValueError, RuntimeError, OSError) as exc:
        message = exc.message if isinstance(exc, DomainError) else str(exc)
        click.echo(f"error: {message}", err=True)
        sys.exit(1)


@click.group()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML config file (else SMTPSETTINGS_CONFIG_FILE).")
@click.pass_context
def main(ctx: click.Context, config_file: str | None) -> None:
    """smtpsettings: the DocSpace SMTP settings API as a self-hosted service."""
    ctx.obj = Context(config_file)


@main.command()
@click.option("--host", help="Address to listen on (default 127.0.0.1, or SMTPSETTINGS_HOST).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default 8080, or SMTPSETTINGS_PORT).")
@click.option("--workers", type=click.IntRange(1, 64), help="Worker processes (default 1).")
@click.pass_obj
def serve(ctx: Context, host: str | None, port: int | None, workers: int | None) -> None:
    """Run the HTTP server (granian)."""
    from smtpsettings.httpserver import bind_listener, connection_budget, create_server, listen  # granian: only here

    with _one_line_errors():
        settings = load_settings(host=host, port=port, workers=workers)
        ctx._settings = settings
        # Bound first: on a taken port nothing else happens (no owner made, no password shown).
        listener = bind_listener(settings.host, settings.port)
        per_worker, limit_warning = connection_budget(settings)
        first = ctx.accounts.first_start(settings.owner_email)
        KeyRing(settings.key_file)  # created here, once, before workers race for it
        shown_host = "localhost" if settings.host in ("127.0.0.1", "0.0.0.0", "::") else settings.host
        if first is not None:
            click.echo("First start: created the default portal and its owner.")
            click.echo(f"  Sign in at: http://{shown_host}:{settings.port}/")
            click.echo(f"  Email:      {first.owner.email}")
            click.echo(f"  Password:   {first.password}")
            click.echo("  (The password is shown only this once.)")
        listen(listener)
    if limit_warning:
        click.echo(f"warning: {limit_warning}", err=True)
    os.environ.setdefault("SMTPSETTINGS_DATA_DIR", str(settings.data_dir))
    click.echo(f"smtpsettings listening on http://{settings.host}:{settings.port} (data in {settings.data_dir.resolve()})")
    sys.stdout.flush()
    create_server(settings, listener, per_worker).serve()


@main.command()
@click.pass_obj
def migrate(ctx: Context) -> None:
    """Create or upgrade the database schema to the newest version."""
    with _one_line_errors():
        ctx.db.migrate()  # opening it migrates already; saying so keeps the command's intent plain
        click.echo("database is up to date")


@main.group()
def portal() -> None:
    """Portals, each answering one Host name."""


@portal.command("create")
@click.argument("hostname")
@click.option("--default", "is_default", is_flag=True, help="Also answer Hosts that match no portal.")
@click.pass_obj
def portal_create(ctx: Context, hostname: str, is_default: bool) -> None:
    """Create a portal answering HOSTNAME."""
    with _one_line_errors():
        p = ctx.accounts.create_portal(hostname, is_default=is_default)
        click.echo(f"created portal {p.hostname}" + (" (default)" if p.is_default else ""))


@portal.command("list")
@click.pass_obj
def portal_list(ctx: Context) -> None:
    """List portals."""
    with _one_line_errors():
        for p in ctx.accounts.list_portals():
            click.echo(f"{p.hostname}\t{'default' if p.is_default else ''}".rstrip())


@main.group()
def user() -> None:
    """Users of a portal."""


@user.command("create")
@click.option("--portal", "hostname", required=True)
@click.option("--email", required=True)
@click.option("--password", required=True)
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--name", default="")
@click.pass_obj
def user_create(ctx: Context, hostname: str, email: str, password: str, role: str, name: str) -> None:
    """Create a user with a role: owner, admin (both may manage SMTP settings), user or guest."""
    with _one_line_errors():
        u = ctx.accounts.create_user(hostname, email=email, password=password, role=Role(role), name=name)
        click.echo(f"created {u.role.value} {u.email} in {hostname}")


@user.command("list")
@click.option("--portal", "hostname", required=True)
@click.pass_obj
def user_list(ctx: Context, hostname: str) -> None:
    """List the users of a portal."""
    with _one_line_errors():
        for u in ctx.accounts.list_users(hostname):
            click.echo(f"{u.email}\t{u.role.value}\t{u.display_name}")


@main.group()
def apikey() -> None:
    """API keys (sk-…), sent as Authorization: Bearer sk-…"""


@apikey.command("create")
@click.option("--portal", "hostname", required=True)
@click.option("--email", required=True)
@click.pass_obj
def apikey_create(ctx: Context, hostname: str, email: str) -> None:
    """Create an API key for a user; it is printed once, alone on the last line."""
    with _one_line_errors():
        key_id, key = ctx.accounts.create_api_key(hostname, email)
        click.echo(f"created API key {key_id} for {email} (store it now: it is not shown again)")
        click.echo(key)


@apikey.command("revoke")
@click.argument("key_id")
@click.pass_obj
def apikey_revoke(ctx: Context, key_id: str) -> None:
    """Revoke an API key by its id (key_…)."""
    with _one_line_errors():
        ctx.accounts.revoke_api_key(key_id)
        click.echo(f"revoked {key_id}")


@main.group()
def keys() -> None:
    """The encryption key ring of stored secrets."""


@keys.command("rotate")
@click.pass_obj
def keys_rotate(ctx: Context) -> None:
    """Add a new key and re-encrypt every stored secret with it (safe while servers run)."""
    with _one_line_errors():
        keyring = KeyRing(ctx.settings.key_file)
        key_id, count = rotate_keys(ctx.db, keyring)
        click.echo(f"new primary key {key_id}; re-encrypted {count} secret(s)")


@main.command()
@click.option("--portal", "hostname", required=True)
@click.option("--limit", default=100, type=click.IntRange(1, 10_000))
@click.pass_obj
def audit(ctx: Context, hostname: str, limit: int) -> None:
    """Show who changed a portal's SMTP settings, when, from where, and which fields."""
    with _one_line_errors():
        p = ctx.accounts.portal(hostname)
        for e in ctx.db.read_sync(lambda c: smtp_store.list_audit(c, p.id, limit)):
            fields = ",".join(e.changed_fields) or "-"
            click.echo(f"{e.created_at}\t{e.action}\t{e.user_email}\t{e.client_address}\t{fields}")
