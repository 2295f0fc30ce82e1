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
    check_host,
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
