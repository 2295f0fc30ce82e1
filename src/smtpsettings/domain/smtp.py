"""SMTP settings: the value, its validation, and the rules for saving it.

Validation mirrors DocSpace (lengths, port range, required fields and their messages) and adds our own
rules: the host must be a host name or IP address, the sender must be a valid address, no string may carry
control characters (they would inject header lines), not even inside an RFC 2047 encoded word, unknown
fields are refused rather than silently dropped, and a stored password is kept when it is omitted and the
host, port and user are unchanged.

Ours as well: ``authMethod`` (password, NTLM or OAuth 2.0) and the ``oauth2`` object, whose secrets (client
secret, certificate, service account key) follow the password's rule, extended to the token endpoint they
are sent to. Both are optional, so a DocSpace-shaped save, which has neither, means password or NTLM.
"""

from __future__ import annotations

import base64
import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from smtpsettings.domain.accounts import valid_email
from smtpsettings.domain.errors import BadArgument, ValidationFailed
from smtpsettings.domain.hosts import check_host, check_token_url
from smtpsettings.mail.oauth2 import PROVIDERS, certificate_problem, service_account_key_problem

__all__ = (
    "MAX_LENGTH",
    "PROVIDERS",
    "SECRET_NAMES",
    "AuthMethod",
    "OAuth2Secrets",
    "OAuth2Settings",
    "PasswordAction",
    "SecretAction",
    "SmtpSettings",
    "SmtpSettingsInput",
    "changed_fields",
    "decide_password",
    "decide_secrets",
    "has_control_characters",
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


class AuthMethod(enum.StrEnum):
    """How the mailbox signs in to the mail server (with ``enableAuth``)."""

    PASSWORD = "password"  # AUTH CRAM-MD5, PLAIN or LOGIN with the password
    NTLM = "ntlm"  # AUTH NTLM with the password
    OAUTH2 = "oauth2"  # AUTH XOAUTH2 with a token from the provider's token endpoint


class OAuth2Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Where a token comes from and for which client; the secrets are kept encrypted beside it.

    ``token_url`` and ``scope`` are stored as the admin gave them, ``""`` meaning the provider's default:
    resolving the default on save would turn a later change of default into a changed token URL, and the
    stored secrets would then be refused.
    """

    provider: str
    tenant_id: str = ""
    client_id: str = ""
    token_url: str = ""
    scope: str = ""


@dataclass(frozen=True)
class OAuth2Secrets:
    """The OAuth 2.0 credentials as sent (``""`` when omitted); never in a ``repr``, so never in a log."""

    client_secret: str = field(default="", repr=False)
    certificate: str = field(default="", repr=False)
    """PEM: the certificate and its unencrypted private key (Microsoft's signed client assertion)."""
    service_account_key: str = field(default="", repr=False)
    """Google's JSON key file of the service account."""

    def sent(self) -> list[str]:
        """Names of the secrets that were given (at most one, once :func:`parse_settings` has passed)."""
        return [name for name in SECRET_NAMES if getattr(self, name)]


SECRET_NAMES = ("client_secret", "certificate", "service_account_key")


class SmtpSettings(msgspec.Struct, frozen=True, kw_only=True):
    """A portal's effective SMTP settings, without the password and secrets (which live encrypted beside it)."""

    host: str
    port: int
    sender_address: str
    sender_display_name: str
    credentials_user_name: str
    enable_ssl: bool
    enable_auth: bool
    use_ntlm: bool
    is_default: bool = False
    oauth2: OAuth2Settings | None = None
    """Set exactly when authentication is on and the method is OAuth 2.0."""

    @property
    def auth_method(self) -> AuthMethod:
        """Derived, not stored: ``useNtlm`` and ``oauth2`` already say it, and could otherwise disagree."""
        if self.oauth2 is not None:
            return AuthMethod.OAUTH2
        return AuthMethod.NTLM if self.use_ntlm else AuthMethod.PASSWORD


class SmtpSettingsInput(msgspec.Struct, frozen=True, kw_only=True):
    """A validated save request: the settings plus the password and OAuth 2.0 secrets as sent (``""`` when omitted)."""

    settings: SmtpSettings
    password: str
    secrets: OAuth2Secrets = msgspec.field(default_factory=OAuth2Secrets)


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
    "authMethod": ("auth_method", "AuthMethod", "method"),
    "oauth2": ("oauth2", "Oauth2", "oauth2"),
}

WIRE_NAMES = {attr: wire for wire, (attr, _, _) in _FIELDS.items() if attr and attr not in ("auth_method", "oauth2")}


def parse_settings(body: Any) -> SmtpSettingsInput:
    """Validate a decoded JSON body of ``POST /smtpsettings/smtp``.

    Raises:
        ValidationFailed: a field has the wrong type, length or range, or is unknown; or the OAuth 2.0
            settings are incomplete or do not fit the authentication method.
        BadArgument: a required value is empty (DocSpace's messages).
    """
    if not isinstance(body, dict):
        raise BadArgument("The request body must be a JSON object with the SMTP settings.")
    errors: dict[str, list[str]] = {}
    values: dict[str, Any] = {}
    oauth2: OAuth2Settings | None = None
    secrets = OAuth2Secrets()
    for name, value in body.items():
        if name not in _FIELDS:
            errors.setdefault(_pascal(name), []).append(f"The field {name} is not a property of SMTP settings.")
            continue
        attr, label, kind = _FIELDS[name]
        if kind == "oauth2":
            oauth2, secrets = _parse_oauth2(value, errors)
            continue
        problem, value = _check(kind, label, value)
        if problem:
            errors.setdefault(label, []).append(problem)
        elif attr:
            values[attr] = value
    sender = values.get("sender_address", "")
    if sender and "SenderAddress" not in errors and not valid_email(sender):
        errors["SenderAddress"] = ["The field SenderAddress must be a valid email address."]
    enable_auth = values.get("enable_auth", False)
    method = _auth_method(body, values, oauth2, errors)
    if errors:
        raise ValidationFailed(errors)

    settings = SmtpSettings(
        host=values.get("host", ""),
        port=values.get("port", DEFAULT_PORT),
        sender_address=sender,
        sender_display_name=values.get("sender_display_name", ""),
        credentials_user_name=values.get("credentials_user_name", "") if enable_auth else "",
        enable_ssl=values.get("enable_ssl", False),
        enable_auth=enable_auth,
        use_ntlm=enable_auth and method is AuthMethod.NTLM,
        oauth2=oauth2 if enable_auth and method is AuthMethod.OAUTH2 else None,
    )
    if not settings.host:
        raise BadArgument("Empty smtp host.")
    if not settings.sender_address:
        raise BadArgument("Empty sender address.")
    if enable_auth and not settings.credentials_user_name:
        raise BadArgument("Empty user name.")
    return SmtpSettingsInput(
        settings=settings,
        password=values.get("password", "") if enable_auth else "",
        secrets=secrets if settings.oauth2 is not None else OAuth2Secrets(),
    )


def _auth_method(
    body: dict[str, Any], values: dict[str, Any], oauth2: OAuth2Settings | None, errors: dict[str, list[str]]
) -> AuthMethod:
    """The method asked for, and the rules tying it to the other fields (added to ``errors``).

    Without ``authMethod`` it is DocSpace's choice: NTLM when ``useNtlm``, else password. With it,
    ``useNtlm`` may be left out, but if sent it must agree: a client sending both means one of them.
    """
    given = values.get("auth_method")
    if given is None:
        method = AuthMethod.NTLM if values.get("use_ntlm") else AuthMethod.PASSWORD
    else:
        method = AuthMethod(given)
        if "use_ntlm" in values and values["use_ntlm"] != (method is AuthMethod.NTLM):
            errors.setdefault("UseNtlm", []).append('The field UseNtlm must be true exactly when AuthMethod is "ntlm".')
    sent = body.get("oauth2") is not None
    if method is not AuthMethod.OAUTH2:
        if sent:
            errors.setdefault("Oauth2", []).append('The field Oauth2 must be null or left out unless AuthMethod is "oauth2".')
        return method
    if not values.get("enable_auth", False):
        errors.setdefault("AuthMethod", []).append('AuthMethod "oauth2" needs EnableAuth true: XOAUTH2 is a way to sign in.')
    if not sent:
        errors.setdefault("Oauth2", []).append('The field Oauth2 is required when AuthMethod is "oauth2".')
    if values.get("password"):
        errors.setdefault("CredentialsUserPassword", []).append(
            'The field CredentialsUserPassword must be empty when AuthMethod is "oauth2": the token takes its place.'
        )
    user = values.get("credentials_user_name", "")
    if oauth2 is not None and oauth2.provider in ("microsoft", "google") and user and not valid_email(user):
        errors.setdefault("CredentialsUserName", []).append(
            "The field CredentialsUserName must be the mailbox's email address for OAuth 2.0 with Microsoft 365 or Google."
        )
    return method


# wire name -> (attribute, PascalCase name after "Oauth2.", kind, longest value)
_OAUTH2_FIELDS: dict[str, tuple[str, str, str, int]] = {
    "provider": ("provider", "Provider", "provider", 0),
    "tenantId": ("tenant_id", "TenantId", "tenant", MAX_LENGTH),
    "clientId": ("client_id", "ClientId", "text", MAX_LENGTH),
    "clientSecret": ("client_secret", "ClientSecret", "secret", 4096),
    "certificate": ("certificate", "Certificate", "multiline", 32768),
    "serviceAccountKey": ("service_account_key", "ServiceAccountKey", "multiline", 32768),
    "tokenUrl": ("token_url", "TokenUrl", "url", 2048),
    "scope": ("scope", "Scope", "scope", 1024),
    # In every answer; a client sending an answer back may leave them in.
    "clientSecretStored": ("", "ClientSecretStored", "ignored", 0),
    "certificateStored": ("", "CertificateStored", "ignored", 0),
    "serviceAccountKeyStored": ("", "ServiceAccountKeyStored", "ignored", 0),
}
OAUTH2_WIRE_NAMES = {attr: wire for wire, (attr, _, _, _) in _OAUTH2_FIELDS.items() if attr}

# What each provider uses besides the secret: required fields and fields it has no use for.
_REQUIRED = {"microsoft": ("tenant_id", "client_id"), "google": (), "generic": ("client_id", "token_url")}
_UNUSED = {
    "microsoft": ("service_account_key",),
    "google": ("tenant_id", "client_id", "client_secret", "certificate"),
    "generic": ("tenant_id", "certificate", "service_account_key"),
}
# The secrets a provider can sign in with, the first being the one a missing-secret error names.
CREDENTIALS = {
    "microsoft": ("client_secret", "certificate"),
    "google": ("service_account_key",),
    "generic": ("client_secret",),
}

# A directory (tenant) ID or a verified domain; it goes into the token URL's path, so nothing else.
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*")
# RFC 6749 3.3: scope tokens are printable ASCII without space, '"' and '\', separated by spaces.
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+( [\x21\x23-\x5b\x5d-\x7e]+)*")
# In a PEM file or a JSON key, line breaks and tabs are layout; any other control character is damage.
_CONTROL_BUT_LAYOUT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")


def oauth2_label(attr: str) -> str:
    """The validation-error key of an ``oauth2`` field: ``client_id`` -> ``Oauth2.ClientId``."""
    wire = OAUTH2_WIRE_NAMES[attr]
    return "Oauth2." + _OAUTH2_FIELDS[wire][1]


def _parse_oauth2(value: Any, errors: dict[str, list[str]]) -> tuple[OAuth2Settings | None, OAuth2Secrets]:
    """The ``oauth2`` object: its settings and secrets, or ``None`` with its problems added to ``errors``."""
    if value is None:
        return None, OAuth2Secrets()
    if not isinstance(value, dict):
        errors.setdefault("Oauth2", []).append("The field Oauth2 must be an object.")
        return None, OAuth2Secrets()
    found: dict[str, list[str]] = {}
    values: dict[str, str] = {}
    for name, item in value.items():
        if name not in _OAUTH2_FIELDS:
            found.setdefault("Oauth2." + _pascal(name), []).append(
                f"The field oauth2.{name} is not a property of the OAuth 2.0 settings."
            )
            continue
        attr, pascal, kind, longest = _OAUTH2_FIELDS[name]
        label = "Oauth2." + pascal
        problem, item = _check_oauth2_field(kind, label, item, longest)
        if problem:
            found.setdefault(label, []).append(problem)
        elif attr:
            values[attr] = item
    provider = values.get("provider", "")
    if not provider and "Oauth2.Provider" not in found:
        found["Oauth2.Provider"] = ["The field Oauth2.Provider is required: microsoft, google or generic."]
    if provider:
        for attr in _REQUIRED[provider]:
            if not values.get(attr) and oauth2_label(attr) not in found:
                found[oauth2_label(attr)] = [f'The field {oauth2_label(attr)} is required for provider "{provider}".']
        for attr in _UNUSED[provider]:
            if values.get(attr):
                found.setdefault(oauth2_label(attr), []).append(
                    f'The field {oauth2_label(attr)} is not used with provider "{provider}": leave it empty.'
                )
        if values.get("client_secret") and values.get("certificate") and provider == "microsoft":
            found.setdefault("Oauth2.Certificate", []).append(
                "Give either Oauth2.ClientSecret or Oauth2.Certificate, not both."
            )
    # Read as the token request will read them, so a credential that cannot be used is refused on save.
    for attr, check in (("certificate", certificate_problem), ("service_account_key", service_account_key_problem)):
        if values.get(attr) and oauth2_label(attr) not in found:
            problem = check(values[attr])
            if problem:
                found[oauth2_label(attr)] = [f"The field {oauth2_label(attr)} cannot be used: {problem}."]
    if found:
        errors.update(found)
        return None, OAuth2Secrets()
    settings = OAuth2Settings(
        provider=provider,
        tenant_id=values.get("tenant_id", ""),
        client_id=values.get("client_id", ""),
        token_url=values.get("token_url", ""),
        scope=values.get("scope", ""),
    )
    secrets = OAuth2Secrets(**{name: values.get(name, "") for name in SECRET_NAMES})
    return settings, secrets


def _check_oauth2_field(kind: str, label: str, value: Any, longest: int) -> tuple[str | None, Any]:
    if kind == "ignored":
        return None, None
    if value is None:
        return None, ""
    if not isinstance(value, str):
        return f"The field {label} must be a string.", None
    if kind == "provider":
        if value and value not in PROVIDERS:
            return f"The field {label} must be one of microsoft, google, generic.", None
        return None, value
    if len(value) > longest:
        return f"The field {label} must be a string with a maximum length of {longest}.", None
    if (_CONTROL_BUT_LAYOUT if kind == "multiline" else _CONTROL).search(value):
        return f"The field {label} must not contain control characters.", None
    if kind in ("secret", "multiline"):
        return None, value  # as sent: a secret is never trimmed into another one
    value = value.strip()
    if not value:
        return None, value
    if kind == "tenant" and not _TENANT.fullmatch(value):
        return (
            f"The field {label} must be a directory (tenant) ID or domain,"
            " like 00000000-0000-0000-0000-000000000000 or contoso.onmicrosoft.com.",
            None,
        )
    if kind == "scope" and not _SCOPE.fullmatch(value):
        return f"The field {label} must be scope names separated by single spaces.", None
    if kind == "url":
        problem = check_token_url(value)
        if problem:
            return f"The field {label} must be an https:// URL: {problem}.", None
    return None, value


def _check(kind: str, label: str, value: Any) -> tuple[str | None, Any]:
    if kind == "ignored":
        return None, None
    if kind == "method":
        if value is None:
            return None, None
        if value not in tuple(AuthMethod):
            return f"The field {label} must be one of password, ntlm, oauth2.", None
        return None, value
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


def has_control_characters(value: str) -> bool:
    """Whether ``value``, or the decoded text of an RFC 2047 encoded word in it, holds a control character.

    The rule the settings' strings follow, public so that other header values (the outbox's subject) are
    held to the same one rather than a copy of it.
    """
    return bool(_CONTROL.search(value)) or any(_CONTROL.search(text) for text in _encoded_word_texts(value))


def _pascal(name: str) -> str:
    return name[:1].upper() + name[1:] if name else "(empty)"


class SecretAction(enum.Enum):
    SET = "set"  # store the secret that was sent
    KEEP = "keep"  # keep the stored ciphertext
    CLEAR = "clear"  # not in use: store none


PasswordAction = SecretAction  # the password is the first of the secrets


def _same_target(new: SmtpSettings, stored: SmtpSettings | None) -> bool:
    """Whether a stored secret may go where ``new`` would send it: same server, port and user, and for
    OAuth 2.0 also the same provider, tenant, client and token URL (the endpoint that receives the secret)."""
    if stored is None or not stored.enable_auth:
        return False
    if (stored.host.lower(), stored.port, stored.credentials_user_name) != (
        new.host.lower(),
        new.port,
        new.credentials_user_name,
    ):
        return False
    if new.oauth2 is None:
        return True
    old = stored.oauth2
    return old is not None and (old.provider, old.tenant_id, old.client_id, old.token_url) == (
        new.oauth2.provider,
        new.oauth2.tenant_id,
        new.oauth2.client_id,
        new.oauth2.token_url,
    )


def decide_password(new: SmtpSettingsInput, stored: SmtpSettings | None, stored_has_password: bool) -> SecretAction:
    """What to do with the password on save.

    A password omitted on save keeps the stored one only when host, port and user name are unchanged:
    otherwise an admin, or someone with a stolen admin session, could point the stored secret at a host
    they control. With OAuth 2.0 no password is used, so none is kept.
    """
    if not new.settings.enable_auth or new.settings.oauth2 is not None:
        return SecretAction.CLEAR
    if new.password:
        return SecretAction.SET
    if stored_has_password and stored is not None and stored.oauth2 is None and _same_target(new.settings, stored):
        return SecretAction.KEEP
    raise BadArgument("Empty password.")


_KEPT_WHILE = (
    "a stored one is kept only while host, port, user name, provider, tenant, client ID and token URL stay the same"
)
_MISSING_SECRET = {
    "microsoft": f"Empty Oauth2.ClientSecret: give the client secret or a certificate (Oauth2.Certificate); {_KEPT_WHILE}.",
    "google": f"Empty Oauth2.ServiceAccountKey: give the service account's JSON key; {_KEPT_WHILE}.",
    "generic": f"Empty Oauth2.ClientSecret: give the client secret; {_KEPT_WHILE}.",
}


def decide_secrets(
    new: SmtpSettingsInput, stored: SmtpSettings | None, stored_secrets: Iterable[str]
) -> dict[str, SecretAction]:
    """What to do with each OAuth 2.0 secret on save (and on a test of unsaved settings), by name.

    The password's rule, extended: a secret sent is set and the provider's other kinds are cleared (one
    credential at a time); an omitted one keeps the stored credential only while nothing it would be sent
    to has changed. ``stored_secrets`` names the secrets stored now.

    Raises:
        ValidationFailed: no secret was sent and none may be kept; keyed by the field to fill in.
    """
    actions = dict.fromkeys(SECRET_NAMES, SecretAction.CLEAR)
    oauth2 = new.settings.oauth2
    if oauth2 is None:
        return actions
    sent = new.secrets.sent()
    if sent:
        actions[sent[0]] = SecretAction.SET
        return actions
    if _same_target(new.settings, stored):
        kept = next((name for name in CREDENTIALS[oauth2.provider] if name in set(stored_secrets)), None)
        if kept is not None:
            actions[kept] = SecretAction.KEEP
            return actions
    raise ValidationFailed({oauth2_label(CREDENTIALS[oauth2.provider][0]): [_MISSING_SECRET[oauth2.provider]]})


def changed_fields(
    before: SmtpSettings, after: SmtpSettings, *, password_changed: bool, secrets_changed: Iterable[str] = ()
) -> list[str]:
    """Wire names of the fields whose values differ (never the values: the audit log must hold no secret).

    OAuth 2.0 fields are named as ``oauth2.clientId``; ``secrets_changed`` names secrets by attribute.
    ``authMethod`` is named when OAuth 2.0 is turned on or off.
    """
    names = [wire for attr, wire in WIRE_NAMES.items() if attr != "password" and getattr(before, attr) != getattr(after, attr)]
    if (before.oauth2 is None) != (after.oauth2 is None):  # between password and NTLM, useNtlm says it
        names.append("authMethod")
    empty = OAuth2Settings(provider="")
    old, new = before.oauth2 or empty, after.oauth2 or empty
    names += [
        f"oauth2.{wire}"
        for attr, wire in OAUTH2_WIRE_NAMES.items()
        if attr not in SECRET_NAMES and getattr(old, attr) != getattr(new, attr)
    ]
    if password_changed:
        names.append("credentialsUserPassword")
    changed = set(secrets_changed)
    names += [f"oauth2.{OAUTH2_WIRE_NAMES[name]}" for name in SECRET_NAMES if name in changed]
    return names
