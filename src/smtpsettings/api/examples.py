"""Realistic example values for the OpenAPI document, one or more for each schema and request body.

Without them the API page (Swagger UI) makes up values from the schemas' patterns and types, which the
server refuses ("Try it out" on the save answered four field errors). Every request example is one the
server accepts, and every answer example is what it does answer: a test sends the former to a running
server and validates the latter against their schemas.
"""

from __future__ import annotations

from typing import Any

__all__ = ("REQUEST_EXAMPLES", "SCHEMA_EXAMPLES", "error_example")

_WHEN = "2026-12-07T10:15:00+00:00"
_LINK = {"href": "https://docs.example.com/api/2.0/smtpsettings/smtp", "action": "GET"}

PASSWORD_SETTINGS: dict[str, Any] = {
    "host": "smtp.example.com",
    "port": 587,
    "senderAddress": "docspace@example.com",
    "senderDisplayName": "Example DocSpace",
    "credentialsUserName": "docspace@example.com",
    "credentialsUserPassword": "app-password-Zq9x",
    "enableSSL": True,
    "enableAuth": True,
    "useNtlm": False,
    "authMethod": "password",
}
_OAUTH2 = {
    "provider": "microsoft",
    "tenantId": "contoso.onmicrosoft.com",
    "clientId": "6731de76-14a6-49ae-97bc-6eba6914391e",
    "clientSecret": "Qx48Q~client-secret-value",
}
OAUTH2_SETTINGS: dict[str, Any] = {
    "host": "smtp.office365.com",
    "port": 587,
    "senderAddress": "noreply@contoso.com",
    "senderDisplayName": "Contoso DocSpace",
    "credentialsUserName": "noreply@contoso.com",
    "enableSSL": True,
    "enableAuth": True,
    "authMethod": "oauth2",
    "oauth2": _OAUTH2,
}
NTLM_SETTINGS: dict[str, Any] = PASSWORD_SETTINGS | {
    "host": "mail.corp.example.com",
    "port": 25,
    "credentialsUserName": "CORP\\docspace",
    "useNtlm": True,
    "authMethod": "ntlm",
}
_SETTINGS_ANSWER = PASSWORD_SETTINGS | {"credentialsUserPassword": "", "isDefaultSettings": False, "oauth2": None}
SIGN_IN: dict[str, Any] = {"userName": "admin@example.com", "password": "correct horse battery staple"}
MESSAGE: dict[str, Any] = {
    "to": ["ann@example.com"],
    "cc": [],
    "bcc": ["archive@example.com"],
    "replyTo": "support@example.com",
    "subject": "Your room was shared with you",
    "text": "Open it at https://docs.example.com/rooms/42",
    "html": '<p>Open it <a href="https://docs.example.com/rooms/42">here</a></p>',
}
_TEXT_MESSAGE = {"to": ["ann@example.com"], "subject": "Welcome to DocSpace", "text": "Your account is ready."}
_DELIVERED = {
    "id": "0193a4f2-7c1e-7b3a-9d52-4e8f0c6b21d7",
    "status": "sent",
    "to": ["ann@example.com"],
    "cc": [],
    "subject": "Your room was shared with you",
    "attempts": 1,
    "createdAt": _WHEN,
    "nextAttemptAt": None,
    "sentAt": "2026-12-07T10:15:01+00:00",
    "lastError": None,
    "smtpReply": "250 2.0.0 Ok: queued as 4RZk1x3Lq9z",
    "messageId": "<0193a4f2-7c1e-7b3a-9d52-4e8f0c6b21d7@example.com>",
    "recipients": [{"address": "ann@example.com", "status": "accepted", "reply": "250 2.0.0 Ok: queued as 4RZk1x3Lq9z"}],
}
_DEFERRED = _DELIVERED | {
    "id": "0193a4f3-1a20-7c44-8e1b-52d9a0f3c8e2",
    "status": "deferred",
    "to": ["carol@example.org"],
    "subject": "Password reset",
    "nextAttemptAt": "2026-12-07T10:16:00+00:00",
    "sentAt": None,
    "lastError": "Recipient deferred: 451 4.7.1 Greylisted, try again later",
    "smtpReply": "451 4.7.1 Greylisted, try again later",
    "messageId": "<0193a4f3-1a20-7c44-8e1b-52d9a0f3c8e2@example.com>",
    "recipients": [
        {"address": "carol@example.org", "status": "deferred", "reply": "451 4.7.1 Greylisted, try again later"}
    ],
}
_DETAILS = [
    {"step": "Connect to host", "message": "Connected to 203.0.113.25:587 (TCP)", "elapsed_ms": 12.4, "level": "info"},
    {"step": "Connect to host", "message": "STARTTLS: TLSv1.3, certificate valid", "elapsed_ms": 31.0, "level": "info"},
    {"step": "Authenticate", "message": "Authenticated with PLAIN: 235 2.7.0 Authentication successful", "elapsed_ms": 48.2, "level": "info"},
    {"step": "Send test message", "message": "Message accepted: 250 2.0.0 Ok: queued", "elapsed_ms": 20.7, "level": "info"},
]
_TRANSCRIPT = [
    "S: 220 smtp.example.com ESMTP",
    "C: EHLO docs.example.com",
    "S: 250-smtp.example.com",
    "S: 250 STARTTLS",
    "C: STARTTLS",
    "S: 220 2.0.0 Ready to start TLS",
    "C: AUTH PLAIN ***",
    "S: 235 2.7.0 Authentication successful",
]
_ERROR_INFO = {"message": "Not authenticated", "type": "AuthenticationException", "stack": None, "hresult": 0}
_PROBLEM = {
    "type": "https://tools.ietf.org/html/rfc9110#section-15.5.1",
    "title": "One or more validation errors occurred.",
    "status": 400,
    "errors": {"Port": ["The field Port must be between 1 and 65535."]},
    "traceId": "72290fa7963b49d8",
}
_DEEP_LINK = {"androidPackageName": None, "url": None, "iosPackageId": None}
_HASHER = {"size": 256, "iterations": 100000, "salt": "5b0e3f1c9a7d4e2b8c6f0a1d3e5b7c9f"}

SCHEMA_EXAMPLES: dict[str, list[Any]] = {
    "SmtpSettingsDto": [PASSWORD_SETTINGS, OAUTH2_SETTINGS, NTLM_SETTINGS],
    "SmtpSettingsAnswerDto": [_SETTINGS_ANSWER],
    "SmtpOAuth2Settings": [_OAUTH2],
    "SmtpOperationStatusRequestsDto": [
        {
            "id": "8f14e45f-ceea-467f-a0e6-1f9c4d0b2e31",
            "completed": True,
            "percents": 100,
            "status": "Completed",
            "error": "",
            "details": _DETAILS,
            "transcript": _TRANSCRIPT,
            "recipient": "it-team@example.com",
        },
        {
            "id": "c9f0f895-fb98-4b91-9a0e-2d1c5b7e3a40",
            "completed": True,
            "percents": 60,
            "status": "Authenticate",
            "error": "Authentication failed: 535 5.7.8 bad credentials",
            "details": [],
            "transcript": [],
            "recipient": "admin@example.com",
        },
    ],
    "SmtpAuditEntry": [
        {
            "action": "save",
            "userEmail": "admin@example.com",
            "changedFields": ["host", "port", "credentialsUserPassword"],
            "clientAddress": "203.0.113.7",
            "createdAt": _WHEN,
        }
    ],
    "OutgoingMessageRequestDto": [MESSAGE, _TEXT_MESSAGE],
    "OutgoingMessageDto": [_DELIVERED, _DEFERRED],
    "OutgoingMessageRecipientDto": [_DELIVERED["recipients"][0]],
    "AuthRequestsDto": [SIGN_IN],
    "ConfirmData": [{"email": "ann@example.com", "first": False, "key": "e3b0c44298fc1c14"}],
    "AuthenticationTokenDto": [{"token": "HsWKdamtDIa4JMcIggyNV2KSh6dzVSG2seTBENJY8fk", "expires": "2026-12-21T10:15:00+00:00"}],
    "SettingsDto": [
        {"culture": "en-US", "baseDomain": None, "cookieSettingsEnabled": False, "deepLink": _DEEP_LINK, "passwordHash": _HASHER}
    ],
    "DeepLinkDto": [_DEEP_LINK],
    "PasswordHasher": [_HASHER],
    "Link": [_LINK],
    "ErrorInfo": [_ERROR_INFO],
    "Error": [{"error": _ERROR_INFO, "status": 1, "statusCode": 401}],
    "ValidationProblemDetails": [_PROBLEM],
    "ValidationError": [
        {
            "response": _PROBLEM,
            "count": 1,
            "links": [_LINK | {"action": "POST"}],
            "status": 1,
            "statusCode": 400,
            "error": {"message": "The field Port must be between 1 and 65535.", "type": "ArgumentException", "stack": None, "hresult": 0},
        }
    ],
    "HealthWrapper": [{"response": "ok", "count": 1, "status": 0, "statusCode": 200}],
}
"""Examples by component schema name. The success envelopes (``…Wrapper``) have none of their own: the API
page composes theirs from the examples of what they wrap."""

REQUEST_EXAMPLES: dict[str, dict[str, dict[str, Any]]] = {
    "SmtpSettingsDto": {
        "password": {"summary": "A login and password, STARTTLS on port 587", "value": PASSWORD_SETTINGS},
        "oauth2": {"summary": "Microsoft 365 over OAuth 2.0 (a client secret)", "value": OAUTH2_SETTINGS},
        "ntlm": {"summary": "An Exchange server with NTLM", "value": NTLM_SETTINGS},
    },
    "AuthRequestsDto": {"password": {"summary": "An email and a password", "value": SIGN_IN}},
    "OutgoingMessageRequestDto": {
        "text": {"summary": "A plain-text message", "value": _TEXT_MESSAGE},
        "full": {"summary": "Text and HTML, with Bcc and Reply-To", "value": MESSAGE},
    },
}
"""Named examples of each request body, by its schema: the API page offers them in a list."""

# What the server answers with each error status, as one example each (the message varies with the cause).
_ERRORS: dict[int, tuple[str, str]] = {
    401: ("Not authenticated", "AuthenticationException"),
    403: ("Access denied", "SecurityException"),
    404: ("No portal answers this host name.", "ItemNotFoundException"),
    406: (
        "The Accept header admits no type this API can answer with (application/json, text/json, text/plain).",
        "NotAcceptableException",
    ),
    408: ("The request body did not arrive within 10 seconds.", "RequestTimeoutException"),
    409: (
        "A test mail is already being sent for this portal; try again when it has finished (at the latest"
        " 2026-12-07T10:16:00Z).",
        "ConflictException",
    ),
    413: ("The request body is too large.", "PayloadTooLargeException"),
    415: ("Unsupported content type 'text/plain': send the body as application/json.", "UnsupportedMediaTypeException"),
    429: ("Too many failed sign-in attempts. Try again later.", "TooManyRequestsException"),
    503: ("The database did not answer in time; try again.", "ServiceUnavailable"),
}


def error_example(status: int) -> dict[str, Any]:
    """The error envelope as the server answers it with ``status`` (400: with the validation details)."""
    if status == 400:
        return dict(SCHEMA_EXAMPLES["ValidationError"][0])
    message, error_type = _ERRORS[status]
    return {"error": {"message": message, "type": error_type, "stack": None, "hresult": 0}, "status": 1, "statusCode": status}
