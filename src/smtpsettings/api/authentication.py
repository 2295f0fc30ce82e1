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
from smtpsettings.domain.errors import BadArgument, NotAuthenticated, TooManyRequests, ValidationFailed
from smtpsettings.domain.passwords import SignInSecret

__all__ = ("is_signed_in", "sign_in", "sign_out")

PATH = "/api/2.0/authentication"


@post(PATH, status_code=200)
async def sign_in(request: Request) -> Response[bytes]:
    portal = await current_portal(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadArgument("The request body must be a JSON object with userName and password.")
    # DocSpace clients send other sign-in fields too (provider, culture…); only these matter here.
    email, password, password_hash = body.get("userName"), body.get("password"), body.get("passwordHash")
    errors = {
        label: [f"The field {label} must be a string."]
        for label, value in (("UserName", email), ("Password", password), ("PasswordHash", password_hash))
        if value is not None and not isinstance(value, str)
    }
    if errors:
        raise ValidationFailed(errors)
    # As in DocSpace: a passwordHash (DocSpace's own sign-in page sends only that) wins over a password;
    # one that is empty or blank counts as not sent.
    if password_hash and password_hash.strip():
        secret = SignInSecret(password_hash.strip(), is_client_hash=True)
    elif password:
        secret = SignInSecret(password)
    else:
        secret = None
    if not email or secret is None:
        raise NotAuthenticated("User authentication failed")
    token, expires = await services(request).auth.sign_in(portal, email, secret, client_address(request))
    session = body.get("session") is True
    answer = {"token": token}
    if not session:
        # DocSpace names no expiry for a session sign-in, whose cookie ends with the browser session (the
        # token itself still ends after the configured lifetime).
        answer["expires"] = expires.isoformat(timespec="seconds")
    response = success_response(request, answer)
    response.set_cookie(
        Cookie(
            key=AUTH_COOKIE,
            value=token,
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
            path="/",
            # "session": true asks for a browser-session cookie, as in DocSpace.
            max_age=None if session else services(request).settings.token_lifetime_hours * 3600,
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
    """End the session whose token the request presents; 200 also without one, as DocSpace allows anonymous
    callers here. API keys and Basic credentials are no sessions: nothing of theirs ends."""
    try:
        _, principal = await current_principal(request)  # 404 still when no portal answers the Host
    except (NotAuthenticated, TooManyRequests):
        pass  # nothing presented, a token already ended, expired or foreign, Basic refused: nothing to end
    else:
        await services(request).auth.sign_out(principal)
    response = success_response(request, None)
    response.delete_cookie(AUTH_COOKIE, path="/")
    return response
