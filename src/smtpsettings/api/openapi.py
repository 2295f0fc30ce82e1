"""The OpenAPI 3.1 document of this API.

Written out by hand rather than derived from handlers: the handlers parse bodies themselves (to answer
with DocSpace's error shapes), and the schemas must match the official DocSpace SDK's models field for
field — names, types, the 255-character limits and the port range — which a test checks.
"""

from __future__ import annotations

from typing import Any

from smtpsettings.domain.smtp import MAX_LENGTH

__all__ = ("openapi_document",)


def _string(description: str, *, limited: bool = True) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": ["string", "null"], "description": description}
    if limited:
        schema.update(minLength=0, maxLength=MAX_LENGTH)
    return schema


def _wrapper(response_ref: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "response": response_ref,
            "count": {"type": "integer", "format": "int32"},
            "links": {"type": "array", "items": {"$ref": "#/components/schemas/Link"}},
            "status": {"type": "integer", "format": "int32"},
            "statusCode": {"type": "integer", "format": "int32"},
        },
    }


_ERRORS = {
    "400": {"description": "Bad argument or validation error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
    "401": {"description": "Not authenticated", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
    "403": {"description": "Access denied (not the owner or an admin)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
    "404": {"description": "No portal answers this Host", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
}


def _op(op_id: str, summary: str, wrapper: str, *, body: str | None = None, tag: str = "Security / SMTP settings", extra: dict[str, Any] | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "tags": [tag],
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{wrapper}"}}}},
            **_ERRORS,
            **(extra or {}),
        },
    }
    if body:
        operation["requestBody"] = {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}}}
    return operation


def openapi_document() -> dict[str, Any]:
    smtp_paths = {
        "get": _op("getSmtpSettings", "Get the SMTP settings", "SmtpSettingsWrapper"),
        "post": _op(
            "saveSmtpSettings",
            "Save the SMTP settings",
            "SmtpSettingsWrapper",
            body="SmtpSettingsDto",
            extra={"413": {"description": "Body over 64 KiB"}, "415": {"description": "Not a JSON content type"}},
        ),
        "delete": _op("resetSmtpSettings", "Reset the SMTP settings to the server default", "SmtpSettingsWrapper"),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "smtpsettings",
            "version": "2.0",
            "description": "The SMTP settings part of the ONLYOFFICE DocSpace API, served for many portals (chosen by Host).",
        },
        "paths": {
            "/api/2.0/authentication": {
                "post": _op("authenticateMe", "Sign in", "AuthenticationTokenWrapper", body="AuthRequestsDto", tag="Authentication", extra={"429": {"description": "Too many failed attempts"}}),
                "get": _op("getIsAuthentificated", "Is the caller signed in", "BooleanWrapper", tag="Authentication"),
            },
            "/api/2.0/authentication/logout": {"post": _op("logout", "Sign out", "ObjectWrapper", tag="Authentication")},
            "/api/2.0/smtpsettings/smtp": smtp_paths,
            "/api/2.0/smtpsettings/smtp/test": {
                "get": _op("testSmtpSettings", "Send a test mail with the stored settings", "SmtpOperationStatusRequestsWrapper", extra={"429": {"description": "Test limit reached"}}),
                "post": _op(
                    "testUnsavedSmtpSettings",
                    "(ours) Send a test mail with the settings in the body, without saving them",
                    "SmtpOperationStatusRequestsWrapper",
                    body="SmtpSettingsDto",
                    extra={"429": {"description": "Test limit reached"}},
                ),
            },
            "/api/2.0/smtpsettings/smtp/test/status": {
                "get": _op("getSmtpOperationStatus", "The portal's test-mail status", "SmtpOperationStatusRequestsWrapper"),
            },
            "/api/2.0/smtpsettings/smtp/audit": {
                "get": _op("getSmtpSettingsHistory", "(ours) The portal's SMTP settings change log", "SmtpAuditWrapper"),
            },
        },
        "components": {
            "schemas": {
                "SmtpSettingsDto": {
                    "type": "object",
                    "description": "The SMTP settings parameters.",
                    "properties": {
                        "host": _string("The SMTP host."),
                        "port": {"type": ["integer", "null"], "format": "int32", "minimum": 1, "maximum": 65535, "description": "The SMTP port (default 25)."},
                        "senderAddress": _string("The sender address."),
                        "senderDisplayName": _string("The sender display name."),
                        "credentialsUserName": _string("The credentials username."),
                        "credentialsUserPassword": _string("The credentials user password. Write-only: responses carry an empty string.", limited=False),
                        "enableSSL": {"type": "boolean", "description": "Specifies whether the SSL is enabled or not."},
                        "enableAuth": {"type": "boolean", "description": "Specifies whether the authentication is enabled or not."},
                        "useNtlm": {"type": "boolean", "description": "Specifies whether to use NTLM or not."},
                        "isDefaultSettings": {"type": "boolean", "description": "Specifies if the current settings are default or not (ignored on input)."},
                    },
                    "additionalProperties": False,
                },
                "SmtpSettingsWrapper": _wrapper({"$ref": "#/components/schemas/SmtpSettingsDto"}),
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
                },
                "SmtpOperationStatusRequestsWrapper": _wrapper({"$ref": "#/components/schemas/SmtpOperationStatusRequestsDto"}),
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
                "SmtpAuditWrapper": _wrapper({"type": "array", "items": {"$ref": "#/components/schemas/SmtpAuditEntry"}}),
                "AuthRequestsDto": {
                    "type": "object",
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
                "AuthenticationTokenWrapper": _wrapper({"$ref": "#/components/schemas/AuthenticationTokenDto"}),
                "BooleanWrapper": _wrapper({"type": "boolean"}),
                "ObjectWrapper": _wrapper({}),
                "Link": {"type": "object", "properties": {"href": {"type": "string"}, "action": {"type": "string"}}},
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "properties": {
                                "message": {"type": "string"},
                                "type": {"type": "string"},
                                "stack": {"type": "null"},
                                "hresult": {"type": "integer"},
                            },
                        },
                        "response": {
                            "type": "object",
                            "description": "Present on field validation errors.",
                            "properties": {
                                "title": {"type": "string"},
                                "status": {"type": "integer"},
                                "errors": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
                            },
                        },
                        "status": {"type": "integer"},
                        "statusCode": {"type": "integer"},
                    },
                },
            },
            "securitySchemes": {
                "asc_auth_key": {"type": "apiKey", "in": "cookie", "name": "asc_auth_key"},
                "Bearer": {"type": "http", "scheme": "bearer", "description": "A sign-in token, or an API key sk-…"},
                "Basic": {"type": "http", "scheme": "basic"},
            },
        },
        "security": [{"asc_auth_key": []}, {"Bearer": []}, {"Basic": []}],
    }
