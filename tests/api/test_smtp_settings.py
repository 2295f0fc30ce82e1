"""GET, POST and DELETE /api/2.0/smtpsettings/smtp through real HTTP against a running server."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from serverkit import VALID_SETTINGS, Portal

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
    }
    assert body["count"] == 1 and body["status"] == 0 and body["statusCode"] == 200
    assert body["links"] == [{"href": f"http://{portal.hostname}{PATH}", "action": "GET"}]


def test_save_returns_what_was_stored_and_get_returns_it_after(portal: Portal) -> None:
    with portal.client(Role.OWNER) as c:
        saved = c.post(PATH, json={**VALID_SETTINGS, "useNtlm": True, "isDefaultSettings": True})
        assert saved.status_code == 200, saved.text
        expected = {**VALID_SETTINGS, "useNtlm": True, "credentialsUserPassword": "", "isDefaultSettings": False}
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
    lines = portal.server.cli("audit", "--portal", portal.hostname).stdout.strip().splitlines()
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
