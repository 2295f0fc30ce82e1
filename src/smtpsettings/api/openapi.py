"""The OpenAPI 3.1 document of this API.

Written out by hand rather than derived from handlers: the handlers parse bodies themselves (to answer
with DocSpace's error shapes), and the schemas must match the official DocSpace SDK's models field for
field — names, types, the 255-character limits and the port range — which a test checks.

Every status an operation can answer is declared with its body, because generated clients and fuzzers
(the test suite runs schemathesis against this document) treat an undeclared one as a broken contract.
"""

from __future__ import annotations

from typing import Any

from smtpsettings.domain.smtp import MAX_LENGTH

__all__ = ("openapi_document",)

SMTP_TAG = "Security / SMTP settings"
AUTH_TAG = "Authentication"

# What the server accepts as a host, and so what answers carry: an RFC 1123 host name, an IPv4 address, an
# international name (checked by IDNA 2008 on save, stored as typed), an IPv6 address, bare or in brackets,
# or an IPv4 address in brackets. (An answer carries "" when neither the portal nor the server has settings:
# left out here, or fuzzers would build their requests on it.) A pattern rather than ``format: hostname``,
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
# The server refuses control characters (C0, DEL, C1, U+2028/2029) in every text field but the password.
NO_CONTROL_PATTERN = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _string(description: str, *, limited: bool = True, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": ["string", "null"], "description": description}
    if limited:
        schema.update(minLength=0, maxLength=MAX_LENGTH)
    return schema | extra


def _wrapper(response: dict[str, Any], *, response_always: bool = True) -> dict[str, Any]:
    """DocSpace's success envelope around ``response`` (left out when there is nothing to answer)."""
    required = ["count", "links", "status", "statusCode"]
    return {
        "type": "object",
        "properties": {
            "response": response,
            "count": {"type": "integer", "format": "int32", "minimum": 0},
            "links": {"type": "array", "items": _ref("Link")},
            "status": {"type": "integer", "format": "int32", "const": 0},
            "statusCode": {"type": "integer", "format": "int32"},
        },
        "required": ["response", *required] if response_always else required,
    }


_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds after which a retry can succeed.", "schema": {"type": "integer", "minimum": 0}}
}


def _error(description: str, *, schema: str = "Error", retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": _json(_ref(schema))}
    if retry_after:
        response["headers"] = _RETRY_AFTER
    return response


# Every error answer is the DocSpace error envelope; 400 may also carry the validation details.
_ERRORS: dict[str, dict[str, Any]] = {
    "400": _error(
        "Bad argument (`error` only), or field validation failed (`response` holds the ValidationProblemDetails,"
        " as DocSpace puts them, with `error` beside them).",
        schema="ValidationError",
    ),
    "401": _error("Not authenticated: no credentials, or none valid on this portal"),
    "403": _error("Access denied (not the owner or an admin)"),
    "404": _error("No portal answers this Host (and there is no default portal)"),
    "406": _error("The Accept header admits none of application/json, text/json, text/plain"),
    "409": _error("A test mail is already being sent for this portal"),
    "408": _error("The announced body did not arrive within the server's timeout (10 s by default)"),
    "413": _error("The request body is over the server's limit (64 KiB by default)"),
    "415": _error("The body is not JSON (application/json, text/json, application/*+json), or its charset is not UTF-8"),
    "429": _error("A rate limit", retry_after=True),
    "503": _error("The database did not answer in time; retry after Retry-After seconds", retry_after=True),
}

_TOO_MANY_SIGN_INS = "Too many failed sign-ins for the account or the client address"
_BASIC_LIMIT = "Too many failed sign-ins (Basic credentials are checked like a sign-in)"
_TEST_LIMIT = "The user's test-mail limit (5 per 15 minutes by default) is used up, or too many failed Basic sign-ins"

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
        operation["requestBody"] = {"required": True, "content": _json(_ref(body))}
    if security is not None:
        operation["security"] = security
    return operation


_SCHEMES: list[dict[str, list[str]]] = [{"asc_auth_key": []}, {"Bearer": []}, {"Basic": []}]


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
        "/api/2.0/authentication/logout": {
            "post": _op("logout", "Sign out (ends the token presented)", "ObjectWrapper", ("401", *_JSON_API), tag=AUTH_TAG),
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
            ),
            "post": _op(
                "testUnsavedSmtpSettings",
                "(ours) Send a test mail with the settings in the body, without saving them",
                "SmtpOperationStatusRequestsWrapper",
                ("409", *_BODY, *_MANAGER),
                body="SmtpSettingsDto",
                too_many=_TEST_LIMIT,
            ),
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
        "/api/2.0/health/live": {
            "get": {
                "operationId": "getLiveness",
                "summary": "(ours) Liveness for load balancers: the process answers (touches no database)",
                "tags": ["Health"],
                "security": [],
                "responses": {"200": {"description": "OK", "content": _json(_ref("HealthWrapper"))}},
            },
        },
    }


def _schemas() -> dict[str, Any]:
    return {
        "SmtpSettingsDto": {
            "type": "object",
            "description": "The SMTP settings parameters.",
            "properties": {
                "host": _string(
                    "The SMTP host: a host name (mail.example.com, or an international name), an IPv4 address or an"
                    " IPv6 address, bare or in brackets. Not a URL, and without a port (that is the port field)."
                    ' ("" in an answer when neither the portal nor the server has settings.)',
                    pattern=HOST_PATTERN,
                ),
                "port": {"type": ["integer", "null"], "format": "int32", "minimum": 1, "maximum": 65535, "description": "The SMTP port (default 25)."},
                "senderAddress": _string(
                    "The sender address (\"\" in an answer when neither the portal nor the server has settings).", format="email"
                ),
                "senderDisplayName": _string("The sender display name.", pattern=NO_CONTROL_PATTERN),
                "credentialsUserName": _string("The credentials username.", pattern=NO_CONTROL_PATTERN),
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
            },
            # Saving or testing without them is refused ("Empty smtp host.", "Empty sender address.").
            "required": ["host", "senderAddress"],
            "additionalProperties": False,
        },
        "SmtpSettingsWrapper": _wrapper(_ref("SmtpSettingsDto")),
        "SmtpOperationStatusRequestsDto": {
            "type": "object",
            "properties": {
                "completed": {"type": "boolean", "description": "Whether the test has finished."},
                "id": {"type": "string", "description": "The test job's id."},
                "error": {"type": "string", "description": "Empty, or one sentence saying what failed."},
                "status": {"type": "string", "description": "The current step."},
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
        "AuthRequestsDto": {
            "type": "object",
            "description": "Other DocSpace sign-in fields (provider, culture, …) are accepted and ignored.",
            "properties": {
                "userName": {"type": ["string", "null"], "description": "The email used for authentication."},
                "password": {"type": ["string", "null"], "description": "The password in plain text."},
                "session": {"type": "boolean", "description": "Ask for a browser-session cookie."},
            },
        },
        "AuthenticationTokenDto": {
            "type": "object",
            "properties": {
                "token": {"type": ["string", "null"], "description": "The authentication token."},
                "expires": {"type": "string", "format": "date-time", "description": "The token expiration time."},
            },
        },
        "AuthenticationTokenWrapper": _wrapper(_ref("AuthenticationTokenDto")),
        "BooleanWrapper": _wrapper({"type": "boolean"}),
        # Sign-out answers nothing: the envelope without "response".
        "ObjectWrapper": _wrapper({}, response_always=False),
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
                "title": {"type": "string"},
                "status": {"type": "integer", "const": 400},
                "errors": {
                    "type": "object",
                    "description": "Messages by PascalCase property name, as DocSpace writes them.",
                    "additionalProperties": {"type": "array", "items": {"type": "string"}},
                },
            },
            "required": ["title", "status", "errors"],
        },
        "ValidationError": {
            "description": "The error envelope; on field validation errors `response` holds the details too.",
            "allOf": [_ref("Error"), {"type": "object", "properties": {"response": _ref("ValidationProblemDetails")}}],
        },
    }


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
            {"name": SMTP_TAG},
            {"name": "Health"},
        ],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "asc_auth_key": {"type": "apiKey", "in": "cookie", "name": "asc_auth_key"},
                "Bearer": {"type": "http", "scheme": "bearer", "description": "A sign-in token, or an API key sk-…"},
                "Basic": {"type": "http", "scheme": "basic"},
            },
        },
        "security": _SCHEMES,
    }
