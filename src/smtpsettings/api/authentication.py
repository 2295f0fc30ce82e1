"""``/api/2.0/authentication``: sign in, ask whether signed in, sign out."""

from __future__ import annotations

from litestar import Request, Response, get, post
from litestar.datastructures import Cookie

from smtpsettings.api.context import (
    AUTH_COOKIE,
    client_address,
    current_portal,
    current_principal,
    read_json,
    services,
)
from smtpsettings.api.envelope import success_response
from smtpsettings.domain.errors import BadArgument, NotAuthenticated, ValidationFailed

__all__ = ("is_signed_in", "sign_in", "sign_out")

PATH = "/api/2.0/authentication"


@post(PATH, status_code=200)
async def sign_in(request: Request) -> Response[bytes]:
    portal = await current_portal(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadArgument("The request body must be a JSON object with userName and password.")
    # DocSpace clients send other sign-in fields too (provider, session, culture…); only these matter here.
    email, password = body.get("userName"), body.get("password")
    errors = {
        label: [f"The field {label} must be a string."]
        for label, value in (("UserName", email), ("Password", password))
        if value is not None and not isinstance(value, str)
    }
    if errors:
        raise ValidationFailed(errors)
    if not email or not password:
        raise NotAuthenticated("User authentication failed")
    token, expires = await services(request).auth.sign_in(portal, email, password, client_address(request))
    response = success_response(request, {"token": token, "expires": expires.isoformat(timespec="seconds")})
    response.set_cookie(
        Cookie(
            key=AUTH_COOKIE,
            value=token,
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
            path="/",
            # "session": true asks for a browser-session cookie, as in DocSpace.
            max_age=None if body.get("session") is True else services(request).settings.token_lifetime_hours * 3600,
        )
    )
    return response


@get(PATH)
async def is_signed_in(request: Request) -> Response[bytes]:
    try:
        await current_principal(request)
    except NotAuthenticated:
        return success_response(request, False)
    return success_response(request, True)


@post(PATH + "/logout", status_code=200)
async def sign_out(request: Request) -> Response[bytes]:
    _, principal = await current_principal(request)
    await services(request).auth.sign_out(principal)
    response = success_response(request, None)
    response.delete_cookie(AUTH_COOKIE, path="/")
    return response
