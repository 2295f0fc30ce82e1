"""Unit tests of the SMTP settings rules: parse_settings, decide_password and changed_fields."""

from __future__ import annotations

from typing import Any

import pytest

from serverkit import VALID_SETTINGS
from smtpsettings.domain.errors import BadArgument, ValidationFailed
from smtpsettings.domain.smtp import (
    MAX_LENGTH,
    PasswordAction,
    SmtpSettings,
    SmtpSettingsInput,
    changed_fields,
    decide_password,
    parse_settings,
)

VALID: dict[str, Any] = VALID_SETTINGS

STRING_FIELDS = [
    ("host", "Host"),
    ("senderAddress", "SenderAddress"),
    ("senderDisplayName", "SenderDisplayName"),
    ("credentialsUserName", "CredentialsUserName"),
]
BOOL_FIELDS = [("enableSSL", "EnableSSL"), ("enableAuth", "EnableAuth"), ("useNtlm", "UseNtlm")]


def body(**changes: Any) -> dict[str, Any]:
    result = dict(VALID)
    for key, value in changes.items():
        if value is _DROP:
            result.pop(key, None)
        else:
            result[key] = value
    return result


_DROP = object()


def errors_of(payload: Any) -> dict[str, list[str]]:
    with pytest.raises(ValidationFailed) as info:
        parse_settings(payload)
    return info.value.errors


def settings(**changes: Any) -> SmtpSettings:
    values: dict[str, Any] = {
        "host": "smtp.example.com",
        "port": 587,
        "sender_address": "noreply@example.com",
        "sender_display_name": "Example Portal",
        "credentials_user_name": "mailer",
        "enable_ssl": True,
        "enable_auth": True,
        "use_ntlm": False,
    }
    values.update(changes)
    return SmtpSettings(**values)


def request(password: str = "", **changes: Any) -> SmtpSettingsInput:
    return SmtpSettingsInput(settings=settings(**changes), password=password)


# --- parse_settings: the happy path ---------------------------------------------------------------


def test_a_complete_valid_body_is_parsed_into_settings_and_password() -> None:
    parsed = parse_settings(dict(VALID))
    assert parsed.password == "initial-Secret-1"
    assert parsed.settings == SmtpSettings(
        host="smtp.example.com",
        port=587,
        sender_address="noreply@example.com",
        sender_display_name="Example Portal",
        credentials_user_name="mailer",
        enable_ssl=True,
        enable_auth=True,
        use_ntlm=False,
        is_default=False,
    )


def test_a_minimal_body_gets_defaults_for_port_and_flags() -> None:
    parsed = parse_settings({"host": "smtp.example.com", "senderAddress": "a@example.com"})
    assert parsed.settings.port == 25
    assert parsed.settings.enable_ssl is False
    assert parsed.settings.enable_auth is False
    assert parsed.settings.use_ntlm is False
    assert parsed.settings.sender_display_name == ""
    assert parsed.password == ""


def test_a_null_port_means_the_default_port_25() -> None:
    assert parse_settings(body(port=None)).settings.port == 25


def test_string_values_are_stripped_of_surrounding_spaces() -> None:
    parsed = parse_settings(body(host="  smtp.example.com  ", senderDisplayName=" Name "))
    assert parsed.settings.host == "smtp.example.com"
    assert parsed.settings.sender_display_name == "Name"


# --- parse_settings: types ------------------------------------------------------------------------


@pytest.mark.parametrize(("wire", "label"), STRING_FIELDS + [("credentialsUserPassword", "CredentialsUserPassword")])
@pytest.mark.parametrize("value", [25, True, False, ["x"], {"a": "b"}, 1.5], ids=repr)
def test_a_string_field_given_a_non_string_is_refused_under_its_pascal_case_name(wire: str, label: str, value: Any) -> None:
    errors = errors_of(body(**{wire: value}))
    assert errors == {label: [f"The field {label} must be a string."]}


@pytest.mark.parametrize("value", ["25", 25.0, True, False, [25], {"port": 25}, 1.5], ids=repr)
def test_a_port_that_is_not_an_integer_is_refused(value: Any) -> None:
    assert errors_of(body(port=value)) == {"Port": ["The field Port must be an integer."]}


@pytest.mark.parametrize(("wire", "label"), BOOL_FIELDS)
@pytest.mark.parametrize("value", ["true", "false", 1, 0, None, [], {}], ids=repr)
def test_a_boolean_field_given_a_non_boolean_is_refused(wire: str, label: str, value: Any) -> None:
    assert errors_of(body(**{wire: value})) == {label: [f"The field {label} must be true or false."]}


def test_several_bad_fields_are_all_reported_at_once() -> None:
    errors = errors_of(body(host=1, port="x", enableSSL="yes"))
    assert set(errors) == {"Host", "Port", "EnableSSL"}


def test_the_validation_error_message_is_the_first_field_error() -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_settings(body(port=0))
    assert info.value.message == "The field Port must be between 1 and 65535."
    assert isinstance(info.value, BadArgument)


# --- parse_settings: lengths and ranges -----------------------------------------------------------


def address_of_length(length: int) -> str:
    """A syntactically valid address of exactly ``length`` characters (local part 64, labels <= 63)."""
    domain = ".".join(["d" * 63] * 3)
    address = "l" * 64 + "@" + domain + ".com"
    assert len(address) >= length
    cut = len(address) - length
    return "l" * 64 + "@" + domain[cut:] + ".com"


def test_a_sender_address_of_254_characters_the_longest_legal_address_is_accepted() -> None:
    address = address_of_length(254)
    assert len(address) == 254
    assert parse_settings(body(senderAddress=address)).settings.sender_address == address


@pytest.mark.parametrize(("wire", "label"), [("host", "Host"), ("senderDisplayName", "SenderDisplayName"), ("credentialsUserName", "CredentialsUserName")])
def test_a_string_of_255_characters_is_accepted(wire: str, label: str) -> None:
    parsed = parse_settings(body(**{wire: "a" * MAX_LENGTH}))
    attr = {"host": "host", "senderDisplayName": "sender_display_name", "credentialsUserName": "credentials_user_name"}[wire]
    assert getattr(parsed.settings, attr) == "a" * 255


@pytest.mark.parametrize(("wire", "label"), STRING_FIELDS)
def test_a_string_of_256_characters_is_refused_with_the_docspace_message(wire: str, label: str) -> None:
    errors = errors_of(body(**{wire: "a" * 256}))
    assert errors == {label: [f"The field {label} must be a string with a maximum length of 255."]}


def test_the_host_message_is_word_for_word_the_docspace_one() -> None:
    assert errors_of(body(host="h" * 256)) == {"Host": ["The field Host must be a string with a maximum length of 255."]}


def test_a_long_password_is_not_limited_to_255_characters() -> None:
    assert parse_settings(body(credentialsUserPassword="p" * 1000)).password == "p" * 1000


@pytest.mark.parametrize("port", [1, 25, 465, 587, 65535])
def test_a_port_within_1_to_65535_is_accepted(port: int) -> None:
    assert parse_settings(body(port=port)).settings.port == port


@pytest.mark.parametrize("port", [0, 65536, -1, 10**12])
def test_a_port_outside_1_to_65535_is_refused_with_the_docspace_message(port: int) -> None:
    assert errors_of(body(port=port)) == {"Port": ["The field Port must be between 1 and 65535."]}


# --- parse_settings: nulls, control characters, unknown fields ------------------------------------


@pytest.mark.parametrize(
    ("wire", "attr"),
    [("senderDisplayName", "sender_display_name"), ("credentialsUserPassword", None)],
)
def test_a_null_string_is_read_as_empty(wire: str, attr: str | None) -> None:
    parsed = parse_settings(body(**{wire: None}, credentialsUserName="mailer"))
    if attr:
        assert getattr(parsed.settings, attr) == ""
    else:
        assert parsed.password == ""


def test_a_null_host_is_empty_and_so_refused_as_empty_smtp_host() -> None:
    with pytest.raises(BadArgument, match=r"^Empty smtp host\.$"):
        parse_settings(body(host=None))


@pytest.mark.parametrize(("wire", "label"), STRING_FIELDS)
@pytest.mark.parametrize("char", ["\r", "\n", "\x00", "\x7f", "\x85", "\t", "\x1b", "\x9f"], ids=repr)
def test_a_control_character_is_refused_in_every_string_but_the_password(wire: str, label: str, char: str) -> None:
    value = f"a{char}b@example.com" if wire == "senderAddress" else f"x{char}Bcc: evil@example.com"
    errors = errors_of(body(**{wire: value}))
    assert errors == {label: [f"The field {label} must not contain control characters."]}


@pytest.mark.parametrize("char", ["\r", "\n", "\x00", "\x7f", "\x85"], ids=repr)
def test_a_control_character_is_allowed_in_the_password(char: str) -> None:
    assert parse_settings(body(credentialsUserPassword=f"pa{char}ss")).password == f"pa{char}ss"


def test_a_trailing_newline_in_the_sender_is_refused() -> None:
    assert "SenderAddress" in errors_of(body(senderAddress="noreply@example.com\n"))


@pytest.mark.parametrize("name", ["bcc", "Host", "HOST", "password", "enableSsl", ""])
def test_an_unknown_field_is_refused_rather_than_dropped(name: str) -> None:
    errors = errors_of(body(**{name: "x"}))
    assert len(errors) == 1
    [(key, messages)] = errors.items()
    assert key == (name[:1].upper() + name[1:] if name else "(empty)")
    assert messages == [f"The field {name} is not a property of SMTP settings."]


@pytest.mark.parametrize("value", [True, False, None, "yes", 1, [], {"a": 1}], ids=repr)
def test_is_default_settings_is_ignored_whatever_its_value(value: Any) -> None:
    parsed = parse_settings(body(isDefaultSettings=value))
    assert parsed.settings.is_default is False
    assert parsed.settings == parse_settings(dict(VALID)).settings


# --- parse_settings: sender address ---------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "noreply@example.com",
        "first.last@example.com",
        "user+tag@example.com",
        "user@mail.sub.example.co.uk",
        "USER@EXAMPLE.COM",
        "a@localhost",
        "o'brien@example.com",
        "x_y-z@ex-ample.com",
    ],
)
def test_a_valid_sender_address_is_accepted(address: str) -> None:
    assert parse_settings(body(senderAddress=address)).settings.sender_address == address


@pytest.mark.parametrize(
    "address",
    [
        "no-at-sign",
        "two@@example.com",
        "a@b@example.com",
        "@example.com",
        "user@",
        "user name@example.com",
        "user@-example.com",
        "user@example-.com",
        "user@exa_mple.com",
        "user@example..com",
        "Name <user@example.com>",
        "user@example.com,other@example.com",
        "l" * 65 + "@example.com",
    ],
)
def test_an_invalid_sender_address_is_refused(address: str) -> None:
    assert errors_of(body(senderAddress=address)) == {"SenderAddress": ["The field SenderAddress must be a valid email address."]}


# --- parse_settings: body shape and required values -----------------------------------------------


@pytest.mark.parametrize("payload", [None, [], [VALID], "host", 42, True], ids=repr)
def test_a_body_that_is_not_an_object_is_a_bad_argument(payload: Any) -> None:
    with pytest.raises(BadArgument) as info:
        parse_settings(payload)
    assert not isinstance(info.value, ValidationFailed)


@pytest.mark.parametrize("host", ["", "   ", None, _DROP], ids=["empty", "spaces", "null", "missing"])
def test_an_empty_host_is_refused_with_empty_smtp_host(host: Any) -> None:
    with pytest.raises(BadArgument) as info:
        parse_settings(body(host=host))
    assert info.value.message == "Empty smtp host."


@pytest.mark.parametrize("sender", ["", "  ", None, _DROP], ids=["empty", "spaces", "null", "missing"])
def test_an_empty_sender_is_refused_with_empty_sender_address(sender: Any) -> None:
    with pytest.raises(BadArgument) as info:
        parse_settings(body(senderAddress=sender))
    assert info.value.message == "Empty sender address."


@pytest.mark.parametrize("user", ["", "  ", None, _DROP], ids=["empty", "spaces", "null", "missing"])
def test_an_empty_user_name_with_authentication_is_refused_with_empty_user_name(user: Any) -> None:
    with pytest.raises(BadArgument) as info:
        parse_settings(body(credentialsUserName=user, enableAuth=True))
    assert info.value.message == "Empty user name."


def test_an_empty_user_name_without_authentication_is_fine() -> None:
    parsed = parse_settings(body(credentialsUserName="", enableAuth=False))
    assert parsed.settings.credentials_user_name == ""


def test_the_empty_host_is_reported_before_the_empty_sender() -> None:
    with pytest.raises(BadArgument, match=r"^Empty smtp host\.$"):
        parse_settings({"host": "", "senderAddress": ""})


def test_field_errors_are_reported_before_empty_values() -> None:
    with pytest.raises(ValidationFailed):
        parse_settings({"host": "", "port": 0})


@pytest.mark.parametrize("enable_auth", [False, _DROP], ids=["false", "missing"])
def test_without_authentication_user_password_and_ntlm_are_dropped(enable_auth: Any) -> None:
    parsed = parse_settings(body(enableAuth=enable_auth, credentialsUserName="mailer", credentialsUserPassword="secret", useNtlm=True))
    assert parsed.settings.enable_auth is False
    assert parsed.settings.credentials_user_name == ""
    assert parsed.settings.use_ntlm is False
    assert parsed.password == ""


def test_with_authentication_ntlm_is_kept() -> None:
    parsed = parse_settings(body(useNtlm=True))
    assert parsed.settings.use_ntlm is True


# --- decide_password -------------------------------------------------------------------------------


def test_authentication_off_clears_the_password_even_when_one_is_stored() -> None:
    new = request(enable_auth=False, credentials_user_name="")
    assert decide_password(new, settings(), True) is PasswordAction.CLEAR


def test_authentication_off_clears_even_with_nothing_stored() -> None:
    assert decide_password(request(enable_auth=False), None, False) is PasswordAction.CLEAR


@pytest.mark.parametrize(
    ("stored", "has_password"),
    [(None, False), (settings(), True), (settings(host="other.example.com"), True), (settings(enable_auth=False), False)],
)
def test_a_password_that_was_sent_is_set(stored: SmtpSettings | None, has_password: bool) -> None:
    assert decide_password(request(password="new-secret"), stored, has_password) is PasswordAction.SET


def test_an_omitted_password_keeps_the_stored_one_when_host_port_and_user_are_unchanged() -> None:
    new = request(sender_address="other@example.com", sender_display_name="Other", enable_ssl=False, use_ntlm=True)
    assert decide_password(new, settings(), True) is PasswordAction.KEEP


def test_the_host_is_compared_without_regard_to_case() -> None:
    assert decide_password(request(host="SMTP.Example.COM"), settings(), True) is PasswordAction.KEEP


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"host": "evil.example.net"}, "host changed"),
        ({"port": 25}, "port changed"),
        ({"credentials_user_name": "someone-else"}, "user changed"),
        ({"credentials_user_name": "Mailer"}, "user changed in case only"),
    ],
)
def test_an_omitted_password_is_refused_when_the_target_changed(change: dict[str, Any], why: str) -> None:
    with pytest.raises(BadArgument) as info:
        decide_password(request(**change), settings(), True)
    assert info.value.message == "Empty password.", why


def test_an_omitted_password_is_refused_when_nothing_is_stored() -> None:
    with pytest.raises(BadArgument, match=r"^Empty password\.$"):
        decide_password(request(), None, False)


def test_an_omitted_password_is_refused_when_the_stored_settings_have_no_password() -> None:
    with pytest.raises(BadArgument, match=r"^Empty password\.$"):
        decide_password(request(), settings(), False)


def test_an_omitted_password_is_refused_when_the_stored_settings_had_authentication_off() -> None:
    with pytest.raises(BadArgument, match=r"^Empty password\.$"):
        decide_password(request(), settings(enable_auth=False), True)


# --- changed_fields --------------------------------------------------------------------------------


def test_identical_settings_change_nothing() -> None:
    assert changed_fields(settings(), settings(), password_changed=False) == []


def test_a_changed_password_alone_is_named() -> None:
    assert changed_fields(settings(), settings(), password_changed=True) == ["credentialsUserPassword"]


@pytest.mark.parametrize(
    ("change", "wire"),
    [
        ({"host": "other.example.com"}, "host"),
        ({"port": 25}, "port"),
        ({"sender_address": "x@example.com"}, "senderAddress"),
        ({"sender_display_name": "X"}, "senderDisplayName"),
        ({"credentials_user_name": "x"}, "credentialsUserName"),
        ({"enable_ssl": False}, "enableSSL"),
        ({"enable_auth": False}, "enableAuth"),
        ({"use_ntlm": True}, "useNtlm"),
    ],
)
def test_each_changed_field_is_named_by_its_wire_name(change: dict[str, Any], wire: str) -> None:
    assert changed_fields(settings(), settings(**change), password_changed=False) == [wire]


def test_several_changes_are_named_in_wire_order_with_the_password_last() -> None:
    after = settings(use_ntlm=True, host="new.example.com", port=2525)
    assert changed_fields(settings(), after, password_changed=True) == ["host", "port", "useNtlm", "credentialsUserPassword"]


def test_the_default_flag_is_not_a_wire_change() -> None:
    assert changed_fields(settings(is_default=True), settings(), password_changed=False) == []


def test_changed_fields_names_fields_and_never_values() -> None:
    after = settings(host="secret-host.example.com", credentials_user_name="secret-user")
    names = changed_fields(settings(), after, password_changed=True)
    assert all("secret" not in name for name in names)
