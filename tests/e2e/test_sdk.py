"""End to end with the official, unpatched DocSpace Python SDK (``docspace-api-sdk`` 3.7.0).

The SDK addresses the server by URL only, so its Host header is ``127.0.0.1:<port>``: that matches no
portal and is answered by the default portal ``localhost`` created on the first start. The module therefore
runs a server of its own and signs in as the owner whose password that first start printed.

Every call goes through the SDK's generated models, whose strict pydantic types (StrictBool, StrictStr,
an int in 1..65535, strings of at most 255 characters) validate each response: a test passing here means
the answers have the shape the SDK demands.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator

import httpx
import pytest
from serverkit import PASSWORD, Server, start_server

from smtpsettings.domain.accounts import Role

with warnings.catch_warnings():
    # The SDK's own models warn about a field named "copy" when imported; not our concern.
    warnings.simplefilter("ignore", UserWarning)
    import docspace_api_sdk as sdk
    from docspace_api_sdk.exceptions import BadRequestException, ForbiddenException, UnauthorizedException

OWNER_EMAIL = "owner@example.com"  # start_server sets SMTPSETTINGS_OWNER_EMAIL to this
DEFAULT_PORTAL = "localhost"


class SdkServer:
    def __init__(self, server: Server, owner_password: str) -> None:
        self.server = server
        self.owner_password = owner_password

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def configuration(self, **auth: object) -> sdk.Configuration:
        return sdk.Configuration(host=self.base_url, **auth)  # type: ignore[arg-type]

    def client(self, **auth: object) -> sdk.ApiClient:
        return sdk.ApiClient(self.configuration(**auth))

    def sign_in(self, email: str = OWNER_EMAIL, password: str | None = None) -> str:
        with self.client() as api_client:
            answer = sdk.AuthenticationApi(api_client).authenticate_me(
                sdk.AuthRequestsDto(user_name=email, password=password or self.owner_password)
            )
        assert answer.response is not None
        assert answer.response.token
        return answer.response.token


@pytest.fixture(scope="module")
def sdk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SdkServer]:
    server = start_server(tmp_path_factory.mktemp("sdk") / "data")
    try:
        match = re.search(r"Password:\s+(\S+)", server.stdout)
        assert match, f"the first start printed no password:\n{server.stdout}"
        yield SdkServer(server, match.group(1))
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def reset_default_portal(sdk_server: SdkServer) -> None:
    """Each test starts from a portal without settings of its own."""
    with httpx.Client(base_url=sdk_server.base_url, timeout=30) as c:
        r = c.delete("/api/2.0/smtpsettings/smtp", auth=(OWNER_EMAIL, sdk_server.owner_password))
        assert r.status_code == 200, r.text


def settings_dto(**overrides: object) -> sdk.SmtpSettingsDto:
    values: dict[str, object] = dict(
        host="smtp.example.com",
        port=587,
        sender_address="noreply@example.com",
        sender_display_name="Example Portal",
        credentials_user_name="mailer",
        credentials_user_password="initial-Secret-1",
        enable_ssl=True,
        enable_auth=True,
        use_ntlm=False,
    )
    values.update(overrides)
    return sdk.SmtpSettingsDto(**values)  # type: ignore[arg-type]


def exercise_smtp_settings(api_client: sdk.ApiClient) -> None:
    """Get (default), save, get (password hidden), reset (default again), all through the SDK."""
    api = sdk.SMTPSettingsApi(api_client)

    initial = api.get_smtp_settings().response
    assert initial is not None
    assert initial.is_default_settings is True
    assert initial.credentials_user_password == ""

    saved = api.save_smtp_settings(smtp_settings_dto=settings_dto())
    assert saved.status_code == 200
    assert saved.response == sdk.SmtpSettingsDto(
        host="smtp.example.com",
        port=587,
        sender_address="noreply@example.com",
        sender_display_name="Example Portal",
        credentials_user_name="mailer",
        credentials_user_password="",
        enable_ssl=True,
        enable_auth=True,
        use_ntlm=False,
        is_default_settings=False,
    )

    again = api.get_smtp_settings().response
    assert again == saved.response

    reset = api.reset_smtp_settings().response
    assert reset is not None
    assert reset.is_default_settings is True
    assert reset.host != "smtp.example.com"
    assert api.get_smtp_settings().response == reset


def test_sdk_signs_in_and_receives_a_token_with_an_expiry(sdk_server: SdkServer) -> None:
    with sdk_server.client() as api_client:
        answer = sdk.AuthenticationApi(api_client).authenticate_me(
            sdk.AuthRequestsDto(user_name=OWNER_EMAIL, password=sdk_server.owner_password)
        )
    assert answer.status_code == 200
    assert answer.response is not None
    assert answer.response.token
    assert answer.response.expires is not None
    assert answer.response.expires.tzinfo is not None


def test_sdk_sign_in_with_a_wrong_password_raises_unauthorized(sdk_server: SdkServer) -> None:
    with sdk_server.client() as api_client, pytest.raises(UnauthorizedException) as excinfo:
        sdk.AuthenticationApi(api_client).authenticate_me(sdk.AuthRequestsDto(user_name=OWNER_EMAIL, password="wrong-password-1"))
    assert "User authentication failed" in (excinfo.value.body or "")


def test_sdk_manages_settings_with_the_token_as_bearer_access_token(sdk_server: SdkServer) -> None:
    with sdk_server.client(access_token=sdk_server.sign_in()) as api_client:
        exercise_smtp_settings(api_client)


def test_sdk_manages_settings_with_the_token_as_asc_auth_key_cookie(sdk_server: SdkServer) -> None:
    # The SDK writes the api_key value as the whole Cookie header, so the value carries the cookie's name.
    token = sdk_server.sign_in()
    with sdk_server.client(api_key={"asc_auth_key": f"asc_auth_key={token}"}) as api_client:
        exercise_smtp_settings(api_client)


def test_sdk_manages_settings_with_the_bare_token_as_asc_auth_key(sdk_server: SdkServer) -> None:
    with sdk_server.client(api_key={"asc_auth_key": sdk_server.sign_in()}) as api_client:
        exercise_smtp_settings(api_client)


def test_sdk_manages_settings_with_an_api_key_in_its_api_key_bearer_setting(sdk_server: SdkServer) -> None:
    # The SDK sends this setting as a header named "ApiKeyBearer"; it carries the same as Authorization.
    result = sdk_server.server.cli("apikey", "create", "--portal", DEFAULT_PORTAL, "--email", OWNER_EMAIL)
    key = result.stdout.strip().splitlines()[-1]
    with sdk_server.client(api_key={"ApiKeyBearer": key}) as api_client:
        exercise_smtp_settings(api_client)


def test_sdk_manages_settings_with_the_token_as_api_client_cookie(sdk_server: SdkServer) -> None:
    token = sdk_server.sign_in()
    with sdk.ApiClient(sdk_server.configuration(), cookie=f"asc_auth_key={token}") as api_client:
        exercise_smtp_settings(api_client)


def test_sdk_manages_settings_with_basic_username_and_password(sdk_server: SdkServer) -> None:
    with sdk_server.client(username=OWNER_EMAIL, password=sdk_server.owner_password) as api_client:
        exercise_smtp_settings(api_client)


def test_sdk_manages_settings_with_an_api_key_from_the_cli_as_bearer(sdk_server: SdkServer) -> None:
    result = sdk_server.server.cli("apikey", "create", "--portal", DEFAULT_PORTAL, "--email", OWNER_EMAIL)
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("sk-")
    with sdk_server.client(access_token=key) as api_client:
        exercise_smtp_settings(api_client)


def test_sdk_reports_signed_in_when_the_client_sends_the_auth_cookie(sdk_server: SdkServer) -> None:
    # getIsAuthentificated declares no security in the SDK: only the ApiClient's cookie reaches it.
    token = sdk_server.sign_in()
    with sdk.ApiClient(sdk_server.configuration(), cookie=f"asc_auth_key={token}") as api_client:
        answer = sdk.AuthenticationApi(api_client).get_is_authentificated()
    assert answer.response is True


def test_sdk_reports_not_signed_in_without_credentials(sdk_server: SdkServer) -> None:
    with sdk_server.client() as api_client:
        assert sdk.AuthenticationApi(api_client).get_is_authentificated().response is False


def test_sdk_logout_ends_the_token_so_it_is_refused_afterwards(sdk_server: SdkServer) -> None:
    token = sdk_server.sign_in()
    with sdk_server.client(access_token=token) as api_client:
        assert sdk.SMTPSettingsApi(api_client).get_smtp_settings().response is not None
    with sdk.ApiClient(sdk_server.configuration(), header_name="Authorization", header_value=f"Bearer {token}") as api_client:
        answer = sdk.AuthenticationApi(api_client).logout()
        assert answer.status_code == 200
        assert sdk.AuthenticationApi(api_client).get_is_authentificated().response is False
    with sdk_server.client(access_token=token) as api_client, pytest.raises(UnauthorizedException):
        sdk.SMTPSettingsApi(api_client).get_smtp_settings()


def test_sdk_logout_through_the_cookie_ends_only_that_token(sdk_server: SdkServer) -> None:
    ended, kept = sdk_server.sign_in(), sdk_server.sign_in()
    with sdk.ApiClient(sdk_server.configuration(), cookie=f"asc_auth_key={ended}") as api_client:
        sdk.AuthenticationApi(api_client).logout()
    with sdk_server.client(api_key={"asc_auth_key": f"asc_auth_key={ended}"}) as api_client, pytest.raises(UnauthorizedException):
        sdk.SMTPSettingsApi(api_client).get_smtp_settings()
    with sdk_server.client(access_token=kept) as api_client:
        assert sdk.SMTPSettingsApi(api_client).get_smtp_settings().response is not None


def test_sdk_without_credentials_raises_unauthorized(sdk_server: SdkServer) -> None:
    with sdk_server.client() as api_client, pytest.raises(UnauthorizedException) as excinfo:
        sdk.SMTPSettingsApi(api_client).get_smtp_settings()
    body = json.loads(excinfo.value.body or "{}")
    assert body["statusCode"] == 401
    assert body["status"] == 1


def test_sdk_as_a_plain_user_raises_forbidden_with_access_denied(sdk_server: SdkServer) -> None:
    email = "plain.user@example.com"
    if not any(u.email == email for u in sdk_server.server.accounts().list_users(DEFAULT_PORTAL)):
        sdk_server.server.accounts().create_user(DEFAULT_PORTAL, email=email, password=PASSWORD, role=Role.USER)
    with sdk_server.client(access_token=sdk_server.sign_in(email, PASSWORD)) as api_client:
        with pytest.raises(ForbiddenException) as excinfo:
            sdk.SMTPSettingsApi(api_client).save_smtp_settings(smtp_settings_dto=settings_dto())
    assert json.loads(excinfo.value.body or "{}")["error"]["message"] == "Access denied"


def test_sdk_save_with_an_invalid_sender_raises_bad_request_with_pascal_case_errors(sdk_server: SdkServer) -> None:
    with sdk_server.client(access_token=sdk_server.sign_in()) as api_client:
        api = sdk.SMTPSettingsApi(api_client)
        with pytest.raises(BadRequestException) as excinfo:
            api.save_smtp_settings(smtp_settings_dto=settings_dto(sender_address="not an address"))
        body = json.loads(excinfo.value.body or "{}")
        assert body["statusCode"] == 400
        assert body["response"]["title"] == "One or more validation errors occurred."
        assert set(body["response"]["errors"]) == {"SenderAddress"}
        # Nothing was stored.
        current = api.get_smtp_settings().response
        assert current is not None
        assert current.is_default_settings is True


def test_sdk_save_with_a_header_injection_in_the_host_raises_bad_request_naming_host(sdk_server: SdkServer) -> None:
    with sdk_server.client(access_token=sdk_server.sign_in()) as api_client, pytest.raises(BadRequestException) as excinfo:
        sdk.SMTPSettingsApi(api_client).save_smtp_settings(smtp_settings_dto=settings_dto(host="smtp.example.com\r\nBcc: x@evil.test"))
    assert "Host" in json.loads(excinfo.value.body or "{}")["response"]["errors"]


def test_sdk_save_without_password_keeps_the_stored_one_when_host_port_and_user_are_unchanged(sdk_server: SdkServer) -> None:
    with sdk_server.client(access_token=sdk_server.sign_in()) as api_client:
        api = sdk.SMTPSettingsApi(api_client)
        api.save_smtp_settings(smtp_settings_dto=settings_dto())
        again = api.save_smtp_settings(smtp_settings_dto=settings_dto(credentials_user_password=None, sender_display_name="Renamed"))
        assert again.response is not None
        assert again.response.sender_display_name == "Renamed"
        with pytest.raises(BadRequestException) as excinfo:
            api.save_smtp_settings(smtp_settings_dto=settings_dto(credentials_user_password=None, host="elsewhere.example.com"))
        assert json.loads(excinfo.value.body or "{}")["error"]["message"] == "Empty password."


def test_sdk_save_with_port_omitted_stores_port_25(sdk_server: SdkServer) -> None:
    with sdk_server.client(access_token=sdk_server.sign_in()) as api_client:
        saved = sdk.SMTPSettingsApi(api_client).save_smtp_settings(
            smtp_settings_dto=sdk.SmtpSettingsDto(host="smtp.example.com", sender_address="noreply@example.com")
        )
    assert saved.response is not None
    assert saved.response.port == 25
    assert saved.response.enable_auth is False
    assert saved.response.credentials_user_name == ""


def test_sdk_success_envelope_links_the_request_url(sdk_server: SdkServer) -> None:
    with sdk_server.client(access_token=sdk_server.sign_in()) as api_client:
        answer = sdk.SMTPSettingsApi(api_client).get_smtp_settings()
    assert answer.count == 1
    assert answer.status == 0
    assert answer.links is not None
    assert [(link.href, link.action) for link in answer.links] == [(f"{sdk_server.base_url}/api/2.0/smtpsettings/smtp", "GET")]
