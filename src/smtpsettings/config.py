"""Settings read once at start-up from the environment and an optional TOML file.

Every variable is named ``SMTPSETTINGS_<FIELD>`` (upper case); a config file, named by
``SMTPSETTINGS_CONFIG_FILE``, holds the same fields in lower case without the prefix. The environment
wins over the file, the file over the defaults. Nothing deeper in the code reads ``os.environ``:
the :class:`Settings` object is built here and passed down.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec
import sqlalchemy as sa

__all__ = ("ConfigError", "DefaultSmtp", "Settings", "load_settings")

PREFIX = "SMTPSETTINGS_"
DEFAULT_SMTP_PREFIX = "SMTPSETTINGS_DEFAULT_SMTP_"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the offending variable."""


class DefaultSmtp(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Server-wide SMTP settings that a portal without its own inherits."""

    host: str = ""
    port: int = 25
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
    database_timeout: float = 5.0
    """Seconds a database operation may take (connect, wait for a pooled connection, run) before a 503."""
    database_pool_size: int = 10
    """PostgreSQL connections per worker process."""
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    log_format: str = "json"
    """``json`` (one JSON object a line) or ``console``."""
    log_level: str = "info"
    token_lifetime_hours: int = 24 * 14
    max_body_bytes: int = 64 * 1024
    trusted_proxies: tuple[str, ...] = ()
    """Peers (IPs or CIDRs) whose ``X-Forwarded-For`` is believed for the client address."""
    login_max_failures_per_account: int = 5
    login_max_failures_per_address: int = 20
    login_failure_window_seconds: int = 15 * 60
    owner_email: str = "owner@localhost"
    """Email of the owner account created on the first start."""
    default_smtp: DefaultSmtp = msgspec.field(default_factory=DefaultSmtp)
    smtp_ca_file: str = ""
    smtp_allow_plaintext_auth: bool = False
    smtp_helo_name: str = ""
    smtp_connect_timeout: float = 10.0
    smtp_command_timeout: float = 30.0
    smtp_job_timeout: float = 60.0
    smtp_deny_networks: tuple[str, ...] = ("169.254.0.0/16", "fe80::/10")
    smtp_test_limit: int = 5
    smtp_test_window_seconds: int = 15 * 60

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'smtpsettings.db').resolve()}"

    @property
    def key_file(self) -> Path:
        return self.data_dir / "keys.json"


_TUPLE_FIELDS = {"trusted_proxies", "smtp_deny_networks"}


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    default_smtp: dict[str, Any] = {}
    for name, value in environ.items():
        if name.startswith(DEFAULT_SMTP_PREFIX):
            default_smtp[name[len(DEFAULT_SMTP_PREFIX) :].lower()] = value
        elif name.startswith(PREFIX) and name != PREFIX + "CONFIG_FILE":
            key = name[len(PREFIX) :].lower()
            values[key] = [v.strip() for v in value.split(",") if v.strip()] if key in _TUPLE_FIELDS else value
    if default_smtp:
        values["default_smtp"] = default_smtp
    return values


def _from_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from the environment, the config file and explicit overrides.

    Raises:
        ConfigError: a value has the wrong type or an unknown name, with the variable named.
    """
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    config_file = environ.get(PREFIX + "CONFIG_FILE")
    if config_file:
        merged.update(_from_file(Path(config_file)))
    env_values = _from_env(environ)
    file_smtp = merged.get("default_smtp", {})
    merged.update(env_values)
    if isinstance(env_values.get("default_smtp"), dict) and isinstance(file_smtp, dict):
        merged["default_smtp"] = {**file_smtp, **env_values["default_smtp"]}
    merged.update({k: v for k, v in overrides.items() if v is not None})
    try:
        settings = msgspec.convert(merged, Settings, strict=False, dec_hook=_decode_path)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {_name_variable(str(exc))}") from None
    _check(settings)
    return settings


def _decode_path(type_: type, obj: Any) -> Any:
    if type_ is Path and isinstance(obj, str):
        return Path(obj)
    raise NotImplementedError


def _name_variable(message: str) -> str:
    if message.startswith("Object contains unknown field `"):
        field = message.split("`")[1].upper()
        where = message.rpartition("`$.")[2].rstrip("`").upper()
        prefix = f"SMTPSETTINGS_{where}_" if "`$." in message else PREFIX
        return f"unknown setting {prefix}{field}"
    # msgspec says "... - at `$.default_smtp.port`"; operators know the variable, not the path.
    if "`$." in message:
        head, _, path = message.rpartition("`$.")
        name = path.rstrip("`").split("[")[0].replace(".", "_").upper()
        return f"{head.removesuffix(' - at ').strip()} (SMTPSETTINGS_{name})"
    return message


def _check(settings: Settings) -> None:
    if settings.log_format not in {"json", "console"}:
        raise ConfigError("SMTPSETTINGS_LOG_FORMAT must be 'json' or 'console'")
    if not 1 <= settings.port <= 65535:
        raise ConfigError("SMTPSETTINGS_PORT must be between 1 and 65535")
    if not 1 <= settings.workers <= 64:
        raise ConfigError("SMTPSETTINGS_WORKERS must be between 1 and 64")
    if settings.database_url:
        try:
            backend = sa.make_url(settings.database_url).get_backend_name()
        except sa.exc.ArgumentError:
            raise ConfigError("SMTPSETTINGS_DATABASE_URL is not a database URL (sqlite:///PATH or postgresql://…)") from None
        if backend not in ("sqlite", "postgresql", "postgres"):
            raise ConfigError(f"SMTPSETTINGS_DATABASE_URL: unsupported database {backend!r}; use sqlite or postgresql")
    if not 1 <= settings.default_smtp.port <= 65535:
        raise ConfigError("SMTPSETTINGS_DEFAULT_SMTP_PORT must be between 1 and 65535")
    for name, items in (("TRUSTED_PROXIES", settings.trusted_proxies), ("SMTP_DENY_NETWORKS", settings.smtp_deny_networks)):
        for item in items:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ConfigError(f"SMTPSETTINGS_{name}: {item!r} is not an IP network") from None
