"""``/api/2.0/smtpsettings/smtp``: read, save and reset a portal's SMTP settings."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, delete, get, post

from smtpsettings.api.context import authenticated, client_address, read_json, services, settings_manager
from smtpsettings.api.envelope import success_response
from smtpsettings.domain.smtp import parse_settings
from smtpsettings.services.smtp import SettingsView

__all__ = (
    "get_smtp_settings",
    "reset_smtp_settings",
    "save_smtp_settings",
    "saved_smtp_settings",
    "settings_dto",
    "smtp_settings",
    "smtp_settings_history",
)

PATH = "/api/2.0/smtpsettings/smtp"


def settings_dto(view: SettingsView) -> dict[str, Any]:
    """The wire form. The password and OAuth 2.0 secrets are write-only: every response carries ``""``.

    DocSpace's ten fields come first; ``authMethod`` and ``oauth2`` are ours (null unless OAuth 2.0 is in
    use), and say which secrets are stored without showing them.
    """
    settings = view.settings
    oauth2 = settings.oauth2
    return {
        "host": settings.host,
        "port": settings.port,
        "senderAddress": settings.sender_address,
        "senderDisplayName": settings.sender_display_name,
        "credentialsUserName": settings.credentials_user_name,
        "credentialsUserPassword": "",
        "enableSSL": settings.enable_ssl,
        "enableAuth": settings.enable_auth,
        "useNtlm": settings.use_ntlm,
        "isDefaultSettings": settings.is_default,
        "authMethod": settings.auth_method.value,
        "oauth2": None
        if oauth2 is None
        else {
            "provider": oauth2.provider,
            "tenantId": oauth2.tenant_id,
            "clientId": oauth2.client_id,
            "clientSecret": "",
            "certificate": "",
            "serviceAccountKey": "",
            "tokenUrl": oauth2.token_url,
            "scope": oauth2.scope,
            "clientSecretStored": "client_secret" in view.secrets_stored,
            "certificateStored": "certificate" in view.secrets_stored,
            "serviceAccountKeyStored": "service_account_key" in view.secrets_stored,
        },
    }


async def smtp_settings(request: Request) -> dict[str, Any]:
    """What GET answers: the portal's settings, to its owner and admins (also served by api.fastpath)."""
    the = services(request)
    found = await authenticated(request, the.smtp.alongside)  # the caller and the settings: one statement
    the.auth.require_settings_manager(found.principal)
    return settings_dto(the.smtp.view(found.alongside))


async def saved_smtp_settings(request: Request) -> dict[str, Any]:
    """What POST answers: the settings as saved from the request's body (also served by api.fastpath)."""
    portal, user = await settings_manager(request)
    new = parse_settings(await read_json(request))
    saved = await services(request).smtp.save(portal, user, new, client_address(request))
    return settings_dto(saved)


@get(PATH)
async def get_smtp_settings(request: Request) -> Response[bytes]:
    return success_response(request, await smtp_settings(request))


@post(PATH, status_code=200)
async def save_smtp_settings(request: Request) -> Response[bytes]:
    return success_response(request, await saved_smtp_settings(request))


@get(PATH + "/audit")
async def smtp_settings_history(request: Request) -> Response[bytes]:
    """(ours) The portal's change log, newest first: who, when, from where, which fields."""
    portal, _ = await settings_manager(request)
    entries = await services(request).smtp.audit(portal, limit=50)
    return success_response(
        request,
        [
            {
                "action": e.action,
                "userEmail": e.user_email,
                "changedFields": e.changed_fields,
                "clientAddress": e.client_address,
                "createdAt": e.created_at,
            }
            for e in entries
        ],
    )


@delete(PATH, status_code=200)
async def reset_smtp_settings(request: Request) -> Response[bytes]:
    portal, user = await settings_manager(request)
    return success_response(request, settings_dto(await services(request).smtp.reset(portal, user, client_address(request))))
