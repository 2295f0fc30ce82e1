"""Unit tests of the SMTP settings rules: parse_settings, decide_password, decide_secrets and changed_fields."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from oauthkit import Certificate, make_certificate, make_service_account_key

from serverkit import VALID_SETTINGS
from smtpsettings.domain.errors import BadArgument, ValidationFailed
from smtpsettings.domain.hosts import check_host, check_token_url
from smtpsettings.domain.smtp import (
    MAX_LENGTH,
    SECRET_NAMES,
    AuthMethod,
    OAuth2Secrets,
    OAuth2Settings,
    PasswordAction,
    SecretAction,
    SmtpSettings,
    SmtpSettingsInput,
    changed_fields,
    decide_password,
    decide_secrets,
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


@pytest.mark.parametrize(("wire", "label"), [("senderDisplayName", "SenderDisplayName"), ("credentialsUserName", "CredentialsUserName")])
def test_a_string_of_255_characters_is_accepted(wire: str, label: str) -> None:
    parsed = parse_settings(body(**{wire: "a" * MAX_LENGTH}))
    attr = {"senderDisplayName": "sender_display_name", "credentialsUserName": "credentials_user_name"}[wire]
    assert getattr(parsed.settings, attr) == "a" * 255


def test_a_host_name_of_253_characters_the_longest_legal_name_is_accepted() -> None:
    host = ".".join(["h" * 63] * 3 + ["h" * 61])
    assert len(host) == 253
    assert parse_settings(body(host=host)).settings.host == host


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


@pytest.mark.parametrize(("wire", "label"), [("senderDisplayName", "SenderDisplayName"), ("credentialsUserName", "CredentialsUserName")])
@pytest.mark.parametrize("char", ["\u2028", "\u2029"], ids=repr)
def test_a_unicode_line_separator_is_refused_like_a_control_character(wire: str, label: str, char: str) -> None:
    assert errors_of(body(**{wire: f"x{char}Bcc: evil@example.com"})) == {label: [f"The field {label} must not contain control characters."]}


ENCODED_INJECTIONS = [
    "=?utf-8?q?Support=0D=0ABcc:_attacker@evil.test=0D=0AX-Injected:_1?=",  # the reported value
    "=?UTF-8?Q?Support=0D=0ABcc:_attacker@evil.test?=",
    "=?utf-8?b?U3VwcG9ydA0KQmNjOiBhdHRhY2tlckBldmlsLnRlc3QNClgtSW5qZWN0ZWQ6IDE=?=",  # base64
    "=?utf-8?B?U3VwcG9ydA0KQmNjOiBhdHRhY2tlckBldmlsLnRlc3Q?=",  # base64, padding left off
    "=?utf-8?b?U3VwcG9y dA0KQmNj?=",  # a space inside, which Python's parser tolerates
    "Team =?utf-8?q?Support=0ABcc:_attacker@evil.test?= Desk",  # a bare LF, mid-name
    '"=?utf-8?q?Support=0D=0ABcc:_attacker@evil.test?="',  # inside quotes
    "=?utf-8?q?J=C3=B6rg=0D=0ABcc:_attacker@evil.test?=",
    "=?utf-8*en?q?Support=0D=0ABcc:_x@evil.test?=",  # with an RFC 2231 language
    "=?utf-16?b?DQAKAA==?=",  # CR LF in UTF-16
    "=?utf-7?q?+AA0ACg-?=",  # CR LF in UTF-7
    "=?x-unknown?q?Support=0D=0ABcc:_x@evil.test?=",  # a charset nobody knows
    "=?utf-8?q?Support=00?=",  # NUL
    "=?utf-8?q?Support=C2=85?=",  # NEL
    "=?utf-8?q?Support=E2=80=A8Bcc:_x@evil.test?=",  # LINE SEPARATOR
    "=?utf-8?q?=3D=3Futf-8=3Fq=3FSupport=3D0D=3D0ABcc:_x@evil.test=3F=3D?=",  # a word inside a word
]


@pytest.mark.parametrize("value", ENCODED_INJECTIONS)
def test_a_control_character_inside_an_encoded_word_is_refused(value: str) -> None:
    assert errors_of(body(senderDisplayName=value)) == {"SenderDisplayName": ["The field SenderDisplayName must not contain control characters."]}


@pytest.mark.parametrize(("wire", "label"), [("credentialsUserName", "CredentialsUserName"), ("host", "Host")])
def test_the_encoded_word_rule_holds_for_every_string_but_the_password(wire: str, label: str) -> None:
    assert errors_of(body(**{wire: ENCODED_INJECTIONS[0]})) == {label: [f"The field {label} must not contain control characters."]}
    assert parse_settings(body(credentialsUserPassword=ENCODED_INJECTIONS[0])).password == ENCODED_INJECTIONS[0]


@pytest.mark.parametrize(
    "value",
    ["=?utf-8?q?J=C3=B6rg_=E2=80=94_Admin?=", "=?utf-8?b?SsO2cmcsIEFkbWlu?=", "Price =?x?y", "a=?b?=c", "Plain"],
)
def test_an_encoded_word_without_control_characters_is_accepted(value: str) -> None:
    assert parse_settings(body(senderDisplayName=value)).settings.sender_display_name == value


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


# --- parse_settings: host ----------------------------------------------------------------------------


def host_error(value: str) -> str:
    errors = errors_of(body(host=value))
    assert list(errors) == ["Host"] and len(errors["Host"]) == 1
    return errors["Host"][0]


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("smtp.example.com", "smtp.example.com"),
        ("SMTP.Example.COM", "SMTP.Example.COM"),  # stored as typed
        ("localhost", "localhost"),
        ("mail-1.internal", "mail-1.internal"),
        ("1mail.example.com", "1mail.example.com"),  # RFC 1123: a label may start with a digit
        ("bücher.example", "bücher.example"),  # IDNA 2008, stored as typed
        ("Bücher.Example", "Bücher.Example"),
        ("faß.de", "faß.de"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),  # an A-label typed as such
        ("почта.рф", "почта.рф"),
        ("192.0.2.25", "192.0.2.25"),
        ("127.0.0.1", "127.0.0.1"),
        ("2001:db8::25", "2001:db8::25"),
        ("2001:DB8:0:0::25", "2001:db8::25"),  # IPv6 is stored compressed, lower case
        ("[2001:db8::25]", "2001:db8::25"),  # brackets are accepted and dropped
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("[192.0.2.25]", "192.0.2.25"),  # SMTP's address-literal form
    ],
)
def test_a_host_name_or_ip_address_is_accepted(value: str, stored: str) -> None:
    assert parse_settings(body(host=value)).settings.host == stored


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("mail example.com", "contains a space"),
        ("mail\u00a0example.com", "contains a space"),
        ("smtp://127.0.0.1", "contains '/' (a URL is not a host name; give only the name)"),
        ("mail.example.com/", "contains '/' (a URL is not a host name; give only the name)"),
        ("admin@example.com", "contains '@' (an email address is not a host name)"),
        ("127.0.0.1:25", "includes a port: give the port in the Port field"),
        ("mail.example.com:587", "includes a port: give the port in the Port field"),
        ("[2001:db8::25]:25", "includes a port: give the port in the Port field"),
        ("...", "has an empty label (two dots in a row, or a dot at the start)"),
        ("mail..example.com", "has an empty label (two dots in a row, or a dot at the start)"),
        (".example.com", "has an empty label (two dots in a row, or a dot at the start)"),
        ("mail.example.com.", "ends with a dot: leave it out"),
        ("x" * 255, "a label is longer than 63 characters"),
        ("x" * 64 + ".example.com", "a label is longer than 63 characters"),
        ("ü" * 60 + ".example", "a label is longer than 63 characters"),  # 63 is counted in the A-label
        (".".join(["h" * 63] * 3 + ["h" * 62]), "the name is longer than 253 characters"),
        ("-mail.example.com", "a label starts or ends with '-'"),
        ("mail-.example.com", "a label starts or ends with '-'"),
        ("mail_relay.example.com", "contains '_', which a host name cannot contain"),
        ("mail*.example.com", "contains '*', which a host name cannot contain"),
        ("1.2.3", "is not a valid IPv4 address: give four numbers from 0 to 255, like 192.0.2.25"),
        ("127.1", "is not a valid IPv4 address"),
        ("256.1.1.1", "is not a valid IPv4 address"),
        ("010.0.0.1", "is not a valid IPv4 address"),  # octal to some resolvers
        ("0x7f000001", "is not a valid IPv4 address"),
        ("2130706433", "is not a valid IPv4 address"),
        ("mail.123", "ends with an all-numeric label, which no domain has"),
        ("2001:db8::25::1", "is not a valid IPv6 address"),
        ("fe80::1%eth0", "has an IPv6 zone index ('%'), which is not supported"),
        ("[2001:db8::25", "is not an IPv6 address in brackets, like [2001:db8::25]"),
        ("[mail.example.com]", "is not a valid IPv6 address"),
        ("☃.example", "is not a valid international host name"),  # allowed by IDNA 2003, not 2008
        ("xn--abc.example", "is not a valid international host name"),  # not a real A-label
        ("a\u200db.example", "is not a valid international host name"),
    ],
)
def test_a_host_that_is_not_a_host_name_or_ip_address_is_refused_saying_why(value: str, problem: str) -> None:
    message = host_error(value)
    assert message.startswith("The field Host must be a host name or IP address: ")
    assert problem in message


def test_the_host_message_quotes_the_value_and_shortens_a_long_one() -> None:
    assert host_error("smtp://x") == (
        "The field Host must be a host name or IP address: 'smtp://x' contains '/' (a URL is not a host name; give only the name)"
    )
    assert host_error("x" * 255) == f"The field Host must be a host name or IP address: '{'x' * 57}...': a label is longer than 63 characters"


def test_check_host_is_the_rule_parse_settings_applies() -> None:
    assert check_host("[::1]") == (None, "::1")
    problem, _ = check_host("127.0.0.1:25")
    assert problem == "'127.0.0.1:25' includes a port: give the port in the Port field"


def test_a_host_problem_is_reported_with_the_other_field_errors() -> None:
    assert set(errors_of(body(host="smtp://x", port=0))) == {"Host", "Port"}


def test_the_stored_password_is_kept_whichever_spelling_of_an_ipv6_host_is_sent() -> None:
    stored = parse_settings(body(host="[2001:db8::25]")).settings
    again = parse_settings(body(host="2001:DB8::25", credentialsUserPassword=""))
    assert decide_password(again, stored, True) is PasswordAction.KEEP


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


# --- OAuth 2.0: authMethod and the oauth2 object -------------------------------------------------------


def _key_pem(key: Any, password: bytes | None = None) -> str:
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption).decode()


def _ec_key_pem() -> str:
    return _key_pem(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="module")
def cert() -> Certificate:
    return make_certificate()


@pytest.fixture(scope="module")
def certificate(cert: Certificate) -> str:
    """A certificate with its private key, as an admin pastes it for Microsoft's signed assertion."""
    return cert.pem


@pytest.fixture(scope="module")
def service_account_key() -> str:
    return make_service_account_key().json


MAILBOX = "mailer@example.com"


def oauth2_body(provider: str = "microsoft", *, drop: tuple[str, ...] = (), **oauth2: Any) -> dict[str, Any]:
    """A valid save of OAuth 2.0 settings (a client secret for microsoft and generic); ``oauth2`` overrides."""
    fields: dict[str, Any] = {
        "microsoft": {"provider": "microsoft", "tenantId": "contoso.onmicrosoft.com", "clientId": "app-1", "clientSecret": "s3cret~x"},
        "google": {"provider": "google", "serviceAccountKey": "(set by the caller)"},
        "generic": {"provider": "generic", "clientId": "app-1", "clientSecret": "s3cret~x", "tokenUrl": "https://idp.example.com/token"},
    }[provider]
    fields = {k: v for k, v in {**fields, **oauth2}.items() if k not in drop}
    return body(credentialsUserName=MAILBOX, credentialsUserPassword=_DROP, useNtlm=_DROP, authMethod="oauth2", oauth2=fields)


def oauth2_errors_of(provider: str = "microsoft", **oauth2: Any) -> dict[str, list[str]]:
    return errors_of(oauth2_body(provider, **oauth2))


def test_oauth2_settings_are_parsed_with_their_secret_apart(certificate: str) -> None:
    parsed = parse_settings(oauth2_body(scope=" https://outlook.office365.com/.default ", tenantId=" contoso.onmicrosoft.com "))
    assert parsed.settings.auth_method is AuthMethod.OAUTH2
    assert parsed.settings.oauth2 == OAuth2Settings(
        provider="microsoft", tenant_id="contoso.onmicrosoft.com", client_id="app-1", scope="https://outlook.office365.com/.default"
    )
    assert parsed.settings.use_ntlm is False
    assert parsed.password == ""
    assert parsed.secrets == OAuth2Secrets(client_secret="s3cret~x")
    assert "s3cret" not in repr(parsed.secrets)


def test_a_certificate_instead_of_a_client_secret_is_parsed(certificate: str) -> None:
    parsed = parse_settings(oauth2_body(drop=("clientSecret",), certificate=certificate))
    assert parsed.secrets.sent() == ["certificate"] and parsed.secrets.certificate == certificate


def test_google_needs_only_the_service_account_key_and_the_mailbox(service_account_key: str) -> None:
    parsed = parse_settings(oauth2_body("google", serviceAccountKey=service_account_key))
    assert parsed.settings.oauth2 == OAuth2Settings(provider="google")
    assert parsed.secrets.service_account_key == service_account_key


def test_generic_is_client_credentials_at_the_given_token_url() -> None:
    parsed = parse_settings(oauth2_body("generic", scope="smtp.send"))
    assert parsed.settings.oauth2 == OAuth2Settings(
        provider="generic", client_id="app-1", token_url="https://idp.example.com/token", scope="smtp.send"
    )


@pytest.mark.parametrize(
    ("changes", "method"),
    [({}, AuthMethod.PASSWORD), ({"useNtlm": True}, AuthMethod.NTLM), ({"useNtlm": _DROP}, AuthMethod.PASSWORD)],
)
def test_without_auth_method_a_docspace_body_means_password_or_ntlm(changes: dict[str, Any], method: AuthMethod) -> None:
    parsed = parse_settings(body(**changes))
    assert parsed.settings.auth_method is method and parsed.settings.oauth2 is None


@pytest.mark.parametrize(("method", "ntlm"), [("password", False), ("ntlm", True)])
def test_auth_method_password_or_ntlm_sets_use_ntlm(method: str, ntlm: bool) -> None:
    parsed = parse_settings(body(authMethod=method, useNtlm=_DROP))
    assert parsed.settings.use_ntlm is ntlm and parsed.settings.auth_method == method


def test_a_null_auth_method_is_the_docspace_choice() -> None:
    assert parse_settings(body(authMethod=None, useNtlm=True)).settings.auth_method is AuthMethod.NTLM


@pytest.mark.parametrize("value", ["OAuth2", "basic", "", 1, True, ["oauth2"]], ids=repr)
def test_an_unknown_auth_method_is_refused(value: Any) -> None:
    assert errors_of(body(authMethod=value)) == {"AuthMethod": ["The field AuthMethod must be one of password, ntlm, oauth2."]}


@pytest.mark.parametrize(("method", "ntlm"), [("password", True), ("ntlm", False), ("oauth2", True)])
def test_use_ntlm_that_contradicts_auth_method_is_refused(method: str, ntlm: bool) -> None:
    payload = oauth2_body() | {"useNtlm": ntlm} if method == "oauth2" else body(authMethod=method, useNtlm=ntlm)
    assert errors_of(payload)["UseNtlm"] == ['The field UseNtlm must be true exactly when AuthMethod is "ntlm".']


def test_without_authentication_auth_method_ntlm_is_dropped_like_use_ntlm() -> None:
    parsed = parse_settings(body(enableAuth=False, authMethod="ntlm", useNtlm=_DROP))
    assert parsed.settings.auth_method is AuthMethod.PASSWORD and parsed.settings.use_ntlm is False


def test_oauth2_needs_authentication_on() -> None:
    assert errors_of(oauth2_body() | {"enableAuth": False}) == {
        "AuthMethod": ['AuthMethod "oauth2" needs EnableAuth true: XOAUTH2 is a way to sign in.']
    }


@pytest.mark.parametrize("method", ["password", "ntlm", _DROP])
def test_an_oauth2_object_with_another_method_is_refused(method: Any) -> None:
    payload = oauth2_body() | {"authMethod": method, "useNtlm": method == "ntlm"}
    if method is _DROP:
        del payload["authMethod"]
    assert errors_of(payload) == {"Oauth2": ['The field Oauth2 must be null or left out unless AuthMethod is "oauth2".']}


def test_a_null_oauth2_object_with_another_method_is_fine() -> None:
    assert parse_settings(body(authMethod="password", oauth2=None)).settings.oauth2 is None


@pytest.mark.parametrize("value", [_DROP, None])
def test_auth_method_oauth2_needs_the_oauth2_object(value: Any) -> None:
    payload = oauth2_body()
    if value is _DROP:
        del payload["oauth2"]
    else:
        payload["oauth2"] = value
    assert errors_of(payload) == {"Oauth2": ['The field Oauth2 is required when AuthMethod is "oauth2".']}


@pytest.mark.parametrize("value", ["microsoft", 1, ["x"], True], ids=repr)
def test_an_oauth2_value_that_is_not_an_object_is_refused(value: Any) -> None:
    assert errors_of(oauth2_body() | {"oauth2": value}) == {"Oauth2": ["The field Oauth2 must be an object."]}


def test_a_password_with_oauth2_is_refused() -> None:
    errors = errors_of(oauth2_body() | {"credentialsUserPassword": "pw"})
    assert errors == {
        "CredentialsUserPassword": [
            'The field CredentialsUserPassword must be empty when AuthMethod is "oauth2": the token takes its place.'
        ]
    }


def test_an_empty_password_with_oauth2_is_fine() -> None:
    assert parse_settings(oauth2_body() | {"credentialsUserPassword": ""}).password == ""


@pytest.mark.parametrize("provider", ["microsoft", "google"])
def test_microsoft_and_google_need_the_mailbox_address_as_user_name(provider: str, service_account_key: str) -> None:
    extra = {"serviceAccountKey": service_account_key} if provider == "google" else {}
    errors = errors_of(oauth2_body(provider, **extra) | {"credentialsUserName": "mailer"})
    assert errors == {
        "CredentialsUserName": [
            "The field CredentialsUserName must be the mailbox's email address for OAuth 2.0 with Microsoft 365 or Google."
        ]
    }


def test_generic_takes_any_user_name() -> None:
    assert parse_settings(oauth2_body("generic") | {"credentialsUserName": "mailer"}).settings.credentials_user_name == "mailer"


def test_an_empty_user_name_with_oauth2_is_docspaces_empty_user_name() -> None:
    with pytest.raises(BadArgument, match=r"^Empty user name\.$"):
        parse_settings(oauth2_body() | {"credentialsUserName": ""})


@pytest.mark.parametrize("value", [_DROP, None, "", "Microsoft", "azure", 3], ids=repr)
def test_the_provider_is_required_and_one_of_three(value: Any) -> None:
    payload = oauth2_body("generic")
    if value is _DROP:
        del payload["oauth2"]["provider"]
    else:
        payload["oauth2"]["provider"] = value
    message = (
        "The field Oauth2.Provider is required: microsoft, google or generic."
        if value in (_DROP, None, "")
        else "The field Oauth2.Provider must be a string." if not isinstance(value, str)
        else "The field Oauth2.Provider must be one of microsoft, google, generic."
    )
    assert errors_of(payload) == {"Oauth2.Provider": [message]}


@pytest.mark.parametrize(
    ("provider", "field", "label"),
    [
        ("microsoft", "tenantId", "Oauth2.TenantId"),
        ("microsoft", "clientId", "Oauth2.ClientId"),
        ("generic", "clientId", "Oauth2.ClientId"),
        ("generic", "tokenUrl", "Oauth2.TokenUrl"),
    ],
)
@pytest.mark.parametrize("missing", [_DROP, None, "", "  "], ids=repr)
def test_a_field_the_provider_needs_is_required_by_name(provider: str, field: str, label: str, missing: Any) -> None:
    payload = oauth2_body(provider, drop=(field,) if missing is _DROP else (), **({} if missing is _DROP else {field: missing}))
    assert errors_of(payload) == {label: [f'The field {label} is required for provider "{provider}".']}


@pytest.mark.parametrize(
    ("provider", "field", "label"),
    [
        ("microsoft", "serviceAccountKey", "Oauth2.ServiceAccountKey"),
        ("google", "tenantId", "Oauth2.TenantId"),
        ("google", "clientId", "Oauth2.ClientId"),
        ("google", "clientSecret", "Oauth2.ClientSecret"),
        ("google", "certificate", "Oauth2.Certificate"),
        ("generic", "tenantId", "Oauth2.TenantId"),
        ("generic", "certificate", "Oauth2.Certificate"),
        ("generic", "serviceAccountKey", "Oauth2.ServiceAccountKey"),
    ],
)
def test_a_field_the_provider_does_not_use_is_refused_unless_empty(
    provider: str, field: str, label: str, certificate: str, service_account_key: str
) -> None:
    value = {"certificate": certificate, "serviceAccountKey": service_account_key}.get(field, "x")
    extra = {"serviceAccountKey": service_account_key} if provider == "google" and field != "serviceAccountKey" else {}
    assert errors_of(oauth2_body(provider, **extra, **{field: value})) == {
        label: [f'The field {label} is not used with provider "{provider}": leave it empty.']
    }
    assert parse_settings(oauth2_body(provider, **extra, **{field: ""})).settings.oauth2 is not None


def test_microsoft_takes_a_client_secret_or_a_certificate_not_both(certificate: str) -> None:
    assert oauth2_errors_of(certificate=certificate) == {
        "Oauth2.Certificate": ["Give either Oauth2.ClientSecret or Oauth2.Certificate, not both."]
    }


@pytest.mark.parametrize("name", ["client_secret", "ClientSecret", "password", "authority", ""])
def test_an_unknown_oauth2_field_is_refused(name: str) -> None:
    label = "Oauth2." + (name[:1].upper() + name[1:] if name else "(empty)")
    assert oauth2_errors_of(**{name: "x"}) == {label: [f"The field oauth2.{name} is not a property of the OAuth 2.0 settings."]}


@pytest.mark.parametrize("value", [True, False, None, "yes"], ids=repr)
def test_the_stored_flags_of_an_answer_sent_back_are_ignored(value: Any) -> None:
    flags = {"clientSecretStored": value, "certificateStored": value, "serviceAccountKeyStored": value}
    assert parse_settings(oauth2_body(**flags)) == parse_settings(oauth2_body())


@pytest.mark.parametrize("field", ["provider", "tenantId", "clientId", "clientSecret", "certificate", "serviceAccountKey", "tokenUrl", "scope"])
@pytest.mark.parametrize("value", [1, True, ["x"], {"a": "b"}], ids=repr)
def test_an_oauth2_field_given_a_non_string_is_refused(field: str, value: Any) -> None:
    label = "Oauth2." + field[:1].upper() + field[1:]
    payload = oauth2_body()
    payload["oauth2"][field] = value
    assert errors_of(payload)[label] == [f"The field {label} must be a string."]


@pytest.mark.parametrize(
    ("field", "label", "longest"),
    [
        ("tenantId", "Oauth2.TenantId", 255),
        ("clientId", "Oauth2.ClientId", 255),
        ("clientSecret", "Oauth2.ClientSecret", 4096),
        ("scope", "Oauth2.Scope", 1024),
    ],
)
def test_oauth2_strings_have_a_maximum_length(field: str, label: str, longest: int) -> None:
    assert parse_settings(oauth2_body(**{field: "a" * longest}))
    assert oauth2_errors_of(**{field: "a" * (longest + 1)}) == {
        label: [f"The field {label} must be a string with a maximum length of {longest}."]
    }


def test_a_long_token_url_is_refused() -> None:
    url = "https://idp.example.com/" + "t" * 2048
    assert oauth2_errors_of("generic", tokenUrl=url) == {
        "Oauth2.TokenUrl": ["The field Oauth2.TokenUrl must be a string with a maximum length of 2048."]
    }


@pytest.mark.parametrize(
    ("field", "label"),
    [("tenantId", "Oauth2.TenantId"), ("clientId", "Oauth2.ClientId"), ("clientSecret", "Oauth2.ClientSecret"), ("scope", "Oauth2.Scope")],
)
@pytest.mark.parametrize("char", ["\r", "\n", "\x00", "\t", "\x85", "\u2028"], ids=repr)
def test_a_control_character_is_refused_in_oauth2_fields(field: str, label: str, char: str) -> None:
    assert oauth2_errors_of(**{field: f"abc{char}def"}) == {label: [f"The field {label} must not contain control characters."]}


def test_a_control_character_is_refused_in_the_token_url() -> None:
    assert oauth2_errors_of("generic", tokenUrl="https://idp.example.com/\r\nX: 1") == {
        "Oauth2.TokenUrl": ["The field Oauth2.TokenUrl must not contain control characters."]
    }


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\x7f", "\u2028"], ids=repr)
def test_a_certificate_or_key_may_have_line_breaks_but_no_other_control_character(
    char: str, certificate: str, service_account_key: str
) -> None:
    assert parse_settings(oauth2_body(drop=("clientSecret",), certificate=certificate.replace("\n", "\r\n")))
    assert oauth2_errors_of(drop=("clientSecret",), certificate=certificate + char) == {
        "Oauth2.Certificate": ["The field Oauth2.Certificate must not contain control characters."]
    }
    assert oauth2_errors_of("google", serviceAccountKey=service_account_key + char) == {
        "Oauth2.ServiceAccountKey": ["The field Oauth2.ServiceAccountKey must not contain control characters."]
    }


def test_secrets_are_kept_as_sent_and_other_oauth2_strings_are_stripped(certificate: str) -> None:
    parsed = parse_settings(oauth2_body(clientSecret=" s p ", clientId=" app-1 "))
    assert parsed.secrets.client_secret == " s p " and parsed.settings.oauth2 is not None
    assert parsed.settings.oauth2.client_id == "app-1"


@pytest.mark.parametrize("tenant", ["00000000-0000-0000-0000-000000000000", "contoso.onmicrosoft.com", "organizations"])
def test_a_tenant_id_or_domain_is_accepted(tenant: str) -> None:
    parsed = parse_settings(oauth2_body(tenantId=tenant))
    assert parsed.settings.oauth2 is not None and parsed.settings.oauth2.tenant_id == tenant


@pytest.mark.parametrize("tenant", ["../common", "a/b", "a?b", "a#b", "a b", "-x", "tenant%2f", "ténant"])
def test_a_tenant_that_would_change_the_token_url_is_refused(tenant: str) -> None:
    assert oauth2_errors_of(tenantId=tenant) == {
        "Oauth2.TenantId": [
            "The field Oauth2.TenantId must be a directory (tenant) ID or domain,"
            " like 00000000-0000-0000-0000-000000000000 or contoso.onmicrosoft.com."
        ]
    }


@pytest.mark.parametrize(
    "url",
    [
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token",
        "https://idp.example.com:8443/realms/mail/protocol/openid-connect/token",
        "https://idp.example.com/token?tenant=1",
        "HTTPS://IDP.example.com/token",
        "http://127.0.0.1:8080/token",
        "http://127.5.6.7/token",
        "http://[::1]:9000/token",
        "http://localhost:9000/token",
    ],
)
def test_a_token_url_over_https_or_to_loopback_is_accepted(url: str) -> None:
    parsed = parse_settings(oauth2_body("generic", tokenUrl=url))
    assert parsed.settings.oauth2 is not None and parsed.settings.oauth2.token_url == url
    assert check_token_url(url) is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://idp.example.com/token", "uses http://, which is allowed only to a loopback address such as 127.0.0.1"),
        ("http://10.0.0.1/token", "uses http://, which is allowed only to a loopback address such as 127.0.0.1"),
        ("ftp://idp.example.com/token", "does not start with https://"),
        ("idp.example.com/token", "does not start with https://"),
        ("https:///token", "does not start with https://"),
        ("https://user:pw@idp.example.com/token", "holds a user name or password; the secret goes in Oauth2.ClientSecret"),
        ("https://idp.example.com/token#x", "has a fragment ('#')"),
        ("https://idp.example.com:0/token", "has port 0"),
        ("https://idp.example.com:99999/token", "cannot be read (Port out of range 0-65535)"),
        ("https://[::1/token", "cannot be read (Invalid IPv6 URL)"),
    ],
)
def test_a_token_url_that_is_not_https_or_loopback_is_refused_saying_why(url: str, problem: str) -> None:
    assert oauth2_errors_of("generic", tokenUrl=url) == {
        "Oauth2.TokenUrl": [f"The field Oauth2.TokenUrl must be an https:// URL: {url!r} {problem}."]
    }


def test_a_token_url_host_gets_the_host_rule() -> None:
    errors = oauth2_errors_of("generic", tokenUrl="https://idp_example.com/token")
    assert errors == {"Oauth2.TokenUrl": ["The field Oauth2.TokenUrl must be an https:// URL: 'idp_example.com' contains '_', which a host name cannot contain."]}


def test_microsoft_and_google_may_override_the_token_url(service_account_key: str) -> None:
    for provider, extra in (("microsoft", {}), ("google", {"serviceAccountKey": service_account_key})):
        parsed = parse_settings(oauth2_body(provider, tokenUrl="http://127.0.0.1:9/token", **extra))
        assert parsed.settings.oauth2 is not None and parsed.settings.oauth2.token_url == "http://127.0.0.1:9/token"


@pytest.mark.parametrize("scope", ["https://mail.google.com/", "openid  email", 'a"b', "a\\b", "é"])
def test_a_scope_must_be_scope_names_separated_by_single_spaces(scope: str) -> None:
    if scope == "https://mail.google.com/":
        assert parse_settings(oauth2_body(scope=scope))
    else:
        assert oauth2_errors_of(scope=scope) == {"Oauth2.Scope": ["The field Oauth2.Scope must be scope names separated by single spaces."]}


def certificate_error(problem: str) -> dict[str, list[str]]:
    return {"Oauth2.Certificate": [f"The field Oauth2.Certificate cannot be used: {problem}."]}


def test_a_certificate_needs_its_private_key(cert: Certificate) -> None:
    errors = oauth2_errors_of(drop=("clientSecret",), certificate=cert.certificate_pem)
    assert errors == certificate_error("the certificate field holds no PEM private key (BEGIN PRIVATE KEY)")


@pytest.mark.parametrize("pem", ["not a certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"])
def test_a_certificate_that_is_not_pem_is_refused(pem: str) -> None:
    errors = oauth2_errors_of(drop=("clientSecret",), certificate=pem)
    assert errors == certificate_error("the certificate field holds no PEM certificate (BEGIN CERTIFICATE)")


def test_a_certificate_with_another_key_is_refused(cert: Certificate) -> None:
    other = make_certificate()
    pem = cert.certificate_pem + other.pem.removeprefix(other.certificate_pem)
    errors = oauth2_errors_of(drop=("clientSecret",), certificate=pem)
    assert errors == certificate_error("the private key does not belong to the certificate")


def test_a_certificate_with_an_encrypted_key_is_refused(cert: Certificate) -> None:
    key = serialization.load_pem_private_key(cert.pem.removeprefix(cert.certificate_pem).encode(), None)
    errors = oauth2_errors_of(drop=("clientSecret",), certificate=cert.certificate_pem + _key_pem(key, b"passphrase"))
    assert errors == certificate_error("the private key is encrypted; give it without a password")


def test_a_certificate_with_an_ec_key_is_refused(cert: Certificate) -> None:
    errors = oauth2_errors_of(drop=("clientSecret",), certificate=cert.certificate_pem + _ec_key_pem())
    assert errors == certificate_error("the private key is not an RSA key; Microsoft accepts RSA certificates only")


def test_the_key_may_come_before_the_certificate(cert: Certificate) -> None:
    key = cert.pem.removeprefix(cert.certificate_pem)
    assert parse_settings(oauth2_body(drop=("clientSecret",), certificate=key + cert.certificate_pem))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda key: "{not json", "the service account key is not JSON"),
        (lambda key: "[]", "the service account key is not a JSON object"),
        (lambda key: {**key, "type": "authorized_user"}, "the key is of type 'authorized_user', not a service account key"),
        (lambda key: {k: v for k, v in key.items() if k != "client_email"}, "the service account key has no client_email"),
        (lambda key: {**key, "private_key": ""}, "the service account key has no private_key"),
        (lambda key: {**key, "private_key": "garbage"}, "the service account key's private_key is not an RSA private key in PEM"),
        (lambda key: {**key, "private_key": _ec_key_pem()}, "the service account key's private_key is not an RSA private key in PEM"),
    ],
)
def test_a_service_account_key_that_google_would_not_take_is_refused_saying_why(
    change: Callable[[dict[str, Any]], Any], problem: str, service_account_key: str
) -> None:
    changed = change(json.loads(service_account_key))
    text = changed if isinstance(changed, str) else json.dumps(changed)
    assert oauth2_errors_of("google", serviceAccountKey=text) == {
        "Oauth2.ServiceAccountKey": [f"The field Oauth2.ServiceAccountKey cannot be used: {problem}."]
    }


def test_oauth2_errors_are_reported_with_the_other_field_errors() -> None:
    errors = errors_of(oauth2_body(tenantId="a/b", drop=("clientId",)) | {"port": 0})
    assert set(errors) == {"Port", "Oauth2.TenantId", "Oauth2.ClientId"}


def test_a_docspace_body_has_no_oauth2_secrets() -> None:
    assert parse_settings(body()).secrets == OAuth2Secrets()


# --- decide_secrets and the password with OAuth 2.0 ----------------------------------------------------


def oauth2_settings(**changes: Any) -> SmtpSettings:
    """Stored OAuth 2.0 settings (microsoft) for the same server and mailbox as :func:`oauth2_request`."""
    oauth2 = {"provider": "microsoft", "tenant_id": "contoso.onmicrosoft.com", "client_id": "app-1", "token_url": "", "scope": ""}
    oauth2.update({k: changes.pop(k) for k in list(changes) if k in oauth2})
    changes.setdefault("credentials_user_name", MAILBOX)
    return settings(oauth2=OAuth2Settings(**oauth2), **changes)


def oauth2_request(secrets: OAuth2Secrets | None = None, **changes: Any) -> SmtpSettingsInput:
    return SmtpSettingsInput(settings=oauth2_settings(**changes), password="", secrets=secrets or OAuth2Secrets())


ALL_CLEAR = dict.fromkeys(SECRET_NAMES, SecretAction.CLEAR)
KEPT_WHILE = "a stored one is kept only while host, port, user name, provider, tenant, client ID and token URL stay the same"


def test_without_oauth2_every_secret_is_cleared() -> None:
    assert decide_secrets(request(password="x"), oauth2_settings(), {"client_secret"}) == ALL_CLEAR
    assert decide_secrets(request(enable_auth=False), None, ()) == ALL_CLEAR


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_a_secret_sent_is_set_and_the_others_cleared(name: str) -> None:
    provider = "google" if name == "service_account_key" else "microsoft"
    new = oauth2_request(OAuth2Secrets(**{name: "x"}), provider=provider)
    assert decide_secrets(new, oauth2_settings(), set(SECRET_NAMES)) == {**ALL_CLEAR, name: SecretAction.SET}


@pytest.mark.parametrize("stored_secret", ["client_secret", "certificate"])
def test_an_omitted_secret_keeps_the_stored_credential_when_nothing_it_goes_to_changed(stored_secret: str) -> None:
    new = oauth2_request(sender_display_name="Renamed", enable_ssl=False, scope="other.scope", host="SMTP.example.com")
    assert decide_secrets(new, oauth2_settings(), {stored_secret}) == {**ALL_CLEAR, stored_secret: SecretAction.KEEP}


@pytest.mark.parametrize(
    "change",
    [
        {"host": "evil.example.net"},
        {"port": 25},
        {"credentials_user_name": "other@example.com"},
        {"provider": "generic"},
        {"tenant_id": "fabrikam.onmicrosoft.com"},
        {"client_id": "app-2"},
        {"token_url": "https://evil.example.net/token"},
    ],
    ids=lambda change: next(iter(change)),
)
def test_an_omitted_secret_is_refused_when_where_it_goes_changed(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationFailed) as info:
        decide_secrets(oauth2_request(**change), oauth2_settings(), {"client_secret"})
    label = "Oauth2.ClientSecret"
    expected = {
        "microsoft": f"Empty Oauth2.ClientSecret: give the client secret or a certificate (Oauth2.Certificate); {KEPT_WHILE}.",
        "generic": f"Empty Oauth2.ClientSecret: give the client secret; {KEPT_WHILE}.",
    }[change.get("provider", "microsoft")]
    assert info.value.errors == {label: [expected]} and info.value.message == expected


def test_an_omitted_secret_is_refused_when_the_stored_settings_used_a_password() -> None:
    with pytest.raises(ValidationFailed):
        decide_secrets(oauth2_request(), settings(credentials_user_name=MAILBOX), {"client_secret"})


def test_an_omitted_secret_is_refused_when_nothing_is_stored() -> None:
    with pytest.raises(ValidationFailed):
        decide_secrets(oauth2_request(), None, ())
    with pytest.raises(ValidationFailed):
        decide_secrets(oauth2_request(), oauth2_settings(), ())


def test_a_stored_secret_of_a_kind_the_provider_does_not_use_is_not_kept() -> None:
    with pytest.raises(ValidationFailed) as info:
        decide_secrets(oauth2_request(provider="google"), oauth2_settings(provider="google"), {"client_secret"})
    assert info.value.errors == {
        "Oauth2.ServiceAccountKey": [f"Empty Oauth2.ServiceAccountKey: give the service account's JSON key; {KEPT_WHILE}."]
    }


def test_with_oauth2_the_password_is_cleared_even_when_one_was_sent() -> None:
    assert decide_password(oauth2_request(), settings(), True) is SecretAction.CLEAR


def test_from_oauth2_back_to_a_password_the_password_must_be_given() -> None:
    with pytest.raises(BadArgument, match=r"^Empty password\.$"):
        decide_password(request(credentials_user_name=MAILBOX), oauth2_settings(), True)


def test_password_action_is_the_secret_action() -> None:
    assert PasswordAction is SecretAction


# --- changed_fields with OAuth 2.0 ---------------------------------------------------------------------


def test_turning_oauth2_on_names_the_method_and_its_fields() -> None:
    before = settings(credentials_user_name=MAILBOX)
    names = changed_fields(before, oauth2_settings(scope="x"), password_changed=True, secrets_changed=["client_secret"])
    assert names == [
        "authMethod",
        "oauth2.provider",
        "oauth2.tenantId",
        "oauth2.clientId",
        "oauth2.scope",
        "credentialsUserPassword",
        "oauth2.clientSecret",
    ]


def test_each_changed_oauth2_field_and_secret_is_named_by_its_wire_name() -> None:
    after = oauth2_settings(client_id="app-2", token_url="https://idp.example.com/t")
    assert changed_fields(oauth2_settings(), after, password_changed=False, secrets_changed=["certificate", "client_secret"]) == [
        "oauth2.clientId",
        "oauth2.tokenUrl",
        "oauth2.clientSecret",
        "oauth2.certificate",
    ]


def test_between_password_and_ntlm_use_ntlm_alone_is_named() -> None:
    assert changed_fields(settings(), settings(use_ntlm=True), password_changed=False) == ["useNtlm"]


def test_unchanged_oauth2_settings_change_nothing() -> None:
    assert changed_fields(oauth2_settings(), oauth2_settings(), password_changed=False) == []
