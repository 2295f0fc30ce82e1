"""AUTH NTLM (MS-SMTPNTLM) on top of an aiosmtplib connection.

aiosmtplib has no NTLM support; Exchange and some on-premise relays accept
nothing else, so the three-message exchange is driven here with pyspnego's
pure-Python NTLM implementation (no system GSSAPI needed):

    C: AUTH NTLM <negotiate>     S: 334 <challenge>
    C: <authenticate>            S: 235
"""

from __future__ import annotations

import base64
import binascii

import spnego
import spnego.exceptions
from aiosmtplib import SMTP, SMTPResponse

from smtpsettings.mail.errors import AuthenticationError
from smtpsettings.mail.transcript import Redactor

__all__ = ["authenticate_ntlm"]


async def _abort(smtp: SMTP, timeout: float) -> None:
    # RFC 4954: "*" cancels an exchange so the session stays usable for QUIT.
    try:
        await smtp.execute_command(b"*", timeout=timeout)
    except Exception:  # noqa: BLE001 - best effort; the real error is raised by the caller
        pass


async def authenticate_ntlm(
    smtp: SMTP, username: str, password: str, *, timeout: float, redactor: Redactor
) -> SMTPResponse:
    """Authenticate with NTLM; tokens are registered with ``redactor``.

    Returns:
        The server's 235 reply.

    Raises:
        AuthenticationError: the server rejected us or sent an unusable challenge.
    """
    try:
        context = spnego.client(
            username, password, protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm
        )
        negotiate = context.step()
    except (spnego.exceptions.SpnegoError, ValueError) as exc:
        raise AuthenticationError("Could not prepare NTLM authentication for this user name") from exc
    if negotiate is None:  # pragma: no cover - NTLM always opens with a token
        raise AuthenticationError("Could not prepare NTLM authentication for this user name")

    negotiate_b64 = base64.b64encode(negotiate)
    redactor.add(negotiate_b64)
    reply = await smtp.execute_command(b"AUTH", b"NTLM", negotiate_b64, timeout=timeout)
    if reply.code != 334:
        raise AuthenticationError(f"Authentication failed: {reply.code} {reply.message}", code=reply.code)

    try:
        challenge = base64.b64decode(reply.message.strip(), validate=True)
        authenticate = context.step(challenge)
    except (binascii.Error, ValueError, spnego.exceptions.SpnegoError) as exc:
        await _abort(smtp, timeout)
        raise AuthenticationError("Server sent an NTLM challenge that could not be processed") from exc
    if authenticate is None:  # pragma: no cover - defensive
        await _abort(smtp, timeout)
        raise AuthenticationError("Server sent an NTLM challenge that could not be processed")

    authenticate_b64 = base64.b64encode(authenticate)
    redactor.add(authenticate_b64)
    reply = await smtp.execute_command(authenticate_b64, timeout=timeout)
    if reply.code != 235:
        raise AuthenticationError(f"Authentication failed: {reply.code} {reply.message}", code=reply.code)
    return reply
