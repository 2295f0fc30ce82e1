"""Unit tests of load_settings: defaults, environment variables, the TOML file, and their errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from smtpsettings.config import ConfigError, DefaultSmtp, Settings, load_settings

SECRET = "default-secret-Zq9!"


def write_config(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "smtpsettings.toml"
    path.write_text(text)
    return {"SMTPSETTINGS_CONFIG_FILE": str(path)}


# --- defaults --------------------------------------------------------------------------------------


def test_an_empty_environment_gives_the_defaults() -> None:
    settings = load_settings({})
    assert settings == Settings()
    assert settings.data_dir == Path("smtpsettings-data")
    assert settings.database_url == ""
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8080, 1)
    assert (settings.log_format, settings.log_level) == ("json", "info")
    assert settings.token_lifetime_hours == 24 * 14
    assert settings.max_body_bytes == 64 * 1024
    assert settings.trusted_proxies == ()
    assert settings.smtp_deny_networks == ("169.254.0.0/16", "fe80::/10")
    assert (settings.smtp_test_limit, settings.smtp_test_window_seconds) == (5, 900)
    assert settings.owner_email == ""  # none: a first start in a terminal asks
    assert (settings.submission_max_failures_per_address, settings.submission_max_failures_per_key) == (20, 5)
    assert settings.outbox_connections_per_host == 20  # Postfix's destination concurrency limit, below its client limit of 50


def test_the_default_smtp_settings_default_to_empty_port_25_and_everything_off() -> None:
    assert load_settings({}).default_smtp == DefaultSmtp(
        host="", port=25, sender_address="", sender_display_name="", username="", password="",
        enable_ssl=False, enable_auth=False, use_ntlm=False,
    )


def test_variables_without_the_prefix_are_ignored() -> None:
    assert load_settings({"PATH": "/usr/bin", "HOME": "/root", "SMTPSETTINGSX": "1"}) == Settings()


def test_the_default_database_is_sqlite_in_the_data_directory(tmp_path: Path) -> None:
    settings = load_settings({"SMTPSETTINGS_DATA_DIR": str(tmp_path / "data")})
    assert settings.resolved_database_url == f"sqlite:///{(tmp_path / 'data' / 'smtpsettings.db').resolve()}"
    assert settings.key_file == tmp_path / "data" / "keys.json"


def test_a_relative_data_directory_resolves_to_an_absolute_sqlite_path() -> None:
    url = load_settings({}).resolved_database_url
    assert url.startswith("sqlite:////") and url.endswith("/smtpsettings-data/smtpsettings.db")


def test_an_explicit_database_url_is_used_as_is() -> None:
    settings = load_settings({"SMTPSETTINGS_DATABASE_URL": "sqlite:////srv/db.sqlite"})
    assert settings.resolved_database_url == "sqlite:////srv/db.sqlite"


# --- each variable ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "attribute", "expected"),
    [
        ("SMTPSETTINGS_DATA_DIR", "/var/lib/smtpsettings", "data_dir", Path("/var/lib/smtpsettings")),
        ("SMTPSETTINGS_DATABASE_URL", "sqlite:////tmp/x.db", "database_url", "sqlite:////tmp/x.db"),
        ("SMTPSETTINGS_HOST", "0.0.0.0", "host", "0.0.0.0"),
        ("SMTPSETTINGS_PORT", "9090", "port", 9090),
        ("SMTPSETTINGS_WORKERS", "4", "workers", 4),
        ("SMTPSETTINGS_LOG_FORMAT", "console", "log_format", "console"),
        ("SMTPSETTINGS_LOG_LEVEL", "debug", "log_level", "debug"),
        ("SMTPSETTINGS_TOKEN_LIFETIME_HOURS", "12", "token_lifetime_hours", 12),
        ("SMTPSETTINGS_MAX_BODY_BYTES", "1024", "max_body_bytes", 1024),
        ("SMTPSETTINGS_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.1 ,", "trusted_proxies", ("10.0.0.0/8", "192.168.1.1")),
        ("SMTPSETTINGS_TRUSTED_PROXIES", "", "trusted_proxies", ()),
        ("SMTPSETTINGS_LOGIN_MAX_FAILURES_PER_ACCOUNT", "3", "login_max_failures_per_account", 3),
        ("SMTPSETTINGS_LOGIN_MAX_FAILURES_PER_ADDRESS", "100000", "login_max_failures_per_address", 100000),
        ("SMTPSETTINGS_LOGIN_FAILURE_WINDOW_SECONDS", "60", "login_failure_window_seconds", 60),
        ("SMTPSETTINGS_OWNER_EMAIL", "boss@example.com", "owner_email", "boss@example.com"),
        ("SMTPSETTINGS_OWNER_EMAIL", " Boss@Example.com ", "owner_email", " Boss@Example.com "),  # normalised when used
        ("SMTPSETTINGS_SUBMISSION_MAX_FAILURES_PER_ADDRESS", "7", "submission_max_failures_per_address", 7),
        ("SMTPSETTINGS_SUBMISSION_MAX_FAILURES_PER_KEY", "2", "submission_max_failures_per_key", 2),
        ("SMTPSETTINGS_SMTP_CA_FILE", "/etc/ssl/ca.pem", "smtp_ca_file", "/etc/ssl/ca.pem"),
        ("SMTPSETTINGS_SMTP_ALLOW_PLAINTEXT_AUTH", "true", "smtp_allow_plaintext_auth", True),
        ("SMTPSETTINGS_SMTP_ALLOW_PLAINTEXT_AUTH", "false", "smtp_allow_plaintext_auth", False),
        ("SMTPSETTINGS_SMTP_HELO_NAME", "mx.example.com", "smtp_helo_name", "mx.example.com"),
        ("SMTPSETTINGS_SMTP_CONNECT_TIMEOUT", "2.5", "smtp_connect_timeout", 2.5),
        ("SMTPSETTINGS_SMTP_COMMAND_TIMEOUT", "5", "smtp_command_timeout", 5.0),
        ("SMTPSETTINGS_SMTP_JOB_TIMEOUT", "90.0", "smtp_job_timeout", 90.0),
        ("SMTPSETTINGS_OUTBOX_PEER_TIMEOUT_SECONDS", "2.5", "outbox_peer_timeout_seconds", 2.5),
        ("SMTPSETTINGS_SMTP_DENY_NETWORKS", "10.0.0.0/8,::1", "smtp_deny_networks", ("10.0.0.0/8", "::1")),
        ("SMTPSETTINGS_SMTP_DENY_NETWORKS", "", "smtp_deny_networks", ()),
        ("SMTPSETTINGS_SMTP_TEST_LIMIT", "7", "smtp_test_limit", 7),
        ("SMTPSETTINGS_SMTP_TEST_WINDOW_SECONDS", "30", "smtp_test_window_seconds", 30),
        ("SMTPSETTINGS_OUTBOX_CONNECTIONS_PER_HOST", "50", "outbox_connections_per_host", 50),
    ],
)
def test_each_variable_is_parsed_to_its_type(variable: str, value: str, attribute: str, expected: Any) -> None:
    got = getattr(load_settings({variable: value}), attribute)
    assert got == expected
    assert type(got) is type(expected)


@pytest.mark.parametrize(
    ("suffix", "value", "attribute", "expected"),
    [
        ("HOST", "mail.default.test", "host", "mail.default.test"),
        ("PORT", "2525", "port", 2525),
        ("SENDER_ADDRESS", "portal@default.test", "sender_address", "portal@default.test"),
        ("SENDER_DISPLAY_NAME", "Default Sender", "sender_display_name", "Default Sender"),
        ("USERNAME", "default-user", "username", "default-user"),
        ("PASSWORD", SECRET, "password", SECRET),
        ("ENABLE_SSL", "true", "enable_ssl", True),
        ("ENABLE_SSL", "false", "enable_ssl", False),
        ("ENABLE_AUTH", "true", "enable_auth", True),
        ("ENABLE_AUTH", "false", "enable_auth", False),
        ("USE_NTLM", "true", "use_ntlm", True),
        ("USE_NTLM", "false", "use_ntlm", False),
    ],
)
def test_each_default_smtp_variable_is_parsed_to_its_type(suffix: str, value: str, attribute: str, expected: Any) -> None:
    got = getattr(load_settings({f"SMTPSETTINGS_DEFAULT_SMTP_{suffix}": value}).default_smtp, attribute)
    assert got == expected
    assert type(got) is type(expected)


def test_the_whole_default_smtp_family_is_read_together() -> None:
    env = {
        "SMTPSETTINGS_DEFAULT_SMTP_HOST": "mail.default.test",
        "SMTPSETTINGS_DEFAULT_SMTP_PORT": "2525",
        "SMTPSETTINGS_DEFAULT_SMTP_SENDER_ADDRESS": "portal@default.test",
        "SMTPSETTINGS_DEFAULT_SMTP_SENDER_DISPLAY_NAME": "Default Sender",
        "SMTPSETTINGS_DEFAULT_SMTP_USERNAME": "default-user",
        "SMTPSETTINGS_DEFAULT_SMTP_PASSWORD": SECRET,
        "SMTPSETTINGS_DEFAULT_SMTP_ENABLE_SSL": "true",
        "SMTPSETTINGS_DEFAULT_SMTP_ENABLE_AUTH": "true",
        "SMTPSETTINGS_DEFAULT_SMTP_USE_NTLM": "false",
    }
    assert load_settings(env).default_smtp == DefaultSmtp(
        host="mail.default.test", port=2525, sender_address="portal@default.test",
        sender_display_name="Default Sender", username="default-user", password=SECRET,
        enable_ssl=True, enable_auth=True, use_ntlm=False,
    )


def test_explicit_overrides_win_over_the_environment_and_none_is_no_override() -> None:
    settings = load_settings({"SMTPSETTINGS_PORT": "9000", "SMTPSETTINGS_HOST": "0.0.0.0"}, port=9001, host=None)
    assert (settings.port, settings.host) == (9001, "0.0.0.0")


# --- the config file -------------------------------------------------------------------------------


def test_the_config_file_is_read(tmp_path: Path) -> None:
    env = write_config(
        tmp_path,
        """
port = 9100
log_format = "console"
trusted_proxies = ["10.0.0.1"]
smtp_connect_timeout = 3

[default_smtp]
host = "file.example.com"
port = 465
username = "file-user"
password = "file-secret"
enable_ssl = true
enable_auth = true
""",
    )
    settings = load_settings(env)
    assert (settings.port, settings.log_format, settings.trusted_proxies) == (9100, "console", ("10.0.0.1",))
    assert settings.smtp_connect_timeout == 3.0
    assert settings.default_smtp == DefaultSmtp(
        host="file.example.com", port=465, username="file-user", password="file-secret", enable_ssl=True, enable_auth=True
    )


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    env = write_config(tmp_path, 'port = 9100\nhost = "10.1.1.1"\n')
    settings = load_settings({**env, "SMTPSETTINGS_PORT": "9200"})
    assert settings.port == 9200
    assert settings.host == "10.1.1.1"


def test_default_smtp_from_the_environment_is_merged_key_by_key_over_the_file(tmp_path: Path) -> None:
    env = write_config(
        tmp_path,
        '[default_smtp]\nhost = "file.example.com"\nport = 465\nusername = "file-user"\nenable_auth = true\n',
    )
    settings = load_settings({**env, "SMTPSETTINGS_DEFAULT_SMTP_PORT": "2525", "SMTPSETTINGS_DEFAULT_SMTP_PASSWORD": SECRET})
    assert settings.default_smtp == DefaultSmtp(
        host="file.example.com", port=2525, username="file-user", password=SECRET, enable_auth=True
    )


def test_a_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings({"SMTPSETTINGS_CONFIG_FILE": str(tmp_path / "absent.toml")})


def test_a_config_file_that_is_not_toml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write_config(tmp_path, "port = = 1\n"))


def test_an_unknown_key_in_the_file_names_the_file_and_the_key_not_a_variable(tmp_path: Path) -> None:
    env = write_config(tmp_path, "prot = 1\n")
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert str(info.value) == f"config file {env['SMTPSETTINGS_CONFIG_FILE']}: unknown setting 'prot'"


def test_an_unknown_key_in_the_default_smtp_table_names_the_file_and_the_table(tmp_path: Path) -> None:
    env = write_config(tmp_path, "[default_smtp]\nbogus = 1\n")
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert str(info.value) == f"config file {env['SMTPSETTINGS_CONFIG_FILE']}: unknown setting 'default_smtp.bogus'"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('port = "many"\n', "port: expected an integer from 1 to 65535, got 'many'"),
        ("port = 0\n", "port: expected an integer from 1 to 65535, got 0"),
        ("workers = 1.5\n", "workers: expected an integer from 1 to 64, got 1.5"),
        ("token_lifetime_hours = 0\n", "token_lifetime_hours: expected an integer of 1 or more, got 0"),
        ("smtp_job_timeout = -1\n", "smtp_job_timeout: expected a number greater than 0, got -1"),
        ('log_format = "xml"\n', "log_format: expected one of 'console', 'json', got 'xml'"),
        ("smtp_allow_plaintext_auth = 1.0\n", "smtp_allow_plaintext_auth: expected true or false, got 1.0"),
        ('trusted_proxies = ["10.0.0.1", "nowhere"]\n', "trusted_proxies: expected IP addresses or networks (CIDR), got 'nowhere'"),
        ("host = 5\n", "host: expected a string, got 5"),
        ('[default_smtp]\nport = "many"\n', "default_smtp.port: expected an integer from 1 to 65535, got 'many'"),
        ('[default_smtp]\nenable_ssl = "yes"\n', "default_smtp.enable_ssl: expected true or false, got 'yes'"),
        ('default_smtp = "mail.example.com"\n', "default_smtp: expected a table of settings ([default_smtp])"),
    ],
)
def test_a_bad_file_value_names_the_file_and_the_key_and_what_is_expected(tmp_path: Path, text: str, message: str) -> None:
    env = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert str(info.value) == f"config file {env['SMTPSETTINGS_CONFIG_FILE']}: {message}"
    assert "SMTPSETTINGS_" not in message


def test_a_bad_variable_is_named_even_when_a_config_file_is_read_too(tmp_path: Path) -> None:
    env = write_config(tmp_path, "port = 9100\n")
    with pytest.raises(ConfigError) as info:
        load_settings({**env, "SMTPSETTINGS_PORT": "abc"})
    assert str(info.value) == "SMTPSETTINGS_PORT: expected an integer from 1 to 65535, got 'abc'"


def test_a_file_value_given_as_a_string_is_still_parsed(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, 'port = "9100"\nsmtp_allow_plaintext_auth = "true"\n'))
    assert (settings.port, settings.smtp_allow_plaintext_auth) == (9100, True)


# --- bad values ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SMTPSETTINGS_PORT", "http"),
        ("SMTPSETTINGS_PORT", "0"),
        ("SMTPSETTINGS_PORT", "65536"),
        ("SMTPSETTINGS_WORKERS", "many"),
        ("SMTPSETTINGS_LOG_FORMAT", "xml"),
        ("SMTPSETTINGS_TOKEN_LIFETIME_HOURS", "1.5"),
        ("SMTPSETTINGS_SMTP_CONNECT_TIMEOUT", "soon"),
        ("SMTPSETTINGS_SMTP_ALLOW_PLAINTEXT_AUTH", "yes"),
        ("SMTPSETTINGS_SMTP_ALLOW_PLAINTEXT_AUTH", "maybe"),
        ("SMTPSETTINGS_TRUSTED_PROXIES", "10.0.0.0/8,not-a-network"),
        ("SMTPSETTINGS_SMTP_DENY_NETWORKS", "300.1.1.1"),
        ("SMTPSETTINGS_DEFAULT_SMTP_PORT", "smtp"),
        ("SMTPSETTINGS_DEFAULT_SMTP_PORT", "0"),
        ("SMTPSETTINGS_DEFAULT_SMTP_PORT", "65536"),
        ("SMTPSETTINGS_DEFAULT_SMTP_ENABLE_SSL", "yes"),
        ("SMTPSETTINGS_DEFAULT_SMTP_ENABLE_AUTH", "on"),
        ("SMTPSETTINGS_DEFAULT_SMTP_USE_NTLM", "enabled"),
    ],
)
def test_a_bad_value_is_a_config_error_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({variable: value})
    assert variable in str(info.value)


@pytest.mark.parametrize("variable", ["SMTPSETTINGS_BOGUS", "SMTPSETTINGS_SMTP_PASSWORD", "SMTPSETTINGS_DEFAULT_SMTP_BOGUS", "SMTPSETTINGS_DEFAULT_SMTP_USER"])
def test_an_unknown_variable_is_a_config_error_naming_it(variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({variable: "1"})
    assert variable in str(info.value)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SMTPSETTINGS_PORT", "abc", "SMTPSETTINGS_PORT: expected an integer from 1 to 65535, got 'abc'"),
        ("SMTPSETTINGS_WORKERS", "many", "SMTPSETTINGS_WORKERS: expected an integer from 1 to 64, got 'many'"),
        ("SMTPSETTINGS_TOKEN_LIFETIME_HOURS", "1.5", "SMTPSETTINGS_TOKEN_LIFETIME_HOURS: expected an integer of 1 or more, got '1.5'"),
        ("SMTPSETTINGS_SMTP_CONNECT_TIMEOUT", "soon", "SMTPSETTINGS_SMTP_CONNECT_TIMEOUT: expected a number greater than 0, got 'soon'"),
        ("SMTPSETTINGS_SMTP_CONNECT_TIMEOUT", "nan", "SMTPSETTINGS_SMTP_CONNECT_TIMEOUT: expected a number greater than 0, got 'nan'"),
        # Below a second, a heartbeat late by a scheduling hiccup would have a live instance taken for dead.
        ("SMTPSETTINGS_OUTBOX_PEER_TIMEOUT_SECONDS", "0.5", "SMTPSETTINGS_OUTBOX_PEER_TIMEOUT_SECONDS: expected a number from 1 to 3600, got '0.5'"),
        ("SMTPSETTINGS_SMTP_ALLOW_PLAINTEXT_AUTH", "yes", "SMTPSETTINGS_SMTP_ALLOW_PLAINTEXT_AUTH: expected true or false, got 'yes'"),
        ("SMTPSETTINGS_LOG_LEVEL", "loud", "SMTPSETTINGS_LOG_LEVEL: expected one of 'critical', 'debug', 'error', 'info', 'warning', got 'loud'"),
        ("SMTPSETTINGS_DEFAULT_SMTP_PORT", "smtp", "SMTPSETTINGS_DEFAULT_SMTP_PORT: expected an integer from 1 to 65535, got 'smtp'"),
        ("SMTPSETTINGS_PROT", "1", "unknown setting SMTPSETTINGS_PROT"),
        ("SMTPSETTINGS_OWNER_EMAIL", "owner", "SMTPSETTINGS_OWNER_EMAIL: expected an email address (name@example.com), got 'owner'"),
        ("SMTPSETTINGS_OWNER_EMAIL", "a b@x.test", "SMTPSETTINGS_OWNER_EMAIL: expected an email address (name@example.com), got 'a b@x.test'"),
        ("SMTPSETTINGS_OWNER_EMAIL", "x@-bad-.test", "SMTPSETTINGS_OWNER_EMAIL: expected an email address (name@example.com), got 'x@-bad-.test'"),
    ],
)
def test_a_bad_variable_says_what_is_expected_in_one_line(variable: str, value: str, message: str) -> None:
    # msgspec alone said "Expected `int`, got `str`", although every variable is a string.
    with pytest.raises(ConfigError) as info:
        load_settings({variable: value})
    assert str(info.value) == message


# Every numeric setting that makes no sense at 0 or below (a token that expires at once, a zero timeout, a
# limit that refuses everything, an empty pool, a zero body size) stops the start instead.
POSITIVE_SETTINGS = [
    "TOKEN_LIFETIME_HOURS",
    "DATABASE_TIMEOUT",
    "DATABASE_POOL_SIZE",
    "MAX_BODY_BYTES",
    "LOGIN_MAX_FAILURES_PER_ACCOUNT",
    "LOGIN_MAX_FAILURES_PER_ADDRESS",
    "LOGIN_FAILURE_WINDOW_SECONDS",
    "SMTP_CONNECT_TIMEOUT",
    "SMTP_COMMAND_TIMEOUT",
    "SMTP_JOB_TIMEOUT",
    "SMTP_TEST_LIMIT",
    "SMTP_TEST_WINDOW_SECONDS",
    "OUTBOX_CONNECTIONS_PER_HOST",
    "WORKERS",
    "PORT",
    "DEFAULT_SMTP_PORT",
]


@pytest.mark.parametrize("value", ["0", "-1"])
@pytest.mark.parametrize("name", POSITIVE_SETTINGS)
def test_a_zero_or_negative_number_is_refused_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({f"SMTPSETTINGS_{name}": value})
    message = str(info.value)
    assert message.startswith(f"SMTPSETTINGS_{name}: expected ")
    assert message.endswith(f", got '{value}'")
    assert "\n" not in message


@pytest.mark.parametrize("name", POSITIVE_SETTINGS)
def test_a_zero_number_in_the_file_is_refused_naming_the_file_and_key(tmp_path: Path, name: str) -> None:
    key = name.lower().replace("default_smtp_", "")
    text = f"[default_smtp]\n{key} = 0\n" if name.startswith("DEFAULT_SMTP_") else f"{key} = 0\n"
    env = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    dotted = f"default_smtp.{key}" if name.startswith("DEFAULT_SMTP_") else key
    assert str(info.value).startswith(f"config file {env['SMTPSETTINGS_CONFIG_FILE']}: {dotted}: expected ")


@pytest.mark.parametrize("name", POSITIVE_SETTINGS)
def test_the_smallest_sensible_number_is_accepted(name: str) -> None:
    load_settings({f"SMTPSETTINGS_{name}": "1"})


def test_fractions_of_a_second_are_accepted_for_timeouts() -> None:
    assert load_settings({"SMTPSETTINGS_DATABASE_TIMEOUT": "0.25"}).database_timeout == 0.25


def test_an_explicit_override_is_checked_and_named_as_its_option() -> None:
    with pytest.raises(ConfigError, match=r"^--port: expected an integer from 1 to 65535, got 0$"):
        load_settings({}, port=0)


def test_a_bad_database_url_is_never_repeated_in_the_error() -> None:
    for url in ("mysql://app:pw-Zq9-secret@db/app", "not a url pw-Zq9-secret"):
        with pytest.raises(ConfigError) as info:
            load_settings({"SMTPSETTINGS_DATABASE_URL": url})
        assert "SMTPSETTINGS_DATABASE_URL" in str(info.value)
        assert "pw-Zq9-secret" not in str(info.value)


def test_a_wrongly_typed_default_smtp_password_in_the_file_is_not_repeated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write_config(tmp_path, "[default_smtp]\npassword = 918273645\n"))
    assert "default_smtp.password: expected a string" in str(info.value)
    assert "918273645" not in str(info.value)


# --- SQLite durability ------------------------------------------------------------------------------


def test_sqlite_synchronous_defaults_to_full() -> None:
    assert load_settings({}).sqlite_synchronous == "full"


@pytest.mark.parametrize(("value", "expected"), [("normal", "normal"), ("NORMAL", "normal"), ("full", "full")])
def test_sqlite_synchronous_may_be_relaxed_to_normal(value: str, expected: str) -> None:
    assert load_settings({"SMTPSETTINGS_SQLITE_SYNCHRONOUS": value}).sqlite_synchronous == expected


@pytest.mark.parametrize("value", ["off", "extra", "2", ""])
def test_sqlite_synchronous_refuses_other_values(value: str) -> None:
    with pytest.raises(ConfigError, match="SMTPSETTINGS_SQLITE_SYNCHRONOUS: expected one of 'full', 'normal'"):
        load_settings({"SMTPSETTINGS_SQLITE_SYNCHRONOUS": value})


def test_the_bare_default_smtp_variable_is_a_config_error_not_a_crash() -> None:
    # BUG: config.py merges env_values["default_smtp"] with ** although it is then a string -> TypeError.
    with pytest.raises(ConfigError) as info:
        load_settings({"SMTPSETTINGS_DEFAULT_SMTP": "smtp.example.com"})
    assert "SMTPSETTINGS_DEFAULT_SMTP" in str(info.value)


def test_a_bad_value_never_echoes_the_default_smtp_password() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"SMTPSETTINGS_DEFAULT_SMTP_PASSWORD": SECRET, "SMTPSETTINGS_DEFAULT_SMTP_PORT": "x"})
    assert SECRET not in str(info.value)


# --- the password stays out of representations ----------------------------------------------------


def secret_settings() -> Settings:
    return load_settings({"SMTPSETTINGS_DEFAULT_SMTP_PASSWORD": SECRET, "SMTPSETTINGS_DEFAULT_SMTP_USERNAME": "u"})


def test_the_default_smtp_password_is_not_in_the_repr_of_the_settings() -> None:
    settings = secret_settings()
    assert settings.default_smtp.password == SECRET
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)


def test_the_default_smtp_password_is_not_in_the_repr_of_the_default_smtp() -> None:
    default_smtp = secret_settings().default_smtp
    assert SECRET not in repr(default_smtp)
    assert SECRET not in str(default_smtp)
    assert SECRET not in f"{default_smtp!r} {default_smtp}"
    assert "password='***'" in repr(default_smtp)


def test_the_default_smtp_password_is_not_in_a_rich_pretty_print() -> None:
    # rich (a litestar dependency) prints msgspec structs through __rich_repr__, which msgspec derives
    # from the fields, not from __repr__: rich tracebacks with locals or pretty logs would show the password.
    pretty = pytest.importorskip("rich.pretty")
    assert SECRET not in pretty.pretty_repr(secret_settings())
