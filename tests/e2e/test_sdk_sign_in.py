"""Signing in and out with the official, unpatched DocSpace Python SDK (``docspace-api-sdk`` 3.7.0), as
DocSpace's own sign-in page does: read the portal's password-hash settings, send only the hash.

As in ``test_sdk.py``, the SDK's Host header matches no portal, so the default portal ``localhost`` answers,
and the module signs in as the owner whose password the server's first start printed.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Iterator

import pytest
from serverkit import Server, start_server

with warnings.catch_warnings():
    # The SDK's own models warn about a field named "copy" when imported; not our concern.
    warnings.simplefilter("ignore", UserWarning)
    import docspace_api_sdk as sdk
    from docspace_api_sdk.exceptions import UnauthorizedException

OWNER_EMAIL = "owner@example.com"  # start_server sets SMTPSETTINGS_OWNER_EMAIL to this


class Owner:
    def __init__(self, server: Server, password: str) -> None:
        self.server = server
        self.password = password

    def configuration(self) -> sdk.Configuration:
        return sdk.Configuration(host=self.server.base_url)


@pytest.fixture(scope="module")
def owner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Owner]:
    server = start_server(tmp_path_factory.mktemp("sdk-sign-in") / "data")
    try:
        match = re.search(r"Password:\s+(\S+)", server.stdout)
        assert match, f"the first start printed no password:\n{server.stdout}"
        yield Owner(server, match.group(1))
    finally:
        server.stop()


def password_hash(password: str, hasher: sdk.PasswordHasher) -> str:
    """What DocSpace's createPasswordHash makes of the published settings: PBKDF2-HMAC-SHA256, lower hex."""
    assert hasher.size and hasher.iterations and hasher.salt
    return hashlib.pbkdf2_hmac("sha256", password.encode(), hasher.salt.encode(), hasher.iterations, hasher.size // 8).hex()


def published_hasher(api_client: sdk.ApiClient, **kwargs: object) -> sdk.PasswordHasher | None:
    settings = sdk.CommonSettingsApi(api_client).get_portal_settings(**kwargs)  # type: ignore[arg-type]
    assert settings.status_code == 200 and settings.response is not None
    return settings.response.password_hash


def sign_in_with_the_hash(owner: Owner, **fields: object) -> sdk.AuthenticationTokenDto:
    with sdk.ApiClient(owner.configuration()) as api_client:
        hasher = published_hasher(api_client)
        assert hasher is not None
        request = sdk.AuthRequestsDto(user_name=OWNER_EMAIL, password_hash=password_hash(owner.password, hasher), **fields)
        answer = sdk.AuthenticationApi(api_client).authenticate_me(request).response
    assert answer is not None and answer.token
    return answer


def test_sdk_signs_in_with_the_password_hash_computed_from_the_published_settings(owner: Owner) -> None:
    answer = sign_in_with_the_hash(owner)
    assert answer.expires is not None
    with sdk.ApiClient(sdk.Configuration(host=owner.server.base_url, access_token=answer.token)) as api_client:
        settings = sdk.SMTPSettingsApi(api_client).get_smtp_settings().response
    assert settings is not None and settings.is_default_settings is True


def test_sdk_sign_in_with_a_wrong_password_hash_raises_unauthorized(owner: Owner) -> None:
    with sdk.ApiClient(owner.configuration()) as api_client, pytest.raises(UnauthorizedException):
        hasher = published_hasher(api_client)
        assert hasher is not None
        wrong = sdk.AuthRequestsDto(user_name=OWNER_EMAIL, password_hash=password_hash("not-the-password", hasher))
        sdk.AuthenticationApi(api_client).authenticate_me(wrong)


def test_sdk_session_sign_in_gets_no_expiry(owner: Owner) -> None:
    assert sign_in_with_the_hash(owner, session=True).expires is None


def test_sdk_settings_leave_the_hash_settings_out_for_a_signed_in_client_unless_asked(owner: Owner) -> None:
    token = sign_in_with_the_hash(owner).token
    with sdk.ApiClient(owner.configuration(), cookie=f"asc_auth_key={token}") as api_client:
        assert published_hasher(api_client) is None
        assert published_hasher(api_client, withpassword=True) is not None


def test_sdk_logout_without_credentials_answers_200(owner: Owner) -> None:
    # logout() declares no security in the SDK: a client configured with a token still sends none.
    token = sign_in_with_the_hash(owner).token
    with sdk.ApiClient(sdk.Configuration(host=owner.server.base_url, access_token=token)) as api_client:
        answer = sdk.AuthenticationApi(api_client).logout()
        assert answer.status_code == 200
        # So the session it meant to end goes on.
        assert sdk.SMTPSettingsApi(api_client).get_smtp_settings().response is not None


def test_sdk_logout_through_the_api_client_cookie_ends_the_session(owner: Owner) -> None:
    token = sign_in_with_the_hash(owner).token
    with sdk.ApiClient(owner.configuration(), cookie=f"asc_auth_key={token}") as api_client:
        assert sdk.AuthenticationApi(api_client).get_is_authentificated().response is True
        assert sdk.AuthenticationApi(api_client).logout().status_code == 200
        assert sdk.AuthenticationApi(api_client).get_is_authentificated().response is False
    with sdk.ApiClient(sdk.Configuration(host=owner.server.base_url, access_token=token)) as api_client:
        with pytest.raises(UnauthorizedException):
            sdk.SMTPSettingsApi(api_client).get_smtp_settings()
