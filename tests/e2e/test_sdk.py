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
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import urllib3
from serverkit import PASSWORD, Server, start_server
from smtp_peers import closed_port, smtp_peer

from smtpsettings.domain.accounts import Role

with warnings.catch_warnings():
    # The SDK's own models warn about a field named "copy" when imported; not our concern.
    warnings.simplefilter("ignore", UserWarning)
    import docspace_api_sdk as sdk
    from docspace_api_sdk.exceptions import (
        ApiException,
        BadRequestException,
        ForbiddenException,
        NotFoundException,
        UnauthorizedException,
    )

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


def start_sdk_server(data_dir: Path, extra_env: dict[str, str] | None = None) -> SdkServer:
    server = start_server(data_dir, extra_env)
    match = re.search(r"Password:\s+(\S+)", server.stdout)
    if not match:
        server.stop()
        raise AssertionError(f"the first start printed no password:\n{server.stdout}")
    return SdkServer(server, match.group(1))


@pytest.fixture(scope="module")
def sdk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SdkServer]:
    started = start_sdk_server(tmp_path_factory.mktemp("sdk") / "data")
    try:
        yield started
    finally:
        started.server.stop()


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
        # DocSpace's shape for it: the success envelope with status 1 (and our error beside it).
        assert (body["count"], body["status"]) == (1, 1)
        assert body["links"] == [{"href": f"{sdk_server.base_url}/api/2.0/smtpsettings/smtp", "action": "POST"}]
        assert body["error"]["message"] == "The field SenderAddress must be a valid email address."
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


# ------------------------------------------------------------------------------------ test mail


def wait_until_completed(api: sdk.SMTPSettingsApi, timeout: float = 20) -> sdk.SmtpOperationStatusRequestsDto:
    """Poll the test status through the SDK until the job has completed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = api.get_smtp_operation_status().response
        if status is not None and status.completed:
            return status
        time.sleep(0.1)
    raise AssertionError(f"the test job did not complete within {timeout} s")


def test_sdk_sends_a_test_mail_and_follows_its_status(sdk_server: SdkServer) -> None:
    with smtp_peer() as (port, inbox), sdk_server.client(access_token=sdk_server.sign_in()) as api_client:
        api = sdk.SMTPSettingsApi(api_client)
        # Before the portal's first test (this is the first in the module) there is no status: no "response".
        before = api.get_smtp_operation_status()
        assert (before.status_code, before.count, before.response) == (200, 0, None)

        api.save_smtp_settings(smtp_settings_dto=settings_dto(host="127.0.0.1", port=port, enable_ssl=False, enable_auth=False))
        started = api.test_smtp_settings()
        assert started.status_code == 200
        assert started.response is not None and started.response.id

        finished = wait_until_completed(api)
    assert finished.id == started.response.id
    assert (finished.error, finished.percents, finished.status) == ("", 100, "Completed")
    assert len(inbox.messages) == 1
    assert inbox.envelopes[0].rcpt_tos == [OWNER_EMAIL]
    assert inbox.messages[0]["Subject"] == "SMTP test message"


def test_sdk_test_status_reports_a_failed_test_with_its_error(sdk_server: SdkServer) -> None:
    with sdk_server.client(access_token=sdk_server.sign_in()) as api_client:
        api = sdk.SMTPSettingsApi(api_client)
        settings = settings_dto(host="127.0.0.1", port=closed_port(), enable_ssl=False, enable_auth=False)
        api.save_smtp_settings(smtp_settings_dto=settings)
        api.test_smtp_settings()
        finished = wait_until_completed(api)
    assert finished.error and finished.percents < 100
    assert finished.status == "Connect to host"


def test_sdk_test_without_settings_raises_bad_request(sdk_server: SdkServer) -> None:
    # This server has no default SMTP settings, and the autouse fixture reset the portal's own.
    with sdk_server.client(access_token=sdk_server.sign_in()) as api_client, pytest.raises(BadRequestException) as excinfo:
        sdk.SMTPSettingsApi(api_client).test_smtp_settings()
    assert json.loads(excinfo.value.body or "{}")["error"]["message"].startswith("There are no SMTP settings to test")


# The test-mail limit answers 429 with Retry-After. urllib3, under the SDK, obeys Retry-After on 429 for GET
# up to three times by default, so one SDK call blocks until the limit's window is over (15 minutes by
# default). A client that would rather fail at once sets Configuration.retries, as the README says.
LIMIT_WINDOW_SECONDS = 5


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SdkServer]:
    """A server allowing one test mail per user in a short window, with settings pointing at a mail sink."""
    with smtp_peer() as (port, _):
        started = start_sdk_server(
            tmp_path_factory.mktemp("sdk-limited") / "data",
            {"SMTPSETTINGS_SMTP_TEST_LIMIT": "1", "SMTPSETTINGS_SMTP_TEST_WINDOW_SECONDS": str(LIMIT_WINDOW_SECONDS)},
        )
        try:
            with started.client(access_token=started.sign_in()) as api_client:
                sdk.SMTPSettingsApi(api_client).save_smtp_settings(
                    smtp_settings_dto=settings_dto(host="127.0.0.1", port=port, enable_ssl=False, enable_auth=False)
                )
            yield started
        finally:
            started.server.stop()


def use_up_the_test_limit(server: SdkServer, token: str) -> None:
    """Start a test unless the window's one is used already; the next call in the window is over the limit."""
    with sdk.ApiClient(server.configuration(access_token=token, retries=False)) as api_client:
        try:
            sdk.SMTPSettingsApi(api_client).test_smtp_settings()
        except ApiException as exc:
            assert exc.status == 429, exc


@pytest.mark.parametrize(
    "retries",
    [False, 0, urllib3.Retry(0, respect_retry_after_header=False)],
    ids=["False", "0", "Retry(0, respect_retry_after_header=False)"],
)
def test_sdk_with_retries_off_raises_429_at_once_with_retry_after(limited_server: SdkServer, retries: object) -> None:
    # Each of these turns the waiting off; the SDK raises its ApiException (not urllib3's MaxRetryError).
    token = limited_server.sign_in()
    use_up_the_test_limit(limited_server, token)
    configuration = limited_server.configuration(access_token=token)
    configuration.retries = retries  # type: ignore[assignment]  # before the ApiClient: its pool reads it then
    seen = len(logged_test_mail_calls(limited_server))
    with sdk.ApiClient(configuration) as api_client, pytest.raises(ApiException) as excinfo:
        sdk.SMTPSettingsApi(api_client).test_smtp_settings()
    assert excinfo.value.status == 429
    assert excinfo.value.headers is not None
    assert 1 <= int(excinfo.value.headers["Retry-After"]) <= LIMIT_WINDOW_SECONDS + 1
    body = json.loads(excinfo.value.body or "{}")
    assert body["statusCode"] == 429 and body["error"]["message"].startswith("Too many test messages")
    # One request, no retry.
    assert wait_for_log(lambda: logged_test_mail_calls(limited_server)[seen:], bool) == [429]


def test_sdk_by_default_waits_out_retry_after_and_then_succeeds(limited_server: SdkServer) -> None:
    """Why the README tells SDK users how to turn retries off: the default waits as long as Retry-After says."""
    token = limited_server.sign_in()
    use_up_the_test_limit(limited_server, token)
    seen = len(logged_test_mail_calls(limited_server))
    with limited_server.client(access_token=token) as api_client:
        answer = sdk.SMTPSettingsApi(api_client).test_smtp_settings()
    assert answer.status_code == 200
    # The SDK's one call reached the server as a refused request, then as the retry after the window.
    calls = wait_for_log(lambda: logged_test_mail_calls(limited_server)[seen:], lambda new: new and new[-1] == 200)
    assert calls[0] == 429 and calls[-1] == 200, calls


def logged_test_mail_calls(server: SdkServer) -> list[int]:
    """Statuses of the GET /smtp/test requests in the server's request log, in order."""
    statuses = []
    for line in server.server.log_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "request" and entry.get("path") == "/api/2.0/smtpsettings/smtp/test" and entry.get("method") == "GET":
            statuses.append(entry["status"])
    return statuses


def wait_for_log(read: Any, done: Any, timeout: float = 10) -> Any:
    """The log line of a request is written just after its answer is sent: poll briefly for it."""
    deadline = time.monotonic() + timeout
    while not done(value := read()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


# ------------------------------------------------------------------------------------ coverage

# AuthenticationApi calls for features this service does not have: two-factor codes, SMS, email
# confirmation links. The server answers them 404 in the error envelope.
NOT_THIS_SYSTEM = {"authenticate_me_from_body_with_code", "check_confirm", "save_mobile_phone", "send_sms_code"}


def _sdk_methods(api_class: type) -> set[str]:
    return {
        name
        for name in vars(api_class)
        if not name.startswith("_") and not name.endswith(("_with_http_info", "_without_preload_content"))
    }


def test_every_sdk_method_of_this_system_is_called_by_the_sdk_tests() -> None:
    """A new SDK release adding a method to either API fails here until it is tested or ruled out."""
    methods = _sdk_methods(sdk.AuthenticationApi) | _sdk_methods(sdk.SMTPSettingsApi)
    assert NOT_THIS_SYSTEM <= methods
    sources = "".join(path.read_text() for path in Path(__file__).parent.glob("test_sdk*.py"))
    uncalled = {name for name in methods - NOT_THIS_SYSTEM if f".{name}(" not in sources}
    assert not uncalled


@pytest.mark.parametrize(
    ("method", "arguments"),
    [
        ("authenticate_me_from_body_with_code", {"code": "123456"}),
        ("check_confirm", {}),
        ("save_mobile_phone", {}),
        ("send_sms_code", {}),
    ],
)
def test_sdk_calls_for_features_this_service_lacks_raise_not_found(
    sdk_server: SdkServer, method: str, arguments: dict[str, object]
) -> None:
    with sdk_server.client(access_token=sdk_server.sign_in()) as api_client, pytest.raises(NotFoundException) as excinfo:
        getattr(sdk.AuthenticationApi(api_client), method)(**arguments)
    body = json.loads(excinfo.value.body or "{}")
    assert (body["status"], body["statusCode"]) == (1, 404)
