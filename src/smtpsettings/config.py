"""Settings read once at start-up from the environment and an optional TOML file.

Every variable is named ``SMTPSETTINGS_<FIELD>`` (upper case); a config file, named by
``SMTPSETTINGS_CONFIG_FILE``, holds the same fields in lower case without the prefix. The environment
wins over the file, the file over the defaults. Nothing deeper in the code reads ``os.environ``:
the :class:`Settings` object is built here and passed down.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import re
import tomllib
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import msgspec.inspect

from smtpsettings.domain.accounts import normalize_email, valid_email

__all__ = ("ConfigError", "DefaultSmtp", "Settings", "load_settings")

StructT = typing.TypeVar("StructT", bound=msgspec.Struct)

PREFIX = "SMTPSETTINGS_"
DEFAULT_SMTP_PREFIX = "SMTPSETTINGS_DEFAULT_SMTP_"


class ConfigError(Exception):
    """The configuration cannot be used; the message names where the bad value came from and what was expected."""


# Value rules live in the field types (msgspec.Meta), so the loader checks every source the same way and a
# value that makes no sense (a zero timeout, a token that expires at once) stops the start.
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Count = Annotated[int, msgspec.Meta(ge=1)]
"""A limit, size or duration in whole units: 0 or less would refuse everything or expire at once."""
Seconds = Annotated[float, msgspec.Meta(gt=0)]


class DefaultSmtp(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Server-wide SMTP settings that a portal without its own inherits."""

    host: str = ""
    port: Port = 25
    sender_address: str = ""
    sender_display_name: str = ""
    username: str = ""
    password: str = msgspec.field(default="")
    enable_ssl: bool = False
    enable_auth: bool = False
    use_ntlm: bool = False

    def __repr__(self) -> str:  # the password must never reach a log line or traceback
        return f"DefaultSmtp(host={self.host!r}, port={self.port}, username={self.username!r}, password='***')"

    def __rich_repr__(self) -> Iterator[tuple[str, object]]:  # rich builds its own repr from the fields
        yield "host", self.host
        yield "port", self.port
        yield "username", self.username
        yield "password", "***"


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Typed configuration of one server process."""

    data_dir: Path = Path("smtpsettings-data")
    """Directory for the SQLite database and the encryption key ring (created 0700)."""
    database_url: str = ""
    """SQLAlchemy URL (``sqlite:///PATH`` or ``postgresql://…``); empty means SQLite in the data directory."""
    database_timeout: Seconds = 5.0
    """Seconds a database operation may take (connect, wait for a pooled connection, run) before a 503."""
    database_pool_size: Count = 10
    """PostgreSQL connections per worker process."""
    sqlite_synchronous: Literal["full", "normal"] = "full"
    """SQLite's ``PRAGMA synchronous``: ``full`` syncs the log at every commit, so an acknowledged save
    survives a power failure; ``normal`` skips that sync (faster writes; the last commits may be lost)."""
    host: str = "127.0.0.1"
    port: Port = 8080
    workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    http_header_timeout: Annotated[float, msgspec.Meta(ge=0.5, le=3600)] = 10.0
    """Seconds a connection may take to send a complete request head, counted from the connect or from the end
    of the previous answer: idle, slow-header and idle keep-alive connections are closed after it. A request
    body gets as long again from its first read, then the request is answered 408."""
    http_max_connections: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 10_000
    """Connections the server holds open at once, split evenly across workers; more wait in the listen queue."""
    log_format: Literal["json", "console"] = "json"
    """``json`` (one JSON object a line) or ``console``."""
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    token_lifetime_hours: Count = 24 * 14
    max_body_bytes: Count = 64 * 1024
    trusted_proxies: tuple[str, ...] = ()
    """Peers (IPs or CIDRs) whose ``X-Forwarded-For`` is believed for the client address, and whose
    ``X-Forwarded-Proto`` / ``Forwarded: proto=`` for the scheme (the cookie's Secure, links)."""
    login_max_failures_per_account: Count = 5
    """Failed HTTP sign-ins to one account per window before 429."""
    login_max_failures_per_address: Count = 20
    """Failed HTTP sign-ins from one client address (IPv6: its /64) per window before 429."""
    login_failure_window_seconds: Count = 15 * 60
    """The window of every failed-sign-in limit, HTTP and SMTP."""
    submission_max_failures_per_address: Count = 20
    """Failed SMTP AUTH attempts from one client address (IPv6: its /64) per window before 454."""
    submission_max_failures_per_key: Count = 5
    """Failed SMTP AUTH attempts with one API key's id (a stale or mistyped key) per window before 454."""
    owner_email: str = ""
    """Email of the owner made on the first start; empty: asked for in a terminal, else a placeholder."""
    default_smtp: DefaultSmtp = msgspec.field(default_factory=DefaultSmtp)
    smtp_ca_file: str = ""
    smtp_allow_plaintext_auth: bool = False
    smtp_helo_name: str = ""
    smtp_connect_timeout: Seconds = 10.0
    smtp_command_timeout: Seconds = 30.0
    smtp_job_timeout: Seconds = 60.0
    smtp_deny_networks: tuple[str, ...] = ("169.254.0.0/16", "fe80::/10")
    smtp_test_limit: Count = 5
    smtp_test_window_seconds: Count = 15 * 60
    outbox_max_message_bytes: Count = 10 * 1024 * 1024
    """Largest message ``POST /smtpsettings/messages`` accepts (the JSON body and the built message); 413 above."""
    outbox_max_queued_messages: Count = 10_000
    """Unsent (queued, deferred or sending) messages one portal may have; more are refused (429, SMTP 452)."""
    outbox_max_queued_bytes: Count = 1024 * 1024 * 1024
    """Bytes of unsent messages one portal may have; a message that would pass it is refused (429, SMTP 452)."""
    outbox_retry_horizon_seconds: Count = 24 * 3600
    """How long a message that meets temporary failures is retried, counted from its acceptance, before it fails."""
    outbox_first_retry_seconds: Seconds = 30.0
    """Wait after a message's first temporary failure; each further one waits twice as long, at most an hour."""
    outbox_connections_per_portal: Count = 2
    """SMTP connections one instance opens at once for one portal's mail."""
    outbox_connections_per_host: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 20
    """Most SMTP connections one instance opens at once to one mail server (host and port), all portals together;
    the limit starts at 5 (or this, if lower), rises as connections open and falls when the server refuses them."""
    outbox_messages_per_minute: Count = 600
    """Messages a portal may send a minute, across all instances; more wait for the next minute."""
    outbox_sent_retention_days: Count = 7
    """Days a sent (or partly sent) message's body is kept (its row stays)."""
    outbox_failed_retention_days: Count = 30
    """Days a failed or cancelled message's body is kept."""
    outbox_row_retention_days: Count = 90
    """Days a message's row (status, To, Cc, subject, outcomes) is kept after it ended; then it is deleted."""
    outbox_batch_size: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100
    """Messages the dispatcher claims in one statement."""
    outbox_peer_timeout_seconds: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 10.0
    """Seconds an instance's dispatcher may go without a heartbeat (one every third of this) before the other
    instances on the PostgreSQL database take it for dead and send the messages it was sending."""
    submission_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    """SMTP submission port for applications (STARTTLS when a certificate is set); 0: none."""
    submission_tls_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    """Submission port with implicit TLS (RFC 8314, usually 465); 0: none. Needs the certificate."""
    submission_host: str = ""
    """Address the submission ports listen on; empty: the HTTP server's host."""
    submission_tls_cert: str = ""
    """PEM certificate chain of the submission ports (STARTTLS and implicit TLS)."""
    submission_tls_key: str = ""
    """PEM private key of that certificate."""
    submission_plaintext_auth_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    """Clients that may sign in before TLS (their traffic never leaves the machine); others must use TLS first."""
    submission_max_connections: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1000
    """Submission connections held open at once, split evenly across workers; more are answered 421 and closed."""
    submission_idle_timeout: Seconds = 300.0
    """Seconds a submission connection may wait between commands (a whole DATA transfer included) before it is
    closed; RFC 5321 asks servers for 5 minutes."""

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'smtpsettings.db').resolve()}"

    @property
    def key_file(self) -> Path:
        return self.data_dir / "keys.json"


_SECRETS = frozenset({"database_url", "default_smtp.password"})
"""Settings whose value an error never repeats (a database URL may carry a password)."""

_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}
_INTEGER = re.compile(r"[+-]?[0-9]+")


class _Invalid(Exception):
    """A value that does not fit its setting: what was expected, and the offending (part of the) value."""

    def __init__(self, expected: str, value: Any) -> None:
        super().__init__(expected)
        self.expected, self.value = expected, value


class _Origin:
    """Where a set of values came from, so an error names what the operator actually wrote."""

    def name(self, key: str) -> str:
        raise NotImplementedError

    def unknown(self, key: str) -> str:
        raise NotImplementedError


class _Environment(_Origin):
    def name(self, key: str) -> str:
        return PREFIX + key.replace(".", "_").upper()

    def unknown(self, key: str) -> str:
        return f"unknown setting {self.name(key)}"


class _File(_Origin):
    def __init__(self, path: Path) -> None:
        self.path = path

    def name(self, key: str) -> str:
        return f"config file {self.path}: {key}"

    def unknown(self, key: str) -> str:
        return f"config file {self.path}: unknown setting {key!r}"


class _Options(_Origin):
    def name(self, key: str) -> str:
        return "--" + key.replace("_", "-")

    def unknown(self, key: str) -> str:
        return f"unknown option {self.name(key)}"


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from the config file, the environment and explicit overrides (which win, in that order).

    Each source is checked on its own, so an error names the file and key, the variable, or the option
    that holds the bad value, and says what is expected.

    Raises:
        ConfigError: an unknown setting, or a value of the wrong type or out of range.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    config_file = environ.get(PREFIX + "CONFIG_FILE")
    if config_file:
        path = Path(config_file)
        _merge(values, _typed(Settings, _read_file(path), _File(path)))
    _merge(values, _typed(Settings, _environment_values(environ), _Environment()))
    _merge(values, _typed(Settings, {k: v for k, v in overrides.items() if v is not None}, _Options()))
    return _build(Settings, values)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def _environment_values(environ: Mapping[str, str]) -> dict[str, Any]:
    """The ``SMTPSETTINGS_*`` variables as keys of the file's shape (``default_smtp`` a table of its own)."""
    values: dict[str, Any] = {}
    default_smtp: dict[str, Any] = {}
    for name, value in environ.items():
        if name.startswith(DEFAULT_SMTP_PREFIX):
            default_smtp[name[len(DEFAULT_SMTP_PREFIX) :].lower()] = value
        elif name == DEFAULT_SMTP_PREFIX.rstrip("_"):
            raise ConfigError(f"unknown setting {name} (the server default is {DEFAULT_SMTP_PREFIX}HOST, _PORT, …)")
        elif name.startswith(PREFIX) and name != PREFIX + "CONFIG_FILE":
            values[name[len(PREFIX) :].lower()] = value
    if default_smtp:
        values["default_smtp"] = default_smtp
    return values


def _typed(cls: type[msgspec.Struct], raw: Mapping[str, Any], origin: _Origin, prefix: str = "") -> dict[str, Any]:
    """Check ``raw`` against the fields of ``cls`` and convert each value to its field's type."""
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    fields = {f.name: f.type for f in info.fields}
    hints = typing.get_type_hints(cls, include_extras=True)
    typed: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = prefix + key
        field_type = fields.get(key)
        if field_type is None:
            raise ConfigError(origin.unknown(dotted))
        if isinstance(field_type, msgspec.inspect.StructType):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{origin.name(dotted)}: expected a table of settings ([{dotted}])")
            typed[key] = _typed(field_type.cls, value, origin, f"{dotted}.")
            continue
        try:
            typed[key] = _convert(value, field_type, hints[key])
            check = _CHECKS.get(dotted)
            if check is not None:
                check(typed[key])
        except _Invalid as exc:
            got = "" if dotted in _SECRETS else f", got {exc.value!r}"
            raise ConfigError(f"{origin.name(dotted)}: expected {exc.expected}{got}") from None
    return typed


def _convert(value: Any, info: msgspec.inspect.Type, hint: Any) -> Any:
    """``value`` as the type ``info`` describes; strings (all an environment holds) are parsed."""
    mi = msgspec.inspect
    if isinstance(info, mi.BoolType):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOLEANS:
            return _BOOLEANS[value.strip().lower()]
        raise _Invalid("true or false", value)
    if isinstance(info, mi.IntType):
        number = int(value) if isinstance(value, str) and _INTEGER.fullmatch(value.strip()) else value
        if isinstance(number, bool) or not isinstance(number, int) or not _in_bounds(number, info):
            raise _Invalid(_describe("an integer", info), value)
        return number
    if isinstance(info, mi.FloatType):
        number = value
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                number = float(value)
        is_number = isinstance(number, int | float) and not isinstance(number, bool) and math.isfinite(number)
        if not is_number or not _in_bounds(number, info):
            raise _Invalid(_describe("a number", info), value)
        return float(number)
    if isinstance(info, mi.StrType):
        if not isinstance(value, str):
            raise _Invalid("a string", value)
        return value
    if isinstance(info, mi.CustomType) and info.cls is Path:
        if not isinstance(value, str) or not value:
            raise _Invalid("a path", value)
        return Path(value)
    if isinstance(info, mi.LiteralType):
        if isinstance(value, str) and value.strip().lower() in info.values:
            return value.strip().lower()
        raise _Invalid("one of " + ", ".join(repr(v) for v in info.values), value)
    if isinstance(info, mi.VarTupleType):
        # A comma-separated string (all an environment variable can hold) or a TOML array.
        if isinstance(value, str):
            return tuple(_convert(item.strip(), info.item_type, str) for item in value.split(",") if item.strip())
        if isinstance(value, list | tuple):
            return tuple(_convert(item, info.item_type, str) for item in value)
        raise _Invalid("a list (comma-separated in a variable)", value)
    try:  # any other field type: msgspec's own conversion
        return msgspec.convert(value, hint, strict=False)
    except msgspec.ValidationError as exc:
        raise _Invalid(str(exc).split(" - at ")[0].lower().removeprefix("expected "), value) from None


def _in_bounds(number: float, info: msgspec.inspect.IntType | msgspec.inspect.FloatType) -> bool:
    return not (
        (info.ge is not None and number < info.ge)
        or (info.gt is not None and number <= info.gt)
        or (info.le is not None and number > info.le)
        or (info.lt is not None and number >= info.lt)
    )


def _describe(kind: str, info: msgspec.inspect.IntType | msgspec.inspect.FloatType) -> str:
    if info.ge is not None and info.le is not None:
        return f"{kind} from {info.ge} to {info.le}"
    bounds = [
        f"of {info.ge} or more" if info.ge is not None else "",
        f"greater than {info.gt}" if info.gt is not None else "",
        f"{info.le} or less" if info.le is not None else "",
        f"less than {info.lt}" if info.lt is not None else "",
    ]
    return " ".join([kind, " and ".join(b for b in bounds if b)]).strip()


def _database_url(url: str) -> None:
    if not url:
        return  # SQLite in the data directory
    import sqlalchemy as sa  # here: a command's --help must not pay for importing it

    try:
        backend = sa.make_url(url).get_backend_name()
    except sa.exc.ArgumentError:
        raise _Invalid("a database URL (sqlite:///PATH or postgresql://…)", None) from None
    if backend not in ("sqlite", "postgresql", "postgres"):
        raise _Invalid(f"a sqlite:/// or postgresql:// URL, not {backend!r}", None)


def _email(value: str) -> None:
    # The rules of `user create --email`: an address the owner's test mail can be sent to.
    if value and not valid_email(normalize_email(value)):
        raise _Invalid("an email address (name@example.com)", value)


def _networks(items: tuple[str, ...]) -> None:
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise _Invalid("IP addresses or networks (CIDR)", item) from None


_CHECKS: dict[str, Callable[[Any], None]] = {
    "database_url": _database_url,
    "owner_email": _email,
    "trusted_proxies": _networks,
    "smtp_deny_networks": _networks,
    "submission_plaintext_auth_networks": _networks,
}
"""Rules beyond the field's type, by dotted key."""


def _merge(into: dict[str, Any], values: dict[str, Any]) -> None:
    """A later source's values over an earlier one's; tables (``default_smtp``) key by key."""
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            into[key] = {**into[key], **value}
        else:
            into[key] = value


def _build(cls: type[StructT], values: dict[str, Any]) -> StructT:
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    nested = {f.name: f.type.cls for f in info.fields if isinstance(f.type, msgspec.inspect.StructType)}
    return cls(**{k: _build(nested[k], v) if k in nested else v for k, v in values.items()})
