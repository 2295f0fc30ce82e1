"""The test-mail job's steps and their percents, as DocSpace reports them."""

from __future__ import annotations

from smtpsettings.mail import STEP_AUTHENTICATE, STEP_CONNECT, STEP_SEND, STEP_TOKEN

__all__ = ("COMPLETED", "PERCENTS", "STEP_CREATE_MESSAGE", "STEP_FIND_USER_DATA", "STEP_SETUP_TENANT", "STEP_SETUP_USER")

STEP_SETUP_TENANT = "Setup tenant"
STEP_SETUP_USER = "Setup user"
STEP_FIND_USER_DATA = "Find user data"
STEP_CREATE_MESSAGE = "Create mime message"
COMPLETED = "Completed"

PERCENTS = {
    STEP_SETUP_TENANT: 5,
    STEP_SETUP_USER: 10,
    STEP_FIND_USER_DATA: 15,
    STEP_CREATE_MESSAGE: 20,
    STEP_TOKEN: 30,  # ours: only with OAuth 2.0, before connecting
    STEP_CONNECT: 40,
    STEP_AUTHENTICATE: 60,
    STEP_SEND: 80,
    COMPLETED: 100,
}
