"""GET, POST and DELETE /api/2.0/smtpsettings/smtp through real HTTP against a running server."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from serverkit import PASSWORD, VALID_SETTINGS, Portal, Server, make_portal, start_server

from smtpsettings.domain.accounts import Role

PATH = "/api/2.0/smtpsettings/smtp"


def test_portal_without_settings_inherits_the_server_default(portal: Portal) -> None:
    with portal.client(Role.ADMIN) as c:
        body = c.get(PATH).json()
    assert body["response"] == {
        "host": "mail.default.test",
        "port": 2525,
        "senderAddress": "portal@default.test",
        "senderDisplayName": "Default Sender",
        "credentialsUserName": "default-user",
        "credentialsUserPassword": "",
        "enableSSL": False,
        "enableAuth": True,
        "useNtlm": False,
        "isDefaultSettings": True,
        "authMethod": "password",
        "oauth2": None,
    }
    assert body["count"] == 1 and body["status"] == 0 and body["statusCode"] == 200
    assert body["links"] == [{"href": f"http://{portal.hostname}{PATH}", "action": "GET"}]


def test_save_returns_what_was_stored_and_get_returns_it_after(portal: Portal) -> None:
    with portal.client(Role.OWNER) as c:
        saved = c.post(PATH, json={**VALID_SETTINGS, "useNtlm": True, "isDefaultSettings": True})
        assert saved.status_code == 200, saved.text
        expected = {
            **VALID_SETTINGS,
            "useNtlm": True,
            "credentialsUserPassword": "",
            "isDefaultSettings": False,
            "authMethod": "ntlm",
            "oauth2": None,
        }
        assert saved.json()["response"] == expected
        assert c.get(PATH).json()["response"] == expected


def test_port_defaults_to_25_when_missing_or_null(portal: Portal) -> None:
    body = {"host": "smtp.example.com", "senderAddress": "a@example.com"}
    with portal.client(Role.ADMIN) as c:
        assert c.post(PATH, json=body).json()["response"]["port"] == 25
        assert c.post(PATH, json={**body, "port": None}).json()["response"]["port"] == 25


def test_without_auth_user_name_and_password_are_not_stored(portal: Portal) -> None:
    with portal.client(Role.ADMIN) as c:
        r = c.post(PATH, json={**VALID_SETTINGS, "enableAuth": False, "useNtlm": True})
        assert r.json()["response"]["credentialsUserName"] == ""
        assert r.json()["response"]["useNtlm"] is False
        # A later save with auth on must now send a password: none is stored.
        r = c.post(PATH, json={**VALID_SETTINGS, "credentialsUserPassword": ""})
        assert r.status_code == 400 and r.json()["error"]["message"] == "Empty password."


def test_omitted_password_is_kept_when_host_port_and_user_are_unchanged(portal: Portal) -> None:
    with portal.client(Role.ADMIN) as c:
        assert c.post(PATH, json=VALID_SETTINGS).status_code == 200
        without_password = {k: v for k, v in VALID_SETTINGS.items() if k != "credentialsUserPassword"}
        r = c.post(PATH, json={**without_password, "senderDisplayName": "Renamed"})
        assert r.status_code == 200, r.text
        assert r.json()["response"]["senderDisplayName"] == "Renamed"
        assert c.post(PATH, json={**without_password, "credentialsUserPassword": ""}).status_code == 200


@pytest.mark.parametrize(
    "change", [{"host": "evil.example.net"}, {"port": 2526}, {"credentialsUserName": "someone-else"}]
)
def test_omitted_password_is_refused_when_the_target_changes(portal: Portal, change: dict[str, object]) -> None:
    with portal.client(Role.ADMIN) as c:
        c.post(PATH, json=VALID_SETTINGS)
        without_password = {k: v for k, v in VALID_SETTINGS.items() if k != "credentialsUserPassword"}
        r = c.post(PATH, json={**without_password, **change})
        assert r.status_code == 400
        assert r.json()["error"]["message"] == "Empty password."
        assert c.get(PATH).json()["response"]["host"] == VALID_SETTINGS["host"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"host": "", "senderAddress": "a@example.com"}, "Empty smtp host."),
        ({"senderAddress": "a@example.com"}, "Empty smtp host."),
        ({"host": "smtp.example.com"}, "Empty sender address."),
        ({"host": "smtp.example.com", "senderAddress": "a@example.com", "enableAuth": True}, "Empty user name."),
        (
            {"host": "smtp.example.com", "senderAddress": "a@example.com", "enableAuth": True, "credentialsUserName": "u"},
            "Empty password.",
        ),
    ],
)
def test_required_values_are_refused_with_docspace_messages(portal: Portal, body: dict[str, object], message: str) -> None:
    with portal.client(Role.ADMIN) as c:
        r = c.post(PATH, json=body)
    assert r.status_code == 400
    assert r.json()["error"]["message"] == message
    assert r.json()["statusCode"] == 400 and r.json()["status"] == 1


def test_reset_returns_to_the_default_and_answers_what_get_answers(portal: Portal) -> None:
    with portal.client(Role.ADMIN) as c:
        c.post(PATH, json=VALID_SETTINGS)
        r = c.delete(PATH)
        assert r.status_code == 200
        assert r.json()["response"]["isDefaultSettings"] is True
        assert r.json()["links"][0]["action"] == "DELETE"
        assert c.get(PATH).json()["response"] == r.json()["response"]


@pytest.mark.parametrize("role", [Role.USER, Role.GUEST])
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_users_and_guests_are_denied(portal: Portal, role: Role, method: str) -> None:
    with portal.client(role) as c:
        r = c.request(method, PATH, json=VALID_SETTINGS if method == "POST" else None)
    assert r.status_code == 403
    assert r.json()["error"]["message"] == "Access denied"


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_anonymous_requests_get_401(portal: Portal, method: str) -> None:
    with portal.client() as c:
        r = c.request(method, PATH, json=VALID_SETTINGS if method == "POST" else None)
    assert r.status_code == 401
    assert r.json()["statusCode"] == 401 and r.json()["error"]["stack"] is None


def test_portals_keep_their_own_settings(portal_factory: Callable[[], Portal]) -> None:
    first, second = portal_factory(), portal_factory()
    with first.client(Role.ADMIN) as a, second.client(Role.ADMIN) as b:
        a.post(PATH, json=VALID_SETTINGS)
        assert a.get(PATH).json()["response"]["isDefaultSettings"] is False
        assert b.get(PATH).json()["response"]["isDefaultSettings"] is True


def test_a_token_of_one_portal_is_refused_on_another(portal_factory: Callable[[], Portal]) -> None:
    first, second = portal_factory(), portal_factory()
    token = first.sign_in(Role.ADMIN)
    with second.client(headers={"Authorization": f"Bearer {token}"}) as c:
        assert c.get(PATH).status_code == 401
    with second.client(headers={"Cookie": f"asc_auth_key={token}"}) as c:
        assert c.get(PATH).status_code == 401


def test_audit_records_who_changed_which_fields_from_where(portal: Portal) -> None:
    with portal.client(Role.ADMIN) as c:
        c.post(PATH, json=VALID_SETTINGS)
        c.post(PATH, json={**VALID_SETTINGS, "port": 465, "credentialsUserPassword": "another-Secret-2"})
        c.delete(PATH)
    lines = portal.server.cli("audit", "--portal", portal.hostname, "--no-header").stdout.strip().splitlines()
    assert len(lines) == 3
    newest, middle, first = (line.split("\t") for line in lines)
    assert newest[1] == "reset" and "isDefaultSettings" in newest[4]
    assert middle[1:4] == ["save", portal.emails[Role.ADMIN], "127.0.0.1"]
    assert set(middle[4].split(",")) == {"port", "credentialsUserPassword"}
    assert first[1] == "save" and "host" in first[4].split(",")
    assert "Secret" not in "\n".join(lines)


def test_a_failed_save_writes_no_audit_row(portal: Portal) -> None:
    with portal.client(Role.ADMIN) as c:
        assert c.post(PATH, json={**VALID_SETTINGS, "port": 0}).status_code == 400
    assert portal.server.cli("audit", "--portal", portal.hostname).stdout.strip() == ""


# --- OAuth 2.0 (ours) ----------------------------------------------------------------------------------

MAILBOX = "mailer@example.com"
CLIENT_SECRET = "client-Secret~4f1a"
MICROSOFT = {
    "provider": "microsoft",
    "tenantId": "contoso.onmicrosoft.com",
    "clientId": "11111111-2222-3333-4444-555555555555",
    "clientSecret": CLIENT_SECRET,
}
OAUTH2_SETTINGS = {
    **{k: v for k, v in VALID_SETTINGS.items() if k not in ("credentialsUserPassword", "useNtlm")},
    "credentialsUserName": MAILBOX,
    "authMethod": "oauth2",
    "oauth2": MICROSOFT,
}


def oauth2_settings(**oauth2: object) -> dict[str, object]:
    return {**OAUTH2_SETTINGS, "oauth2": {k: v for k, v in {**MICROSOFT, **oauth2}.items() if v is not None}}


def test_oauth2_settings_are_answered_with_secrets_empty_and_which_are_stored(portal: Portal) -> None:
    with portal.client(Role.ADMIN) as c:
        saved = c.post(PATH, json=OAUTH2_SETTINGS)
        assert saved.status_code == 200, saved.text
        expected = {
            **VALID_SETTINGS,
            "credentialsUserName": MAILBOX,
            "credentialsUserPassword": "",
            "useNtlm": False,
            "isDefaultSettings": False,
            "authMethod": "oauth2",
            "oauth2": {
                "provider": "microsoft",
                "tenantId": "contoso.onmicrosoft.com",
                "clientId": "11111111-2222-3333-4444-555555555555",
                "clientSecret": "",
                "certificate": "",
                "serviceAccountKey": "",
                "tokenUrl": "",
                "scope": "",
                "clientSecretStored": True,
                "certificateStored": False,
                "serviceAccountKeyStored": False,
            },
        }
        assert saved.json()["response"] == expected
        assert c.get(PATH).json()["response"] == expected
        # An answer sent back as it came keeps the secret (the target is unchanged).
        again = c.post(PATH, json={**expected, "senderDisplayName": "Sent back"})
        assert again.status_code == 200, again.text
        assert again.json()["response"]["oauth2"]["clientSecretStored"] is True


def test_an_omitted_oauth2_secret_is_kept_while_host_user_and_token_endpoint_are_unchanged(portal: Portal) -> None:
    with portal.client(Role.ADMIN) as c:
        assert c.post(PATH, json=oauth2_settings(tokenUrl="https://idp.example.com/token")).status_code == 200
        r = c.post(PATH, json={**oauth2_settings(clientSecret=None, tokenUrl="https://idp.example.com/token", scope="x.y"), "port": 587})
        assert r.status_code == 200, r.text
        assert r.json()["response"]["oauth2"]["scope"] == "x.y"
        assert r.json()["response"]["oauth2"]["clientSecretStored"] is True


@pytest.mark.parametrize(
    "change",
    [
        {"host": "evil.example.net"},
        {"port": 2526},
        {"credentialsUserName": "other@example.com"},
        {"oauth2": {**MICROSOFT, "tenantId": "fabrikam.onmicrosoft.com"}},
        {"oauth2": {**MICROSOFT, "clientId": "someone-else"}},
        {"oauth2": {**MICROSOFT, "tokenUrl": "https://evil.example.net/token"}},
        {"oauth2": {"provider": "generic", "clientId": "x", "tokenUrl": "https://evil.example.net/token"}},
    ],
    ids=["host", "port", "user", "tenant", "client", "token-url", "provider"],
)
def test_an_omitted_oauth2_secret_is_refused_naming_the_field_when_where_it_goes_changed(
    portal: Portal, change: dict[str, object]
) -> None:
    with portal.client(Role.ADMIN) as c:
        assert c.post(PATH, json=OAUTH2_SETTINGS).status_code == 200
        body = {**OAUTH2_SETTINGS, **change}
        body["oauth2"] = {k: v for k, v in body["oauth2"].items() if k != "clientSecret"}  # type: ignore[attr-defined]
        r = c.post(PATH, json=body)
        assert r.status_code == 400, r.text
        answer = r.json()
        assert list(answer["response"]["errors"]) == ["Oauth2.ClientSecret"]
        assert answer["error"]["message"].startswith("Empty Oauth2.ClientSecret: give the client secret")
        assert answer["error"]["message"] == answer["response"]["errors"]["Oauth2.ClientSecret"][0]
        assert c.get(PATH).json()["response"]["host"] == VALID_SETTINGS["host"]


def test_a_docspace_shaped_save_switches_back_to_password_and_drops_the_oauth2_secrets(portal: Portal) -> None:
    with portal.client(Role.ADMIN) as c:
        assert c.post(PATH, json=OAUTH2_SETTINGS).status_code == 200
        # The password must be given again: OAuth 2.0 settings keep none.
        without_password = {k: v for k, v in VALID_SETTINGS.items() if k != "credentialsUserPassword"}
        r = c.post(PATH, json={**without_password, "credentialsUserName": MAILBOX})
        assert r.status_code == 400 and r.json()["error"]["message"] == "Empty password."
        r = c.post(PATH, json=VALID_SETTINGS)
        assert r.status_code == 200, r.text
        assert r.json()["response"]["authMethod"] == "password" and r.json()["response"]["oauth2"] is None
        assert c.get(PATH).json()["response"] == r.json()["response"]
    rows = portal.server.query(
        "SELECT oauth2_provider, oauth2_client_id, oauth2_client_secret_ciphertext, password_ciphertext"
        " FROM smtp_settings s JOIN portals p ON p.id = s.portal_id WHERE p.hostname = :host",
        host=portal.hostname,
    )
    provider, client_id, secret, password = rows[0]
    assert (provider, client_id, secret) == (None, None, None)
    assert isinstance(password, str) and password.startswith("v1.")


def test_an_oauth2_field_error_is_a_validation_400_under_its_dotted_name(portal: Portal) -> None:
    with portal.client(Role.ADMIN) as c:
        r = c.post(PATH, json=oauth2_settings(tenantId=None, tokenUrl="http://idp.example.com/token"))
    assert r.status_code == 400
    answer = r.json()
    assert answer["statusCode"] == 400 and answer["response"]["status"] == 400
    assert answer["response"]["errors"] == {
        "Oauth2.TenantId": ['The field Oauth2.TenantId is required for provider "microsoft".'],
        "Oauth2.TokenUrl": [
            "The field Oauth2.TokenUrl must be an https:// URL: 'http://idp.example.com/token' uses http://,"
            " which is allowed only to a loopback address such as 127.0.0.1."
        ],
    }
    assert answer["error"]["message"] == next(iter(answer["response"]["errors"].values()))[0]


def test_the_audit_names_the_oauth2_fields_that_changed_and_never_their_values(portal: Portal) -> None:
    with portal.client(Role.ADMIN) as c:
        c.post(PATH, json=VALID_SETTINGS)
        assert c.post(PATH, json=OAUTH2_SETTINGS).status_code == 200
        assert c.post(PATH, json=oauth2_settings(clientSecret="another-Secret~2", scope="a.b")).status_code == 200
        c.delete(PATH)
    lines = portal.server.cli("audit", "--portal", portal.hostname, "--no-header").stdout.strip().splitlines()
    reset, second, first = (line.split("\t")[4].split(",") for line in lines[:3])
    assert set(first) == {
        "credentialsUserName",
        "authMethod",
        "oauth2.provider",
        "oauth2.tenantId",
        "oauth2.clientId",
        "credentialsUserPassword",
        "oauth2.clientSecret",
    }
    assert second == ["oauth2.scope", "oauth2.clientSecret"]
    assert "authMethod" in reset and "oauth2.clientSecret" in reset and "isDefaultSettings" in reset
    text = "\n".join(lines)
    assert CLIENT_SECRET not in text and "another-Secret" not in text and "contoso" not in text


def test_every_credential_style_reads_its_own_portals_settings(portal: Portal, server: Server) -> None:
    """The caller and the settings come from one statement: each way of signing in must get this portal's row.

    Another portal's saved settings sit beside them, so a join that picked the wrong row would show.
    """
    other = make_portal(server)
    with other.client(Role.ADMIN) as c:
        assert c.post(PATH, json={**VALID_SETTINGS, "host": "smtp.other.test"}).status_code == 200
    with portal.client(Role.ADMIN) as c:
        assert c.get(PATH).json()["response"]["isDefaultSettings"] is True  # none saved yet: the defaults
        assert c.post(PATH, json={**VALID_SETTINGS, "host": "smtp.mine.test"}).status_code == 200
    _, key = server.accounts().create_api_key(portal.hostname, portal.emails[Role.ADMIN])
    token = portal.sign_in(Role.ADMIN)
    basic = base64.b64encode(f"{portal.emails[Role.ADMIN]}:{PASSWORD}".encode()).decode()
    for headers in (
        {"Cookie": f"asc_auth_key={token}"},
        {"Authorization": f"Bearer {token}"},
        {"Authorization": token},
        {"Authorization": f"Bearer {key}"},
        {"Authorization": f"Basic {basic}"},
    ):
        with portal.client(headers=headers) as c:
            body = c.get(PATH).json()
        assert body["response"]["host"] == "smtp.mine.test", headers
        assert body["response"]["isDefaultSettings"] is False


def test_a_host_no_portal_has_reads_the_default_portals_settings(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data")
    try:
        default, other = make_portal(server, is_default=True), make_portal(server)
        with other.client(Role.ADMIN) as c:
            assert c.post(PATH, json={**VALID_SETTINGS, "host": "smtp.other.test"}).status_code == 200
        with default.client(Role.ADMIN) as c:
            assert c.post(PATH, json={**VALID_SETTINGS, "host": "smtp.default-portal.test"}).status_code == 200
        token = default.sign_in(Role.ADMIN)
        r = httpx.get(server.base_url + PATH, headers={"Host": "unknown.example.org", "Cookie": f"asc_auth_key={token}"})
        assert r.status_code == 200, r.text
        assert r.json()["response"]["host"] == "smtp.default-portal.test"
    finally:
        server.stop()
