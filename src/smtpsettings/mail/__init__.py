"""Reusable async SMTP sending with admin-facing diagnostics.

The "send test mail" job sends one message per session::

    report = await send_message(target, build_test_message(...), policy, on_step=progress)

The outbox sends many over pooled sessions, through the same connect, TLS and AUTH code::

    content, smtputf8 = flatten(build_message(...))
    async with pool.connection((portal_id, fingerprint), target) as connection:
        delivery = await connection.send(sender, recipients, content, smtputf8=smtputf8)

Failures raise a :class:`MailError` subclass (see :mod:`smtpsettings.mail.errors`)
whose ``str()`` is one actionable sentence and whose ``details``/``transcript``
carry the same diagnostics as a :class:`SendReport`. Secrets never appear in
either.
"""

from __future__ import annotations

from smtpsettings.mail.client import (
    AUTH_PREFERENCE,
    STEP_AUTHENTICATE,
    STEP_CONNECT,
    STEP_SEND,
    STEPS,
    StepCallback,
    send_message,
)
from smtpsettings.mail.connection import STEP_DELIVER, SmtpConnection
from smtpsettings.mail.errors import (
    AuthenticationError,
    ConfigurationRefused,
    ConnectError,
    MailError,
    MailTimeout,
    OAuth2TokenError,
    SendError,
    TLSError,
)
from smtpsettings.mail.message import (
    TEST_SUBJECT,
    HeaderInjection,
    build_message,
    build_test_message,
    envelope_of,
    flatten,
    new_message_id,
)
from smtpsettings.mail.oauth2 import STEP_TOKEN, OAuth2Grant, TokenCache, default_scope, default_token_url
from smtpsettings.mail.policy import (
    DEFAULT_DENY_NETWORKS,
    MailPolicy,
    denied_network,
    plaintext_auth_allowed,
)
from smtpsettings.mail.pool import ConnectionPool
from smtpsettings.mail.report import Delivery, Detail, Refusal, SendReport
from smtpsettings.mail.target import IMPLICIT_TLS_PORT, SmtpTarget, uses_implicit_tls

__all__ = [
    "AUTH_PREFERENCE",
    "DEFAULT_DENY_NETWORKS",
    "IMPLICIT_TLS_PORT",
    "STEPS",
    "STEP_AUTHENTICATE",
    "STEP_CONNECT",
    "STEP_DELIVER",
    "STEP_SEND",
    "STEP_TOKEN",
    "TEST_SUBJECT",
    "AuthenticationError",
    "ConfigurationRefused",
    "ConnectError",
    "ConnectionPool",
    "Delivery",
    "Detail",
    "HeaderInjection",
    "MailError",
    "MailPolicy",
    "MailTimeout",
    "OAuth2Grant",
    "OAuth2TokenError",
    "Refusal",
    "SendError",
    "SendReport",
    "SmtpConnection",
    "SmtpTarget",
    "StepCallback",
    "TLSError",
    "TokenCache",
    "build_message",
    "build_test_message",
    "default_scope",
    "default_token_url",
    "denied_network",
    "envelope_of",
    "flatten",
    "new_message_id",
    "plaintext_auth_allowed",
    "send_message",
    "uses_implicit_tls",
]
