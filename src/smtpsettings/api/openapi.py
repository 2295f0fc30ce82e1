"""The OpenAPI 3.1 document of this API.

Written out by hand rather than derived from handlers: the handlers parse bodies themselves (to answer
with DocSpace's error shapes), and the schemas must match the official DocSpace SDK's models field for
field — names, types, the 255-character limits and the port range — which a test checks.

Every status an operation can answer is declared with its body, because generated clients and fuzzers
(the test suite runs schemathesis against this document) treat an undeclared one as a broken contract.
"""

from __future__ import annotations

from typing import Any

from smtpsettings.api.errors import VALIDATION_TYPE
from smtpsettings.api.examples import REQUEST_EXAMPLES, SCHEMA_EXAMPLES, error_example
from smtpsettings.api.messages import DEFAULT_PAGE, MAX_PAGE
from smtpsettings.api.messages import PATH as MESSAGES
from smtpsettings.domain.outbox import MAX_RECIPIENTS, MAX_SUBJECT_LENGTH, RECIPIENT_STATUSES
from smtpsettings.domain.smtp import MAX_LENGTH
from smtpsettings.services.outbox import MAX_IDEMPOTENCY_KEY
from smtpsettings.store.outbox import IDEMPOTENCY_WINDOW, STATUSES

__all__ = ("openapi_document",)

SMTP_TAG = "Security / SMTP settings"
AUTH_TAG = "Authentication"
SETTINGS_TAG = "Settings / Common settings"
MESSAGES_TAG = "Outgoing mail"

# What the server accepts as a host, and so what answers carry: an RFC 1123 host name, an IPv4 address, an
# international name (checked by IDNA 2008 on save, stored as typed), an IPv6 address, bare or in brackets,
# or an IPv4 address in brackets. (An answer carries "" when neither the portal nor the server has a host:
# SmtpSettingsAnswerDto allows it, this pattern does not, or fuzzers would build their requests on it.) A
# pattern rather than ``format: hostname``,
# which leaves out IP addresses and international names. The first branches are the common forms, spelt
# exactly, so that fuzzers and generated examples give mostly values the server accepts rather than random
# strings it refuses before doing anything with them; the international branch is the lenient superset
# that every name the server stores (so every answer) matches.
_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_TOP_LABEL = "[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"  # not all digits: that would be an IPv4 attempt
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = rf"(?:{_OCTET}\.){{3}}{_OCTET}"
_INTERNATIONAL_LABEL = r"[^\x00-\x2c\x2e\x2f\x3a-\x40\x5b-\x60\x7b-\xa0]+"  # letters, digits, '-', non-ASCII
_H16 = "[0-9A-Fa-f]{1,4}"
_IPV6 = rf"(?:(?:{_H16}:){{7}}{_H16}|(?:{_H16}(?::{_H16}){{0,5}})?::(?:{_H16}(?::{_H16}){{0,5}})?|::ffff:{_IPV4})"
HOST_PATTERN = "|".join(
    (
        rf"^(?:{_LABEL}\.)*{_TOP_LABEL}$",
        rf"^{_IPV4}$",
        rf"^{_IPV6}$",
        rf"^\[(?:{_IPV6}|{_IPV4})\]$",
        rf"^{_INTERNATIONAL_LABEL}(?:\.{_INTERNATIONAL_LABEL})*$",
    )
)
# A boolean query parameter as the server reads it (api/settings.py): either word in any case, or nothing.
_LENIENT_BOOLEAN = r"^[ \t\n\v\f\r]*(?:[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])?[ \t\n\v\f\r]*$"
# The server refuses control characters (C0, DEL, C1, U+2028/2029) in every text field but the password.
NO_CONTROL_PATTERN = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*$"
# A recipient as the server reads it (domain/outbox.py): a bare local@domain. The first branch is the common
# form, spelt exactly, so that fuzzers mostly give addresses the server takes; the second is the lenient
# superset every address it takes matches (UTF-8 local parts, international domains), and no more lenient
# than that, so that what it leaves out the server refuses: exactly one @, no angle brackets, no white
# space or control characters.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ADDRESS_BRANCHES = (
    rf"^{_ATOM}(?:\.{_ATOM})*@(?:{_LABEL}\.)*{_TOP_LABEL}$",
    r"^[^@<>\x00-\x20\x7f-\xa0]+@[^@<>\x00-\x20\x7f-\xa0]+$",
)
ADDRESS_PATTERN = "|".join(_ADDRESS_BRANCHES)
# As the server reads a page's count and startIndex (api/messages.py): ASCII digits, blanks and tabs around
# them, leading zeros allowed; empty is the same as not given.
_COUNT_PATTERN = r"^(?:[ \t]*0*(?:1000|[1-9][0-9]{0,2})[ \t]*)?$"
_START_INDEX_PATTERN = r"^(?:[ \t]*(?:0*1000000000|0*[1-9][0-9]{0,8}|0+)[ \t]*)?$"
# The Idempotency-Key header: printable ASCII without spaces; HTTP drops blanks around a header's value,
# and an empty value is the same as none.
_IDEMPOTENCY_KEY_PATTERN = rf"^[ \t]*[!-~]{{0,{MAX_IDEMPOTENCY_KEY}}}[ \t]*$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _string(description: str, *, limited: bool = True, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": ["string", "null"], "description": description}
    if limited:
        schema.update(minLength=0, maxLength=MAX_LENGTH)
    return schema | extra


def _ignored(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return schema | {"description": f"{description} Accepted and ignored."}


def _never(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return schema | {"description": f"{description} Never sent by this server."}


def _wrapper(response: dict[str, Any], *, response_always: bool = True) -> dict[str, Any]:
    """DocSpace's success envelope around ``response`` (left out when there is nothing to answer)."""
    required = ["count", "links", "status", "statusCode"]
    return {
        "type": "object",
        "properties": {
            "response": response,
            "count": {"type": "integer", "format": "int32", "minimum": 0, "examples": [1]},
            "links": {"type": "array", "items": _ref("Link")},
            "status": {"type": "integer", "format": "int32", "const": 0},
            "statusCode": {"type": "integer", "format": "int32", "examples": [200]},
        },
        "required": ["response", *required] if response_always else required,
    }


_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds after which a retry can succeed.", "schema": {"type": "integer", "minimum": 0}}
}


def _error(status: int, description: str, *, schema: str = "Error", retry_after: bool = False) -> dict[str, Any]:
    content = _json(_ref(schema))
    content["application/json"]["example"] = error_example(status)
    response: dict[str, Any] = {"description": description, "content": content}
    if retry_after:
        response["headers"] = _RETRY_AFTER
    return response


# Every error answer is the DocSpace error envelope; 400 may also carry the validation details.
_ERRORS: dict[str, dict[str, Any]] = {
    "400": _error(
        400,
        "Bad argument (the error envelope), or field validation failed: then, as in DocSpace, the success"
        " envelope with `status` 1 whose `response` is the ValidationProblemDetails, and (ours) `error` beside.",
        schema="ValidationError",
    ),
    "401": _error(401, "Not authenticated: no credentials, or none valid on this portal"),
    "403": _error(403, "Access denied (not the owner or an admin)"),
    "404": _error(404, "No portal answers this Host (and there is no default portal)"),
    "406": _error(406, "The Accept header admits none of application/json, text/json, text/plain"),
    "409": _error(409, "A test mail is already being sent for this portal"),
    "408": _error(408, "The announced body did not arrive within the server's timeout (10 s by default)"),
    "413": _error(413, "The request body is over the server's limit (64 KiB by default)"),
    "415": _error(415, "The body is not JSON (application/json, text/json, application/*+json), or its charset is not UTF-8"),
    "429": _error(429, "A rate limit", retry_after=True),
    "503": _error(503, "The database did not answer in time; retry after Retry-After seconds", retry_after=True),
}

_TOO_MANY_SIGN_INS = "Too many failed sign-ins for the account or the client address"
_BASIC_LIMIT = "Too many failed sign-ins (Basic credentials are checked like a sign-in), or wrong keys with this API key's id"
_TEST_LIMIT = "The user's test-mail limit (5 per 15 minutes by default) is used up, or too many failed sign-ins"
_QUEUE_FULL = (
    "The portal's outbox is full: its unsent (queued, deferred or sending) messages are at the limit (10,000"
    " by default), or this message would take their size past it (1 GiB by default); nothing was accepted."
    " Or too many failed sign-ins"
)

# What every authenticated call of the JSON API can answer besides its own errors.
_JSON_API = ("404", "406", "503")
_MANAGER = ("401", "403", *_JSON_API)
_BODY = ("400", "408", "413", "415")


def _op(
    op_id: str,
    summary: str,
    wrapper: str,
    errors: tuple[str, ...],
    *,
    body: str | None = None,
    tag: str = SMTP_TAG,
    too_many: str | None = _BASIC_LIMIT,
    security: list[dict[str, list[str]]] | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": "OK", "content": _json(_ref(wrapper))}}
    statuses = sorted({*errors, *(("429",) if too_many else ())})
    for status in statuses:
        responses[status] = _ERRORS[status] | ({"description": too_many} if status == "429" and too_many else {})
    operation: dict[str, Any] = {"operationId": op_id, "summary": summary, "tags": [tag], "responses": responses}
    if body:
        content = _json(_ref(body))
        content["application/json"]["examples"] = REQUEST_EXAMPLES[body]
        operation["requestBody"] = {"required": True, "content": content}
    if security is not None:
        operation["security"] = security
    return operation


_TEST_RECIPIENT: dict[str, Any] = {
    "name": "to",
    "in": "query",
    "required": False,
    "description": "(ours) Send the test mail to this address instead of the caller's own; one bare address"
    " (an international domain is accepted), else 400 naming `to`. Absent or empty: the caller's address.",
    # Empty is allowed and means absent (an HTML form sends its empty field so).
    "schema": {"anyOf": [{"type": "string", "format": "email"}, {"type": "string", "maxLength": 0}]},
}


_SCHEMES: list[dict[str, list[str]]] = [{"asc_auth_key": []}, {"Bearer": []}, {"ApiKeyBearer": []}, {"Basic": []}]


def _paths() -> dict[str, Any]:
    return {
        "/api/2.0/authentication": {
            "post": _op(
                "authenticateMe",
                "Sign in",
                "AuthenticationTokenWrapper",
                ("401", *_BODY, *_JSON_API),
                body="AuthRequestsDto",
                tag=AUTH_TAG,
                too_many=_TOO_MANY_SIGN_INS,
                security=[],
            ),
            # Credentials are optional here: without valid ones the answer is false, not 401.
            "get": _op(
                "getIsAuthentificated",
                "Is the caller signed in",
                "BooleanWrapper",
                _JSON_API,
                tag=AUTH_TAG,
                security=[{}, *_SCHEMES],
            ),
        },
        # As in DocSpace, 200 also without credentials, or with ones no longer valid: there is nothing to end.
        "/api/2.0/authentication/logout": {
            "post": _op(
                "logout",
                "Sign out (ends the session token presented, if any)",
                "StringWrapper",
                _JSON_API,
                tag=AUTH_TAG,
                too_many=None,
                security=[{}, *_SCHEMES],
            ),
        },
        "/api/2.0/settings": {
            "get": _op(
                "getPortalSettings",
                "The portal settings a sign-in page needs (passwordHash for callers not signed in, or with"
                " withpassword=true)",
                "SettingsWrapper",
                ("400", *_JSON_API),
                tag=SETTINGS_TAG,
                too_many=None,
                security=[],
            )
            | {
                "parameters": [
                    {
                        "name": "withpassword",
                        "in": "query",
                        "required": False,
                        "description": "Include passwordHash also for a signed-in caller (credentials are read"
                        " when sent, though none are needed). As ASP.NET reads a bool?: true or false in any case,"
                        " and empty is the same as not given.",
                        "schema": {
                            "anyOf": [{"type": "boolean"}, {"type": "string", "pattern": _LENIENT_BOOLEAN, "examples": ["true"]}]
                        },
                    }
                ]
            },
        },
        "/api/2.0/smtpsettings/smtp": {
            "get": _op("getSmtpSettings", "Get the SMTP settings", "SmtpSettingsWrapper", _MANAGER),
            "post": _op(
                "saveSmtpSettings", "Save the SMTP settings", "SmtpSettingsWrapper", (*_BODY, *_MANAGER), body="SmtpSettingsDto"
            ),
            "delete": _op(
                "resetSmtpSettings", "Reset the SMTP settings to the server default", "SmtpSettingsWrapper", _MANAGER
            ),
        },
        "/api/2.0/smtpsettings/smtp/test": {
            "get": _op(
                "testSmtpSettings",
                "Send a test mail with the stored settings (while one runs, its status)",
                "SmtpOperationStatusRequestsWrapper",
                ("400", *_MANAGER),
                too_many=_TEST_LIMIT,
            )
            | {"parameters": [_TEST_RECIPIENT]},
            "post": _op(
                "testUnsavedSmtpSettings",
                "(ours) Send a test mail with the settings in the body, without saving them",
                "SmtpOperationStatusRequestsWrapper",
                ("409", *_BODY, *_MANAGER),
                body="SmtpSettingsDto",
                too_many=_TEST_LIMIT,
            )
            | {"parameters": [_TEST_RECIPIENT]},
        },
        "/api/2.0/smtpsettings/smtp/test/status": {
            "get": _op(
                "getSmtpOperationStatus",
                "The portal's test-mail status (no `response` before the first test)",
                "SmtpOperationStatusRequestsWrapper",
                _MANAGER,
            ),
        },
        "/api/2.0/smtpsettings/smtp/audit": {
            "get": _op(
                "getSmtpSettingsHistory", "(ours) The portal's SMTP settings change log", "SmtpAuditWrapper", _MANAGER
            ),
        },
        **_message_paths(),
        "/api/2.0/health/live": {
            "get": {
                "operationId": "getLiveness",
                "summary": "(ours) Liveness for load balancers: the process answers (touches no database)",
                "tags": ["Health"],
                "security": [],
                "responses": {"200": {"description": "OK", "content": _json(_ref("HealthWrapper"))}},
            },
        },
        "/api/2.0/health/ready": {
            "get": {
                "operationId": "getReadiness",
                "summary": "(ours) Readiness for load balancers: a statement on the database succeeds in time",
                "tags": ["Health"],
                "security": [],
                "responses": {
                    "200": {"description": "OK", "content": _json(_ref("HealthWrapper"))},
                    "503": _error(503, "The database cannot be read, or did not answer within its timeout", retry_after=True),
                },
            },
        },
        "/metrics": {
            "get": {
                "operationId": "getMetrics",
                "summary": "(ours) Prometheus metrics: the outbox's queue by status, its counters and delivery latency",
                "description": "OpenMetrics when the Accept header asks for application/openmetrics-text, else"
                " Prometheus's text format 0.0.4. A database that cannot be read leaves out"
                " smtpsettings_outbox_messages and sets smtpsettings_database_up to 0; the scrape still succeeds.",
                "tags": ["Monitoring"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "The exposition",
                        "content": {
                            "text/plain": {"schema": {"type": "string"}},
                            "application/openmetrics-text": {"schema": {"type": "string"}},
                        },
                    }
                },
            },
        },
    }


_MESSAGE_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "The message's id, as the 202 answered it.",
    "schema": {"type": "string", "minLength": 1},
}
_SENDER_403 = "Access denied: not the owner, an admin or a send-only API key of theirs"
_NO_MESSAGE = "No portal answers this Host, or it has no such message (a send-only key sees only those it sent)"


def _described(operation: dict[str, Any], descriptions: dict[str, str]) -> dict[str, Any]:
    """``operation`` with the descriptions of some of its answers made specific to it."""
    for status, description in descriptions.items():
        operation["responses"][status] = operation["responses"][status] | {"description": description}
    return operation


def _message_paths() -> dict[str, Any]:
    """(ours) The portal's outgoing mail: accepted into the outbox, then sent by the dispatcher."""
    manager_only = "Access denied: not the owner or an admin (a send-only API key may not do this)"
    send = _described(
        _op(
            "sendMessage",
            "(ours) Accept a message for delivery, From the portal's sender, through its SMTP settings",
            "OutgoingMessageWrapper",
            (*_BODY, *_MANAGER),
            body="OutgoingMessageRequestDto",
            tag=MESSAGES_TAG,
            too_many=_QUEUE_FULL,
        ),
        {
            "400": "A field breaks a rule (field by field: To, Cc, Bcc, ReplyTo, Subject, Text, Html), the"
            " Idempotency-Key header is malformed, the body is not a JSON object, or the portal has no SMTP"
            " settings to send with",
            "403": _SENDER_403,
            "413": "The body or the message built from it is over the server's limit (10 MiB by default)",
        },
    )
    send["description"] = (
        "The answer comes once the message is committed to the outbox: a 202 is a promise to deliver it at"
        " least once (or to report it failed). The Message-ID is fixed now, so a second delivery after a crash"
        f" is recognisable downstream. At most {MAX_RECIPIENTS} distinct recipients in To, Cc and Bcc together."
    )
    # What a client (and a stateful fuzzer) can do next with the message it was answered.
    accepted = send["responses"].pop("200") | {
        "links": {
            link: {"operationId": operation_id, "parameters": {"id": "$response.body#/response/id"}}
            for link, operation_id in (
                ("GetMessage", "getMessage"),
                ("CancelMessage", "cancelMessage"),
                ("RetryMessage", "retryMessage"),
            )
        }
    }
    send["responses"] = {
        "202": accepted | {"description": "Accepted: the message is in the outbox with status queued"},
        "200": accepted
        | {
            "description": "The Idempotency-Key was used by this caller (the same API key, or the same user"
            " signed in) within the last"
            f" {int(IDEMPOTENCY_WINDOW.total_seconds() // 3600)} hours: that first message, as it is now"
            " (nothing new was accepted)"
        },
        **send["responses"],
    }
    send["parameters"] = [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "Any 1 to 255 printable ASCII characters without spaces, chosen by the client: the"
            " same key from the same caller (API key, or signed-in user) within 24 hours answers the first"
            " message (200) instead of accepting a second one; another caller's key of the same name is"
            " another message. Empty is the same as not sent.",
            "schema": {"type": "string", "pattern": _IDEMPOTENCY_KEY_PATTERN, "examples": ["welcome-ann-2026-12-07"]},
        }
    ]
    listing = _described(
        _op(
            "getMessages",
            "(ours) The portal's messages, newest first (a send-only key: those it sent)",
            "OutgoingMessageListWrapper",
            ("400", *_MANAGER),
            tag=MESSAGES_TAG,
        ),
        {"400": "status, count or startIndex is not valid (field by field)", "403": _SENDER_403},
    )
    listing["parameters"] = [
        {
            "name": "status",
            "in": "query",
            "required": False,
            "description": "Only the messages with this status; empty is the same as not given.",
            "schema": {"type": "string", "enum": ["", *STATUSES]},
        },
        {
            "name": "count",
            "in": "query",
            "required": False,
            "description": f"Messages on the page, 1 to {MAX_PAGE} ({DEFAULT_PAGE} when not given).",
            "schema": {
                "anyOf": [
                    {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                    {"type": "string", "pattern": _COUNT_PATTERN, "examples": ["20"]},
                ]
            },
        },
        {
            "name": "startIndex",
            "in": "query",
            "required": False,
            "description": "Messages to skip (0 when not given).",
            "schema": {
                "anyOf": [
                    {"type": "integer", "minimum": 0, "maximum": 10**9},
                    {"type": "string", "pattern": _START_INDEX_PATTERN, "examples": ["0"]},
                ]
            },
        },
    ]
    one = _described(
        _op("getMessage", "(ours) One message and its delivery status", "OutgoingMessageWrapper", _MANAGER, tag=MESSAGES_TAG),
        {"403": _SENDER_403, "404": _NO_MESSAGE},
    )
    cancel = _described(
        _op(
            "cancelMessage",
            "(ours) Cancel a queued or deferred message",
            "OutgoingMessageWrapper",
            ("409", *_MANAGER),
            tag=MESSAGES_TAG,
        ),
        {
            "403": manager_only,
            "404": _NO_MESSAGE,
            "409": "The message is not queued or deferred (it is being sent, or has been sent, failed or cancelled)",
        },
    )
    retry = _described(
        _op(
            "retryMessage",
            "(ours) Queue a failed message again, with a fresh retry horizon",
            "OutgoingMessageWrapper",
            ("409", *_MANAGER),
            tag=MESSAGES_TAG,
        ),
        {
            "403": manager_only,
            "404": _NO_MESSAGE,
            "409": "The message has not failed, or its body was deleted after the retention period",
        },
    )
    return {
        MESSAGES: {"post": send, "get": listing},
        MESSAGES + "/{id}": {"get": one | {"parameters": [_MESSAGE_ID]}, "delete": cancel | {"parameters": [_MESSAGE_ID]}},
        MESSAGES + "/{id}/retry": {"post": retry | {"parameters": [_MESSAGE_ID]}},
    }


def _settings_answer(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings as GET, POST and DELETE answer them: as saved, except that a portal without settings of
    its own answers the server's default, where host and senderAddress may be "" (none configured)."""
    properties = dict(settings["properties"])
    for name in ("host", "senderAddress"):
        saved = properties[name]
        properties[name] = {
            "anyOf": [{k: v for k, v in saved.items() if k != "description"}, {"const": ""}],
            "description": f'{saved["description"]} "" when neither the portal nor the server default has'
            " one.",
        }
    return settings | {
        "description": "(ours) The SMTP settings in an answer: the fields of SmtpSettingsDto, whose host and"
        ' senderAddress are "" when the portal has no settings of its own and the server default names'
        " none.",
        "properties": properties,
    }


def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "SmtpSettingsDto": {
            "type": "object",
            "description": "The SMTP settings parameters.",
            "properties": {
                "host": _string(
                    "The SMTP host: a host name (mail.example.com, or an international name), an IPv4 address or an"
                    " IPv6 address, bare or in brackets. Not a URL, and without a port (that is the port field).",
                    pattern=HOST_PATTERN,
                    examples=["smtp.example.com"],
                ),
                "port": {"type": ["integer", "null"], "format": "int32", "minimum": 1, "maximum": 65535, "description": "The SMTP port (default 25)."},
                "senderAddress": _string("The sender address.", format="email", examples=["docspace@example.com"]),
                "senderDisplayName": _string(
                    "The sender display name.", pattern=NO_CONTROL_PATTERN, examples=["Example DocSpace"]
                ),
                "credentialsUserName": _string(
                    "The credentials username.", pattern=NO_CONTROL_PATTERN, examples=["docspace@example.com"]
                ),
                "credentialsUserPassword": _string(
                    "The credentials user password. Write-only: responses carry an empty string.", limited=False
                ),
                "enableSSL": {"type": "boolean", "description": "Specifies whether the SSL is enabled or not."},
                "enableAuth": {"type": "boolean", "description": "Specifies whether the authentication is enabled or not."},
                "useNtlm": {"type": "boolean", "description": "Specifies whether to use NTLM or not."},
                "isDefaultSettings": {
                    "type": "boolean",
                    "readOnly": True,
                    "description": "Specifies if the current settings are default or not (ignored on input).",
                },
                "authMethod": {
                    "type": ["string", "null"],
                    "enum": ["password", "ntlm", "oauth2", None],
                    "description": "(ours) How the mailbox signs in (with enableAuth): password, NTLM or OAuth 2.0"
                    " (AUTH XOAUTH2). Left out or null: ntlm when useNtlm, else password, as DocSpace saves;"
                    " useNtlm, if sent too, must agree. Always in an answer.",
                },
                "oauth2": {
                    "anyOf": [_ref("SmtpOAuth2Settings"), {"type": "null"}],
                    "description": '(ours) The OAuth 2.0 settings, required with authMethod "oauth2" and refused'
                    " with any other; null in an answer unless OAuth 2.0 is in use.",
                },
            },
            # Saving or testing without them is refused ("Empty smtp host.", "Empty sender address.").
            "required": ["host", "senderAddress"],
            "additionalProperties": False,
        },
        "SmtpOAuth2Settings": {
            "type": "object",
            "description": "(ours) Where the access token for AUTH XOAUTH2 comes from. The user is credentialsUserName"
            " (the mailbox). Secrets are write-only: an answer carries \"\" and says which one is stored; a save"
            " that leaves them out keeps the stored one while host, port, user name, provider, tenant, client ID"
            " and token URL are unchanged.",
            "properties": {
                "provider": {"type": "string", "enum": ["microsoft", "google", "generic"]},
                "tenantId": _string("Microsoft: the directory (tenant) ID or domain. Required for microsoft."),
                "clientId": _string("The application (client) ID. Required for microsoft and generic."),
                "clientSecret": _string("Write-only. microsoft or generic: the client secret.", limited=False, maxLength=4096),
                "certificate": _string(
                    "Write-only. microsoft, instead of clientSecret: the certificate and its unencrypted RSA private key"
                    " in PEM (a signed client assertion).",
                    limited=False,
                    maxLength=32768,
                ),
                "serviceAccountKey": _string(
                    "Write-only. google: the service account's JSON key (JWT bearer grant, the mailbox as subject).",
                    limited=False,
                    maxLength=32768,
                ),
                "tokenUrl": _string(
                    "The token endpoint: https, or http to a loopback address. Required for generic; \"\" means the"
                    " provider's default for microsoft and google.",
                    limited=False,
                    maxLength=2048,
                ),
                "scope": _string("Space-separated scopes; \"\" means the provider's default.", limited=False, maxLength=1024),
                "clientSecretStored": {"type": "boolean", "readOnly": True, "description": "A client secret is stored."},
                "certificateStored": {"type": "boolean", "readOnly": True, "description": "A certificate is stored."},
                "serviceAccountKeyStored": {
                    "type": "boolean",
                    "readOnly": True,
                    "description": "A service account key is stored.",
                },
            },
            "required": ["provider"],
            "additionalProperties": False,
        },
        "SmtpSettingsWrapper": _wrapper(_ref("SmtpSettingsAnswerDto")),
        "SmtpOperationStatusRequestsDto": {
            "type": "object",
            "properties": {
                "completed": {"type": "boolean", "description": "Whether the test has finished."},
                # Nullable as in the SDK's model; this server always sends strings.
                "id": {"type": ["string", "null"], "description": "The test job's id."},
                "error": {"type": ["string", "null"], "description": "Empty, or one sentence saying what failed."},
                "status": {"type": ["string", "null"], "description": "The current step."},
                "percents": {"type": "integer", "format": "int32", "minimum": 0, "maximum": 100},
                "details": {
                    "type": "array",
                    "description": "(ours) Diagnostics of each step done.",
                    "items": {
                        "type": "object",
                        "properties": {
                            "step": {"type": "string"},
                            "message": {"type": "string"},
                            "elapsed_ms": {"type": ["number", "null"]},
                            "level": {"type": "string", "enum": ["info", "warning", "error"]},
                        },
                    },
                },
                "transcript": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "(ours) The SMTP dialogue, AUTH payloads and passwords replaced by ***.",
                },
                "startedAt": {"type": "string", "format": "date-time", "description": "(ours) When the test began."},
                "recipient": {
                    "type": "string",
                    "description": "(ours) Where the test mail goes: the address given as `to`, else the caller's own. "
                    "Empty for a test started before this was recorded.",
                },
            },
            "required": ["id", "completed", "percents", "status", "error"],
        },
        # No "response" before the portal's first test.
        "SmtpOperationStatusRequestsWrapper": _wrapper(_ref("SmtpOperationStatusRequestsDto"), response_always=False),
        "SmtpAuditEntry": {
            "type": "object",
            "properties": {
                "action": {"type": "string", "enum": ["save", "reset"]},
                "userEmail": {"type": "string"},
                "changedFields": {"type": "array", "items": {"type": "string"}},
                "clientAddress": {"type": "string"},
                "createdAt": {"type": "string", "format": "date-time"},
            },
        },
        "SmtpAuditWrapper": _wrapper({"type": "array", "items": _ref("SmtpAuditEntry")}),
        **_message_schemas(),
        "AuthRequestsDto": {
            "type": "object",
            "description": "The sign-in parameters, as in DocSpace's SDK. This server reads userName, password,"
            " passwordHash and session; the other fields are accepted and ignored (there is no third-party, OAuth,"
            " confirmation-link or CAPTCHA sign-in here).",
            "properties": {
                "userName": {"type": ["string", "null"], "description": "The email used for authentication."},
                "password": {"type": ["string", "null"], "description": "The password in plain text."},
                "passwordHash": {
                    "type": ["string", "null"],
                    "description": "Instead of the password: its hash, computed with the portal's passwordHash"
                    " settings (GET /api/2.0/settings), as DocSpace's sign-in page sends it. When given and not"
                    " blank it is used, also if a password is sent too.",
                },
                "provider": _ignored({"type": ["string", "null"]}, "The external authentication provider."),
                "accessToken": _ignored({"type": ["string", "null"]}, "An external provider's access token."),
                "serializedProfile": _ignored({"type": ["string", "null"]}, "An external provider's user profile."),
                "codeOAuth": _ignored({"type": ["string", "null"]}, "An OAuth authorization code."),
                "session": {
                    "type": "boolean",
                    "description": "Ask for a browser-session cookie; the answer then names no expiry.",
                },
                "confirmData": _ignored(_ref("ConfirmData"), "Confirmation-link data."),
                "recaptchaType": _ignored(
                    {"type": "integer", "enum": [0, 1, 2, 3]},
                    "The CAPTCHA kind (0 Default, 1 AndroidV2, 2 iOSV2, 3 hCaptcha).",
                ),
                "recaptchaResponse": _ignored({"type": ["string", "null"]}, "The answer to a CAPTCHA."),
                "culture": _ignored({"type": ["string", "null"]}, "The culture code."),
            },
        },
        "ConfirmData": {
            "type": "object",
            "properties": {
                "email": {"type": ["string", "null"]},
                "first": {"type": ["boolean", "null"]},
                "key": {"type": ["string", "null"]},
            },
        },
        "AuthenticationTokenDto": {
            "type": "object",
            "description": "The sign-in answer, as in DocSpace's SDK. This server answers token, and expires unless"
            " the sign-in asked for a session; it has no SMS or two-factor sign-in, so never sends the other fields.",
            "properties": {
                "token": {"type": ["string", "null"], "description": "The authentication token."},
                "expires": {
                    "type": "string",
                    "format": "date-time",
                    "description": "The token expiration time (left out for a session sign-in).",
                },
                "sms": _never({"type": "boolean"}, "Whether the code is sent by SMS."),
                "phoneNoise": _never({"type": ["string", "null"]}, "The masked phone number."),
                "tfa": _never({"type": "boolean"}, "Whether a two-factor application is used."),
                "tfaKey": _never({"type": ["string", "null"]}, "The two-factor key."),
                "confirmUrl": _never({"type": ["string", "null"]}, "The confirmation URL."),
            },
            "required": ["token"],
        },
        "AuthenticationTokenWrapper": _wrapper(_ref("AuthenticationTokenDto")),
        "BooleanWrapper": _wrapper({"type": "boolean"}),
        # Sign-out answers nothing: the envelope without "response" (count 0), as DocSpace's StringWrapper.
        "StringWrapper": _wrapper({"type": ["string", "null"]}, response_always=False),
        "SettingsDto": {
            "type": "object",
            "description": "Of DocSpace's portal settings, those its SDK requires and passwordHash, with values true"
            " of this service.",
            "properties": {
                "culture": {"type": ["string", "null"], "description": "The language."},
                "baseDomain": {
                    "type": ["string", "null"],
                    "description": "Null: each portal has a host name of its own.",
                },
                "cookieSettingsEnabled": {
                    "type": "boolean",
                    "description": "False: the session lifetime is server configuration, not a portal setting.",
                },
                "deepLink": _ref("DeepLinkDto"),
                "passwordHash": _ref("PasswordHasher"),
            },
            "required": ["culture", "baseDomain", "cookieSettingsEnabled", "deepLink"],
        },
        "DeepLinkDto": {
            "type": "object",
            "description": "Null values: there is no mobile app to open.",
            "properties": {
                "androidPackageName": {"type": ["string", "null"]},
                "url": {"type": ["string", "null"]},
                "iosPackageId": {"type": ["string", "null"]},
            },
            "required": ["androidPackageName", "url", "iosPackageId"],
        },
        "PasswordHasher": {
            "type": "object",
            "description": "How the sign-in page hashes a password for passwordHash (PBKDF2).",
            "properties": {
                "size": {"type": "integer", "description": "Bits of output."},
                "iterations": {"type": "integer"},
                "salt": {"type": ["string", "null"], "description": "The portal's salt (always sent)."},
            },
            "required": ["size", "iterations", "salt"],
        },
        "SettingsWrapper": _wrapper(_ref("SettingsDto")),
        "HealthWrapper": {
            "type": "object",
            "properties": {
                "response": {"const": "ok"},
                "count": {"type": "integer", "format": "int32"},
                "status": {"type": "integer", "format": "int32", "const": 0},
                "statusCode": {"type": "integer", "format": "int32"},
            },
            "required": ["response", "status", "statusCode"],
        },
        "Link": {"type": "object", "properties": {"href": {"type": "string"}, "action": {"type": "string"}}},
        "ErrorInfo": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "stack": {"type": "null", "description": "Always null: a stack trace never leaves the server."},
                "hresult": {"type": "integer"},
            },
            "required": ["message", "type", "stack", "hresult"],
        },
        "Error": {
            "type": "object",
            "description": "DocSpace's error envelope.",
            "properties": {
                "error": _ref("ErrorInfo"),
                "status": {"type": "integer", "const": 1},
                "statusCode": {"type": "integer"},
            },
            "required": ["error", "status", "statusCode"],
        },
        "ValidationProblemDetails": {
            "type": "object",
            "properties": {
                "type": {"type": "string", "const": VALIDATION_TYPE},
                "title": {"type": "string"},
                "status": {"type": "integer", "const": 400},
                "errors": {
                    "type": "object",
                    "description": "Messages by PascalCase property name, as DocSpace writes them.",
                    "additionalProperties": {"type": "array", "items": {"type": "string"}},
                },
                "traceId": {"type": "string", "description": "The request id, also sent as X-Request-Id and logged."},
            },
            "required": ["type", "title", "status", "errors"],
        },
        "ValidationError": {
            "description": "The error envelope; on field validation errors also DocSpace's shape for them: the success"
            " envelope's response (the details), count and links, with status 1.",
            "allOf": [
                _ref("Error"),
                {
                    "type": "object",
                    "properties": {
                        "response": _ref("ValidationProblemDetails"),
                        "count": {"type": "integer", "format": "int32", "const": 1},
                        "links": {"type": "array", "items": _ref("Link")},
                    },
                    "dependentRequired": {"response": ["count", "links"]},
                },
            ],
        },
    }
    schemas["SmtpSettingsAnswerDto"] = _settings_answer(schemas["SmtpSettingsDto"])
    for name, examples in SCHEMA_EXAMPLES.items():
        schemas[name]["examples"] = examples
    return schemas


def _address(description: str) -> dict[str, Any]:
    return {"type": "string", "pattern": ADDRESS_PATTERN, "description": description, "examples": ["ann@example.com"]}


def _address_list(description: str) -> dict[str, Any]:
    return {"type": ["array", "null"], "items": _address("A bare address, like ann@example.com."), "description": description}


# Every field of a message's answer is always there (null when it does not apply).
_MESSAGE_FIELDS = [
    "id", "status", "to", "cc", "subject", "attempts", "createdAt", "nextAttemptAt", "sentAt", "lastError",
    "smtpReply", "messageId", "recipients",
]  # fmt: skip


def _message_schemas() -> dict[str, Any]:
    date_time = {"type": "string", "format": "date-time"}
    return {
        "OutgoingMessageRequestDto": {
            "type": "object",
            "description": "(ours) A message to send From the portal's sender address and display name. Addresses"
            " are bare (ann@example.com, no name or angle brackets); UTF-8 local parts and international domains"
            f" are accepted. To, Cc and Bcc together hold 1 to {MAX_RECIPIENTS} distinct addresses (compared"
            " without regard to case); each gets the message once. Text, Html or both (then"
            " multipart/alternative). Unknown fields are ignored.",
            "properties": {
                "to": _address_list("Recipients shown in the To header."),
                "cc": _address_list("Recipients shown in the Cc header."),
                "bcc": _address_list("Recipients in no header; never returned after acceptance."),
                "replyTo": {
                    "type": ["string", "null"],
                    "pattern": f"^$|{ADDRESS_PATTERN}",
                    "description": "The Reply-To address; empty or null: none.",
                    "examples": ["support@example.com"],
                },
                "subject": {
                    "type": "string",
                    "maxLength": MAX_SUBJECT_LENGTH,
                    "pattern": NO_CONTROL_PATTERN,
                    "description": "Required, may be empty. No control characters (line breaks and tabs included),"
                    " not even inside an encoded word (=?...?=).",
                    "examples": ["Your room was shared with you"],
                },
                "text": {"type": ["string", "null"], "description": "The plain-text body."},
                "html": {"type": ["string", "null"], "description": "The HTML body."},
            },
            "required": ["subject"],
            "allOf": [
                {
                    "description": "At least one recipient.",
                    "anyOf": [{"required": [name], "properties": {name: {"type": "array", "minItems": 1}}} for name in ("to", "cc", "bcc")],
                },
                {
                    "description": "A body: text, html or both, not empty.",
                    "anyOf": [{"required": [name], "properties": {name: {"type": "string", "minLength": 1}}} for name in ("text", "html")],
                },
            ],
        },
        "OutgoingMessageDto": {
            "type": "object",
            "description": "(ours) A message in the outbox and how its delivery went. Its Bcc and body are never"
            " returned.",
            "properties": {
                "id": {"type": "string", "description": "The message's id in this API."},
                "status": {
                    "type": "string",
                    "enum": list(STATUSES),
                    "description": "queued: accepted (or requeued), not tried yet; sending: being sent; sent: the"
                    " mail server took it for every recipient; partial: delivered in part, the mail server took it"
                    " for some recipients and refused the others (or they were given up on), and nobody is left to"
                    " try; deferred: a temporary failure (for the message or some recipients), the recipients still"
                    " to try are tried again at nextAttemptAt; failed: no recipient got it, by a permanent refusal or"
                    " temporary failures until the retry horizon; cancelled.",
                },
                "to": {"type": "array", "items": {"type": "string"}},
                "cc": {"type": "array", "items": {"type": "string"}},
                "subject": {"type": "string"},
                "attempts": {"type": "integer", "minimum": 0, "description": "Delivery attempts begun."},
                "createdAt": date_time | {"description": "When the message was accepted."},
                "nextAttemptAt": {
                    "type": ["string", "null"],
                    "format": "date-time",
                    "description": "When a queued or deferred message is next tried; null in any other status.",
                },
                "sentAt": {
                    "type": ["string", "null"],
                    "format": "date-time",
                    "description": "When the mail server first took the message for a recipient.",
                },
                "lastError": {
                    "type": ["string", "null"],
                    "description": "What went wrong at the last attempt; for partial, how many recipients got it.",
                },
                "smtpReply": {
                    "type": ["string", "null"],
                    "description": "The mail server's last reply: the 250 to DATA once sent, else the refusal.",
                },
                "messageId": {
                    "type": "string",
                    "description": "The Message-ID header, fixed at acceptance: every attempt sends the same.",
                },
                "recipients": {
                    "type": "array",
                    "items": _ref("OutgoingMessageRecipientDto"),
                    "description": "Each To and Cc recipient's outcome (Bcc recipients are never listed); empty"
                    " once the body of a cancelled message is deleted at retention.",
                },
            },
            "required": _MESSAGE_FIELDS,
        },
        "OutgoingMessageRecipientDto": {
            "type": "object",
            "description": "(ours) One recipient's outcome.",
            "properties": {
                "address": {"type": "string"},
                "status": {
                    "type": "string",
                    "enum": list(RECIPIENT_STATUSES),
                    "description": "pending: not tried yet (or being tried); accepted: the mail server took the"
                    " message for it; refused: the server refused it for good (5xx); deferred: refused for now"
                    " (4xx) or the attempt failed, tried again; failed: given up on, or the message failed;"
                    " cancelled: the message was cancelled before it got there.",
                },
                "reply": {
                    "type": ["string", "null"],
                    "description": "The reply that decided it: the 250 to DATA, the refusal of its RCPT, or the"
                    " attempt's error.",
                },
            },
            "required": ["address", "status", "reply"],
        },
        "OutgoingMessageWrapper": _wrapper(_ref("OutgoingMessageDto")),
        "OutgoingMessageListWrapper": _paged(_ref("OutgoingMessageDto")),
    }


def _paged(item: dict[str, Any]) -> dict[str, Any]:
    """The success envelope of a page of a longer list: ``count`` on the page, ``total`` in all."""
    wrapper = _wrapper({"type": "array", "items": item})
    wrapper["properties"]["total"] = {"type": "integer", "minimum": 0, "description": "How many there are in all."}
    wrapper["required"].append("total")
    return wrapper


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "smtpsettings",
            "version": "2.0",
            "description": "The SMTP settings part of the ONLYOFFICE DocSpace API, served for many portals (chosen by Host).",
        },
        "tags": [
            {"name": AUTH_TAG},
            {"name": SETTINGS_TAG},
            {"name": SMTP_TAG},
            {"name": MESSAGES_TAG, "description": "(ours) The portal's mail, sent through its SMTP settings"},
            {"name": "Health"},
            {"name": "Monitoring"},
        ],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "asc_auth_key": {"type": "apiKey", "in": "cookie", "name": "asc_auth_key"},
                "Bearer": {"type": "http", "scheme": "bearer", "description": "A sign-in token, or an API key sk-…"},
                "ApiKeyBearer": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "ApiKeyBearer",
                    "description": "What Authorization carries (an API key sk-…, a sign-in token), in the header"
                    " the SDK's api_key={'ApiKeyBearer': …} sends; the asc_auth_key cookie or Authorization wins"
                    " when also sent",
                },
                "Basic": {"type": "http", "scheme": "basic"},
            },
        },
        "security": _SCHEMES,
    }
