"""SMTP settings: the value, its validation, and the rules for saving it.

Validation mirrors DocSpace (lengths, port range, required fields and their messages) and adds our own
rules: the host must be a host name or IP address, the sender must be a valid address, no string may carry
control characters (they would inject header lines), not even inside an RFC 2047 encoded word, unknown
fields are refused rather than silently dropped, and a stored password is kept when it is omitted and the
host, port and user are unchanged.
"""

from __future__ import annotations

import base64
import enum
import ipaddress
import re
from typing import Any

import idna
import msgspec

from smtpsettings.domain.accounts import valid_email
from smtpsettings.domain.errors import BadArgument, ValidationFailed

__all__ = (
    "MAX_LENGTH",
    "PasswordAction",
    "SmtpSettings",
    "SmtpSettingsInput",
    "changed_fields",
    "check_host",
    "decide_password",
    "parse_settings",
)

MAX_LENGTH = 255
DEFAULT_PORT = 25
# C0, DEL and C1, and the Unicode line and paragraph separators, which some readers take for line breaks.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# As leniently as Python's email package finds RFC 2047 encoded words: anywhere, spaces allowed inside.
_ENCODED_WORD = re.compile(r"=\?([^?]*)\?([bBqQ])\?(.*?)\?=", re.DOTALL)
_Q_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")


class SmtpSettings(msgspec.Struct, frozen=True, kw_only=True):
    """A portal's effective SMTP settings, without the password (which lives encrypted beside it)."""

    host: str
    port: int
    sender_address: str
    sender_display_name: str
    credentials_user_name: str
    enable_ssl: bool
    enable_auth: bool
    use_ntlm: bool
    is_default: bool = False


class SmtpSettingsInput(msgspec.Struct, frozen=True, kw_only=True):
    """A validated save request: the settings plus the password as sent (``""`` when omitted)."""

    settings: SmtpSettings
    password: str


# wire name -> (attribute, PascalCase name used in validation errors, kind)
_FIELDS: dict[str, tuple[str, str, str]] = {
    "host": ("host", "Host", "str"),
    "port": ("port", "Port", "port"),
    "senderAddress": ("sender_address", "SenderAddress", "str"),
    "senderDisplayName": ("sender_display_name", "SenderDisplayName", "str"),
    "credentialsUserName": ("credentials_user_name", "CredentialsUserName", "str"),
    "credentialsUserPassword": ("password", "CredentialsUserPassword", "secret"),
    "enableSSL": ("enable_ssl", "EnableSSL", "bool"),
    "enableAuth": ("enable_auth", "EnableAuth", "bool"),
    "useNtlm": ("use_ntlm", "UseNtlm", "bool"),
    "isDefaultSettings": ("", "IsDefaultSettings", "ignored"),
}

WIRE_NAMES = {attr: wire for wire, (attr, _, _) in _FIELDS.items() if attr}


def parse_settings(body: Any) -> SmtpSettingsInput:
    """Validate a decoded JSON body of ``POST /smtpsettings/smtp``.

    Raises:
        ValidationFailed: a field has the wrong type, length or range, or is unknown.
        BadArgument: a required value is empty (DocSpace's messages).
    """
    if not isinstance(body, dict):
        raise BadArgument("The request body must be a JSON object with the SMTP settings.")
    errors: dict[str, list[str]] = {}
    values: dict[str, Any] = {}
    for name, value in body.items():
        if name not in _FIELDS:
            errors.setdefault(_pascal(name), []).append(f"The field {name} is not a property of SMTP settings.")
            continue
        attr, label, kind = _FIELDS[name]
        problem, value = _check(kind, label, value)
        if problem:
            errors.setdefault(label, []).append(problem)
        elif attr:
            values[attr] = value
    sender = values.get("sender_address", "")
    if sender and "SenderAddress" not in errors and not valid_email(sender):
        errors["SenderAddress"] = ["The field SenderAddress must be a valid email address."]
    if errors:
        raise ValidationFailed(errors)

    enable_auth = values.get("enable_auth", False)
    settings = SmtpSettings(
        host=values.get("host", ""),
        port=values.get("port", DEFAULT_PORT),
        sender_address=sender,
        sender_display_name=values.get("sender_display_name", ""),
        credentials_user_name=values.get("credentials_user_name", "") if enable_auth else "",
        enable_ssl=values.get("enable_ssl", False),
        enable_auth=enable_auth,
        use_ntlm=values.get("use_ntlm", False) if enable_auth else False,
    )
    if not settings.host:
        raise BadArgument("Empty smtp host.")
    if not settings.sender_address:
        raise BadArgument("Empty sender address.")
    if enable_auth and not settings.credentials_user_name:
        raise BadArgument("Empty user name.")
    return SmtpSettingsInput(settings=settings, password=values.get("password", "") if enable_auth else "")


def _check(kind: str, label: str, value: Any) -> tuple[str | None, Any]:
    if kind == "ignored":
        return None, None
    if kind in ("str", "secret"):
        if value is None:
            return None, ""
        if not isinstance(value, str):
            return f"The field {label} must be a string.", None
        if kind == "str":
            if len(value) > MAX_LENGTH:
                return f"The field {label} must be a string with a maximum length of {MAX_LENGTH}.", None
            if _CONTROL.search(value) or any(_CONTROL.search(text) for text in _encoded_word_texts(value)):
                return f"The field {label} must not contain control characters.", None
            value = value.strip()
            if label == "Host" and value:
                problem, value = check_host(value)
                if problem:
                    return f"The field Host must be a host name or IP address: {problem}", None
        return None, value
    if kind == "port":
        if value is None:
            return None, DEFAULT_PORT
        if isinstance(value, bool) or not isinstance(value, int):
            return f"The field {label} must be an integer.", None
        if not 1 <= value <= 65535:
            return f"The field {label} must be between 1 and 65535.", None
        return None, value
    if not isinstance(value, bool):
        return f"The field {label} must be true or false.", None
    return None, value


def _encoded_word_texts(value: str, depth: int = 0) -> list[str]:
    """The decoded texts of the RFC 2047 encoded words in ``value``, and of any words they hold in turn.

    The mail builder hands the display name to Python's email package, which decodes encoded words
    (even inside quotes) and writes what they contain back out raw: ``=?utf-8?q?a=0D=0ABcc:_x?=`` would
    become a real ``Bcc:`` line. So the control-character rule must hold for what they decode to as well.
    Decoding is at least as lenient as the email package's: base64 padding is repaired and stray
    characters are skipped, and the declared charset is used when Python knows it (UTF-16 and UTF-7 spell
    CR LF in other bytes), Latin-1, which keeps every byte visible, when it does not. The builder decodes a
    word that decodes to another word again, so this looks inside those too.
    """
    if "=?" not in value or depth > 8:  # each level is shorter than the one before; 255 characters at most
        return []
    texts: list[str] = []
    for charset, encoding, encoded in _ENCODED_WORD.findall(value):
        raw = encoded.encode("utf-8", "surrogateescape")
        if encoding in "qQ":
            data = _Q_ESCAPE.sub(lambda m: bytes.fromhex(m.group(1).decode("ascii")), raw.replace(b"_", b" "))
        else:
            digits = _NOT_BASE64.sub(b"", raw)
            if len(digits) % 4 == 1:  # a lone last digit holds no byte
                digits = digits[:-1]
            data = base64.b64decode(digits + b"=" * (-len(digits) % 4))
        try:
            text = data.decode(charset.partition("*")[0], "replace")  # without an RFC 2231 language suffix
        except (LookupError, UnicodeError):  # unknown, or not a text codec
            text = data.decode("latin-1")
        texts.append(text)
        texts.extend(_encoded_word_texts(text, depth + 1))
    return texts


# How inet_aton, which some resolvers try first, reads the parts of 127.1 or 0x7f000001.
_NUMBER_LABEL = re.compile(r"0[xX][0-9A-Fa-f]*|[0-9]+")
_NOT_IN_A_NAME = (
    ("/", "a URL is not a host name; give only the name"),
    ("@", "an email address is not a host name"),
)


def check_host(value: str) -> tuple[str | None, str]:
    """Whether ``value`` (stripped) names a server to connect to: ``(problem, the host to store)``.

    Accepted: an RFC 1123 host name; an international name valid under IDNA 2008, stored as typed (the
    mail client connects to its A-label); an IPv4 address in dotted decimal; an IPv6 address, bare or in
    brackets. IP addresses are stored bare and compressed (``[::1]`` becomes ``::1``) so that a server
    has one spelling: the stored-password rule compares hosts, and TLS and the resolver want it bare.
    ``problem`` says what is wrong, for the 400 message, e.g. ``"'smtp://x' contains '/' (a URL is not
    a host name; give only the name)"``. A trailing dot is refused: certificates never match it.
    """
    shown = _shown(value)
    if any(char.isspace() for char in value):
        return f"{shown} contains a space", value
    for char, why in _NOT_IN_A_NAME:
        if char in value:
            return f"{shown} contains {char!r} ({why})", value
    if value.startswith("[") or ":" in value:
        return _check_ip_literal(value)
    try:
        return None, str(ipaddress.IPv4Address(value))
    except ValueError:
        pass
    labels = value.split(".")
    if all(_NUMBER_LABEL.fullmatch(label) for label in labels):
        return f"{shown} is not a valid IPv4 address: give four numbers from 0 to 255, like 192.0.2.25", value
    for char in value:
        if char.isascii() and not (char.isalnum() or char in ".-"):
            return f"{shown} contains {char!r}, which a host name cannot contain", value
    name = value
    if not value.isascii():
        try:
            # Case, full-width forms and ideographic full stops, as a browser or resolver library maps them.
            name = idna.uts46_remap(value, std3_rules=True, transitional=False)
        except idna.IDNAError as exc:
            return f"{shown} is not a valid international host name ({exc})", value
        labels = name.split(".")
    if "" in labels[:-1]:
        return f"{shown} has an empty label (two dots in a row, or a dot at the start)", value
    if labels[-1] == "":
        return f"{shown} ends with a dot: leave it out", value
    a_labels: list[str] = []
    for label in labels:
        a_label = label if label.isascii() else "xn--" + label.encode("punycode").decode("ascii")
        if len(a_label) > 63:
            return f"{shown}: a label is longer than 63 characters", value
        if label.startswith("-") or label.endswith("-"):
            return f"{shown}: a label starts or ends with '-'", value
        try:  # IDNA 2008: allowed code points, joiners, bidi; and an A-label typed as such must decode
            if not label.isascii():
                idna.alabel(label)
            elif label[:4].lower() == "xn--":
                idna.ulabel(label)
        except idna.IDNAError as exc:
            return f"{shown} is not a valid international host name ({exc})", value
        a_labels.append(a_label)
    if len(".".join(a_labels)) > 253:
        return f"{shown}: the name is longer than 253 characters (counted as it goes over DNS)", value
    if labels[-1].isdigit():
        return f"{shown} ends with an all-numeric label, which no domain has", value
    return None, value


def _shown(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:57] + "...")


def _check_ip_literal(value: str) -> tuple[str | None, str]:
    """:func:`check_host` for a value with brackets or a colon: an IPv6 address, or a name with a port."""
    shown = _shown(value)
    port = f"{shown} includes a port: give the port in the Port field"
    inside = value
    if value.startswith("["):
        inside, bracket, after = value[1:].partition("]")
        if bracket and after.startswith(":") and after[1:].isdigit():
            return port, value
        if not bracket or after:
            return f"{shown} is not an IPv6 address in brackets, like [2001:db8::25]", value
        try:
            return None, str(ipaddress.IPv4Address(inside))  # the SMTP address-literal form, [192.0.2.25]
        except ValueError:
            pass
    elif value.count(":") == 1:
        return port, value
    if "%" in inside:
        return f"{shown} has an IPv6 zone index ('%'), which is not supported", value
    try:
        return None, str(ipaddress.IPv6Address(inside))
    except ValueError:
        return f"{shown} is not a valid IPv6 address", value


def _pascal(name: str) -> str:
    return name[:1].upper() + name[1:] if name else "(empty)"


class PasswordAction(enum.Enum):
    SET = "set"  # store the password that was sent
    KEEP = "keep"  # keep the stored ciphertext
    CLEAR = "clear"  # authentication is off: store no password


def decide_password(new: SmtpSettingsInput, stored: SmtpSettings | None, stored_has_password: bool) -> PasswordAction:
    """What to do with the password on save.

    A password omitted on save keeps the stored one only when host, port and user name are unchanged:
    otherwise an admin, or someone with a stolen admin session, could point the stored secret at a host
    they control.
    """
    if not new.settings.enable_auth:
        return PasswordAction.CLEAR
    if new.password:
        return PasswordAction.SET
    if (
        stored is not None
        and stored_has_password
        and stored.enable_auth
        and (stored.host.lower(), stored.port, stored.credentials_user_name)
        == (new.settings.host.lower(), new.settings.port, new.settings.credentials_user_name)
    ):
        return PasswordAction.KEEP
    raise BadArgument("Empty password.")


def changed_fields(before: SmtpSettings, after: SmtpSettings, *, password_changed: bool) -> list[str]:
    """Wire names of the fields whose values differ (never the values: the audit log must hold no secret)."""
    names = [wire for attr, wire in WIRE_NAMES.items() if attr != "password" and getattr(before, attr) != getattr(after, attr)]
    if password_changed:
        names.append("credentialsUserPassword")
    return names
