"""``GET /api/2.0/settings``: the portal settings a sign-in page reads before anyone is signed in.

DocSpace's sign-in page reads ``passwordHash`` (size, iterations, salt) here and sends the password only
as that hash. Like DocSpace, the hash settings are answered to callers who are not signed in, and to
signed-in ones who ask with ``?withpassword=true``. Of DocSpace's many other settings only what its
SDK requires is answered, with values true of this service.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from smtpsettings.api.context import current_portal, current_principal, services
from smtpsettings.api.envelope import success_response
from smtpsettings.domain.errors import NotAuthenticated, TooManyRequests, ValidationFailed
from smtpsettings.domain.passwords import CLIENT_HASH_ITERATIONS, CLIENT_HASH_SIZE

__all__ = ("portal_settings",)

PATH = "/api/2.0/settings"


@get(PATH)
async def portal_settings(request: Request) -> Response[bytes]:
    portal = await current_portal(request)
    settings: dict[str, Any] = {
        "culture": "en-US",  # the language every answer and page of this service is in
        "baseDomain": None,  # no tenant aliases under a base domain here: each portal has its own host name
        "cookieSettingsEnabled": False,  # no per-portal session lifetime: it is server-wide configuration
        "deepLink": {"androidPackageName": None, "url": None, "iosPackageId": None},  # no mobile app to open
    }
    if _with_password(request) or not await _signed_in(request):
        settings["passwordHash"] = {
            "size": CLIENT_HASH_SIZE,
            "iterations": CLIENT_HASH_ITERATIONS,
            "salt": await services(request).auth.client_hash_salt(portal),
        }
    return success_response(request, settings)


def _with_password(request: Request) -> bool:
    """The ``withpassword`` flag, read as ASP.NET binds a ``bool?`` (any case; empty means not given)."""
    value = request.query_params.get("withpassword", "")
    # Only ASCII white space around the word: str.strip() would also take C0 separators such as U+001E.
    word = value.strip(" \t\n\v\f\r").lower()
    if word in ("", "false"):
        return False
    if word == "true":
        return True
    raise ValidationFailed({"withpassword": [f"The value '{value}' is not valid."]})


async def _signed_in(request: Request) -> bool:
    try:
        await current_principal(request)
    except (NotAuthenticated, TooManyRequests):
        return False
    return True
