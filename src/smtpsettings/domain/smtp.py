"""SMTP settings: the value, its validation, and the rules for saving it.

Validation mirrors DocSpace (lengths, port range, required fields and their messages) and adds our own
rules: the sender must be a valid address, no string may carry control characters (they would inject
header lines), unknown fields are refused rather than silently dropped, and a stored password is kept
when it is omitted and the host, port and user are unchanged.
"""

from __future__ import annotations

import enum
import re
from typing import Any

import msgspec

from smtpsettings.domain.accounts import valid_email
from smtpsettings.domain.errors import BadArgument, ValidationFailed

__all__ = ("MAX_LENGTH", "PasswordAction", "SmtpSettings", "SmtpSettingsInput", "changed_fields", "decide_password", "parse_settings")

MAX_LENGTH = 255
DEFAULT_PORT = 25
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


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
            if _CONTROL.search(value):
                return f"The field {label} must not contain control characters.", None
            value = value.strip()
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
