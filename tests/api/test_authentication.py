"""Sign-in, the ways a request proves who it is, sign-out, and the brute-force limits."""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any
from pathlib import Path

import httpx
import pytest
from serverkit import PASSWORD, Portal, Server, make_portal, smtpsettings_command, start_server

from smtpsettings.domain.accounts import Role

AUTH = "/api/2.0/authentication"
SMTP = "/api/2.0/smtpsettings/smtp"
SETTINGS = "/api/2.0/settings"


def published_hash_settings(portal: Portal) -> dict[str, Any]:
    """What the portal publishes to a sign-in page that is not signed in."""
    with portal.client() as c:
        r = c.get(SETTINGS)
    assert r.status_code == 200, r.text
    return r.json()["response"]["passwordHash"]  # type: ignore[no-any-return]


def docspace_client_hash(password: str, settings: dict[str, Any]) -> str:
    """``passwordHash`` as DocSpace's sign-in page computes it (createPasswordHash), written out independently."""
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), settings["salt"].encode(), settings["iterations"], settings["size"] // 8)
    return digest.hex()


def user_with_a_password(portal: Portal, role: Role = Role.ADMIN) -> str:
    """A user made the way `user create` makes one (both verifiers); their email. The password is PASSWORD."""
    email = f"new-{role.value}@{portal.hostname}"
    portal.server.accounts().create_user(portal.hostname, email=email, password=PASSWORD, role=role)
    return email


def set_password_by_cli(server: Server, hostname: str, email: str, password: str) -> None:
    """``smtpsettings user set-password --password-stdin``, as an operator runs it."""
    result = subprocess.run(
        [*smtpsettings_command(), "user", "set-password", "--portal", hostname, "--email", email, "--password-stdin"],
        env=server.env,
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_sign_in_answers_token_and_expiry_and_sets_an_httponly_cookie(portal: Portal) -> None:
    with portal.client() as c:
        r = c.post(AUTH, json={"userName": portal.emails[Role.ADMIN], "password": PASSWORD})
    assert r.status_code == 200
    body = r.json()["response"]
    assert set(body) == {"token", "expires"} and len(body["token"]) >= 32
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"asc_auth_key={body['token']};") and "HttpOnly" in cookie


def test_sign_in_accepts_the_fields_docspace_clients_also_send(portal: Portal) -> None:
    with portal.client() as c:
        r = c.post(
            AUTH,
            json={"userName": portal.emails[Role.ADMIN], "password": PASSWORD, "session": True, "culture": "en-US", "provider": None},
        )
    assert r.status_code == 200
    assert "Max-Age" not in r.headers["set-cookie"]  # session: a browser-session cookie
    # As in DocSpace, a session sign-in names no expiry; the token works.
    body = r.json()["response"]
    assert set(body) == {"token"}
    with portal.client(headers={"Authorization": body["token"]}) as c:
        assert c.get(SMTP).status_code == 200


def test_email_is_matched_case_insensitively(portal: Portal) -> None:
    with portal.client() as c:
        r = c.post(AUTH, json={"userName": portal.emails[Role.ADMIN].upper(), "password": PASSWORD})
    assert r.status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"userName": "admin@nowhere.test", "password": PASSWORD},
        {"userName": "{admin}", "password": "wrong password"},
        {"userName": "{admin}", "password": ""},
        {"userName": "{admin}"},
    ],
)
def test_bad_credentials_get_401_user_authentication_failed(portal: Portal, body: dict[str, str]) -> None:
    body = {k: v.replace("{admin}", portal.emails[Role.ADMIN]) for k, v in body.items()}
    with portal.client() as c:
        r = c.post(AUTH, json=body)
    assert r.status_code == 401
    assert r.json()["error"]["message"] == "User authentication failed"
    assert "set-cookie" not in r.headers


def test_a_user_of_one_portal_cannot_sign_in_on_another(portal: Portal, server: Server) -> None:
    other = make_portal(server)
    with other.client() as c:
        assert c.post(AUTH, json={"userName": portal.emails[Role.ADMIN], "password": PASSWORD}).status_code == 401


@pytest.mark.parametrize("style", ["cookie", "raw", "bearer", "basic"])
def test_every_docspace_credential_style_authenticates(portal: Portal, style: str) -> None:
    email = portal.emails[Role.ADMIN]
    token = portal.sign_in(Role.ADMIN)
    headers = {
        "cookie": {"Cookie": f"asc_auth_key={token}"},
        "raw": {"Authorization": token},
        "bearer": {"Authorization": f"Bearer {token}"},
        "basic": {"Authorization": "Basic " + base64.b64encode(f"{email}:{PASSWORD}".encode()).decode()},
    }[style]
    with portal.client(headers=headers) as c:
        assert c.get(SMTP).status_code == 200
        assert c.get(AUTH).json()["response"] is True


@pytest.mark.parametrize(
    "cookie",
    [
        "theme=dark; asc_auth_key={token}; lang=en",
        'asc_auth_key="{token}"',
        "asc_auth_key=stale; asc_auth_key={token}",  # the last one wins
        "{token}",  # the SDK's api_key={"asc_auth_key": TOKEN} sends the bare value
    ],
)
def test_the_token_is_found_in_any_cookie_header_a_client_sends(portal: Portal, cookie: str) -> None:
    token = portal.sign_in(Role.ADMIN)
    with portal.client(headers={"Cookie": cookie.format(token=token)}) as c:
        assert c.get(SMTP).status_code == 200
    with portal.client(headers={"Cookie": cookie.format(token="not-" + token)}) as c:
        assert c.get(SMTP).status_code == 401


def test_basic_with_a_wrong_password_is_401(portal: Portal) -> None:
    bad = base64.b64encode(f"{portal.emails[Role.ADMIN]}:nope".encode()).decode()
    with portal.client(headers={"Authorization": f"Basic {bad}"}) as c:
        assert c.get(SMTP).status_code == 401
    with portal.client(headers={"Authorization": "Basic !!!not-base64"}) as c:
        assert c.get(SMTP).status_code == 401


def test_api_key_authenticates_as_its_user_until_revoked(portal: Portal, server: Server) -> None:
    key_id, key = server.accounts().create_api_key(portal.hostname, portal.emails[Role.ADMIN])
    with portal.client(headers={"Authorization": f"Bearer {key}"}) as c:
        assert c.get(SMTP).status_code == 200
        server.accounts().revoke_api_key(key_id)
        assert c.get(SMTP).status_code == 401


def test_api_key_of_a_plain_user_is_denied_settings(portal: Portal, server: Server) -> None:
    _, key = server.accounts().create_api_key(portal.hostname, portal.emails[Role.USER])
    with portal.client(headers={"Authorization": f"Bearer {key}"}) as c:
        assert c.get(SMTP).status_code == 403


def test_is_signed_in_is_false_without_or_with_bad_credentials(portal: Portal) -> None:
    with portal.client() as c:
        assert c.get(AUTH).json()["response"] is False
    with portal.client(headers={"Authorization": "Bearer not-a-token"}) as c:
        r = c.get(AUTH)
        assert r.status_code == 200 and r.json()["response"] is False


def test_logout_ends_the_token(portal: Portal) -> None:
    token = portal.sign_in(Role.ADMIN)
    with portal.client(headers={"Authorization": token}) as c:
        r = c.post(AUTH + "/logout")
        assert r.status_code == 200
        assert "asc_auth_key=" in r.headers["set-cookie"]
        assert c.get(SMTP).status_code == 401
        assert c.get(AUTH).json()["response"] is False


def test_a_stale_cookie_is_not_passed_over_for_a_header(portal: Portal) -> None:
    token = portal.sign_in(Role.ADMIN)
    with portal.client(headers={"Cookie": "asc_auth_key=stale", "Authorization": f"Bearer {token}"}) as c:
        assert c.get(SMTP).status_code == 401


def test_unknown_host_without_a_default_portal_is_404(tmp_path: Path) -> None:
    from smtpsettings.services.accounts import AccountsService
    from smtpsettings.store.database import Database

    data = tmp_path / "data"
    data.mkdir()
    db = Database(f"sqlite:///{data / 'smtpsettings.db'}")
    db.migrate()
    AccountsService(db).create_portal("only.example.com", is_default=False)
    db.dispose()
    server = start_server(data)
    try:
        r = httpx.get(server.base_url + SMTP, headers={"Host": "other.example.com"})
        assert r.status_code == 404
        assert r.json()["error"]["message"] == "No portal answers this host name."
        r = httpx.post(server.base_url + AUTH, headers={"Host": "other.example.com"}, json={"userName": "a", "password": "b"})
        assert r.status_code == 404
        assert httpx.post(server.base_url + AUTH + "/logout", headers={"Host": "other.example.com"}).status_code == 404
        assert httpx.get(server.base_url + SETTINGS, headers={"Host": "other.example.com"}).status_code == 404
        assert "First start" not in server.stdout
    finally:
        server.stop()


def test_unknown_host_falls_back_to_the_default_portal(server: Server) -> None:
    # The shared server's first start made "localhost" the default portal.
    r = httpx.get(server.base_url + AUTH, headers={"Host": "unknown-name.example.org"})
    assert r.status_code == 200 and r.json()["response"] is False


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("limited") / "data",
        {
            "SMTPSETTINGS_LOGIN_MAX_FAILURES_PER_ACCOUNT": "3",
            "SMTPSETTINGS_LOGIN_MAX_FAILURES_PER_ADDRESS": "6",
            "SMTPSETTINGS_TRUSTED_PROXIES": "127.0.0.1",
        },
    )
    yield srv
    srv.stop()


def test_repeated_failures_lock_the_account_even_for_the_right_password(limited_server: Server) -> None:
    portal = make_portal(limited_server)
    email = portal.emails[Role.ADMIN]
    with portal.client(headers={"X-Forwarded-For": "198.51.100.1"}) as c:
        for _ in range(3):
            assert c.post(AUTH, json={"userName": email, "password": "guess"}).status_code == 401
        r = c.post(AUTH, json={"userName": email, "password": PASSWORD})
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) > 0
    assert r.json()["statusCode"] == 429 and r.json()["error"]["message"]
    # Another account from another address is unaffected.
    with portal.client(headers={"X-Forwarded-For": "198.51.100.2"}) as c:
        assert c.post(AUTH, json={"userName": portal.emails[Role.OWNER], "password": PASSWORD}).status_code == 200


def test_one_address_guessing_many_accounts_is_limited(limited_server: Server) -> None:
    portal = make_portal(limited_server)
    with portal.client(headers={"X-Forwarded-For": "203.0.113.9"}) as c:
        statuses = [c.post(AUTH, json={"userName": f"u{i}@x.test", "password": "guess"}).status_code for i in range(7)]
        assert statuses[:6] == [401] * 6 and statuses[6] == 429
        r = c.post(AUTH, json={"userName": portal.emails[Role.ADMIN], "password": PASSWORD})
        assert r.status_code == 429
    with portal.client(headers={"X-Forwarded-For": "203.0.113.10"}) as c:
        assert c.post(AUTH, json={"userName": portal.emails[Role.ADMIN], "password": PASSWORD}).status_code == 200


def test_basic_auth_guessing_is_limited_too(limited_server: Server) -> None:
    portal = make_portal(limited_server)
    bad = base64.b64encode(f"{portal.emails[Role.USER]}:guess".encode()).decode()
    with portal.client(headers={"Authorization": f"Basic {bad}", "X-Forwarded-For": "192.0.2.77"}) as c:
        statuses = [c.get(SMTP).status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]


def test_forwarded_for_is_ignored_from_untrusted_peers(portal: Portal) -> None:
    # The shared server trusts no proxy: the audit records the real peer, not the header.
    from serverkit import VALID_SETTINGS

    with portal.client(Role.ADMIN, headers={"X-Forwarded-For": "198.51.100.200"}) as c:
        c.post(SMTP, json=VALID_SETTINGS)
    line = portal.server.cli("audit", "--portal", portal.hostname, "--no-header").stdout.splitlines()[0]
    assert line.split("\t")[3] == "127.0.0.1"


def test_a_token_of_the_default_portal_works_under_a_host_no_portal_has(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data")
    try:
        default, other = make_portal(server, is_default=True), make_portal(server)
        unknown = {"Host": "unknown-name.example.org"}
        token = default.sign_in(Role.ADMIN)
        r = httpx.get(server.base_url + SMTP, headers={**unknown, "Cookie": f"asc_auth_key={token}"})
        assert r.status_code == 200, r.text
        # A valid token of a portal that does not answer this Host stays refused.
        foreign = other.sign_in(Role.ADMIN)
        assert httpx.get(server.base_url + SMTP, headers={**unknown, "Cookie": f"asc_auth_key={foreign}"}).status_code == 401
        assert httpx.get(server.base_url + SMTP, headers={**unknown, "Authorization": "Bearer nope"}).status_code == 401
    finally:
        server.stop()


# -- GET /api/2.0/settings and sign-in with passwordHash ---------------------------------------------


def test_settings_publish_docspaces_password_hash_settings_to_a_caller_not_signed_in(portal: Portal, server: Server) -> None:
    with portal.client() as c:
        r = c.get(SETTINGS)
    assert r.status_code == 200
    body = r.json()
    assert body["statusCode"] == 200 and body["status"] == 0
    settings = body["response"]
    assert settings["passwordHash"]["size"] == 256 and settings["passwordHash"]["iterations"] == 100_000
    assert re.fullmatch(r"[0-9a-f]{64}", settings["passwordHash"]["salt"])
    # What the official SDK requires of a SettingsDto is there too.
    assert settings["cookieSettingsEnabled"] is False and isinstance(settings["deepLink"], dict)
    # The salt is the portal's own, and stays.
    assert published_hash_settings(portal) == settings["passwordHash"]
    assert published_hash_settings(make_portal(server))["salt"] != settings["passwordHash"]["salt"]


def test_settings_leave_the_hash_settings_out_for_a_signed_in_caller_unless_asked(portal: Portal) -> None:
    with portal.client(Role.USER) as c:
        assert "passwordHash" not in c.get(SETTINGS).json()["response"]
        assert "passwordHash" not in c.get(SETTINGS, params={"withpassword": "false"}).json()["response"]
        asked = c.get(SETTINGS, params={"withpassword": "true"}).json()["response"]
    assert asked["passwordHash"] == published_hash_settings(portal)
    # A token that is no longer valid is a caller not signed in.
    with portal.client(headers={"Authorization": "Bearer stale"}) as c:
        assert c.get(SETTINGS).json()["response"]["passwordHash"] == published_hash_settings(portal)


@pytest.mark.parametrize("value", ["maybe", "\x1e", "true\x1f"])
def test_settings_refuse_a_withpassword_that_is_no_boolean(portal: Portal, value: str) -> None:
    with portal.client() as c:
        r = c.get(SETTINGS, params={"withpassword": value})
    assert r.status_code == 400
    assert r.json()["response"]["errors"] == {"withpassword": [f"The value '{value}' is not valid."]}


def test_settings_read_withpassword_with_ascii_white_space_around(portal: Portal) -> None:
    with portal.client(Role.USER) as c:
        assert "passwordHash" in c.get(SETTINGS, params={"withpassword": " TRUE\t"}).json()["response"]


def test_sign_in_with_the_password_hash_docspaces_sign_in_page_computes(portal: Portal, server: Server) -> None:
    email = user_with_a_password(portal)
    client_hash = docspace_client_hash(PASSWORD, published_hash_settings(portal))
    with portal.client() as c:
        r = c.post(AUTH, json={"userName": email, "passwordHash": client_hash})
    assert r.status_code == 200, r.text
    token = r.json()["response"]["token"]
    with portal.client(headers={"Authorization": f"Bearer {token}"}) as c:
        assert c.get(SMTP).status_code == 200
    # The hash is a password equivalent: it is neither logged nor stored.
    assert client_hash not in server.log_text()
    assert client_hash.encode() not in server.storage_bytes()


def test_a_password_hash_of_another_portal_or_password_is_refused(portal: Portal, server: Server) -> None:
    email = user_with_a_password(portal)
    wrong = [
        docspace_client_hash("not the password", published_hash_settings(portal)),
        docspace_client_hash(PASSWORD, published_hash_settings(make_portal(server))),  # another portal's salt
        PASSWORD,  # the password itself is not its hash
    ]
    with portal.client() as c:
        for password_hash in wrong:
            r = c.post(AUTH, json={"userName": email, "passwordHash": password_hash})
            assert r.status_code == 401 and r.json()["error"]["message"] == "User authentication failed"


def test_a_password_hash_wins_over_a_password_sent_with_it(portal: Portal) -> None:
    email = user_with_a_password(portal)
    client_hash = docspace_client_hash(PASSWORD, published_hash_settings(portal))
    with portal.client() as c:
        assert c.post(AUTH, json={"userName": email, "password": PASSWORD, "passwordHash": "0" * 64}).status_code == 401
        assert c.post(AUTH, json={"userName": email, "password": "wrong password", "passwordHash": client_hash}).status_code == 200
        # An empty or blank passwordHash counts as not sent: the password decides.
        for blank in ("", "   "):
            assert c.post(AUTH, json={"userName": email, "password": PASSWORD, "passwordHash": blank}).status_code == 200
        r = c.post(AUTH, json={"userName": email, "passwordHash": 42})
    assert r.status_code == 400
    assert "PasswordHash" in r.json()["response"]["errors"]


def test_a_user_from_before_the_hash_signs_in_with_it_after_one_password_sign_in(portal: Portal, server: Server) -> None:
    # make_portal stores only the password's argon2 hash, as every user had it before migration 0003.
    email = portal.emails[Role.ADMIN]
    user_id = server.query("SELECT id FROM users WHERE email = :email", email=email)[0][0]
    assert server.query("SELECT client_hash_verifier FROM users WHERE id = :id", id=user_id) == [(None,)]
    client_hash = docspace_client_hash(PASSWORD, published_hash_settings(portal))
    with portal.client() as c:
        assert c.post(AUTH, json={"userName": email, "passwordHash": client_hash}).status_code == 401
        assert c.post(AUTH, json={"userName": email, "password": PASSWORD}).status_code == 200
        assert c.post(AUTH, json={"userName": email, "passwordHash": client_hash}).status_code == 200
    [(verifier,)] = server.query("SELECT client_hash_verifier FROM users WHERE id = :id", id=user_id)
    assert str(verifier).startswith("$argon2id$")


def test_set_password_gives_the_user_a_new_password_hash_and_ends_the_old_one(portal: Portal, server: Server) -> None:
    email = user_with_a_password(portal)
    settings = published_hash_settings(portal)
    set_password_by_cli(server, portal.hostname, email, "another-Pass-7")
    with portal.client() as c:
        assert c.post(AUTH, json={"userName": email, "passwordHash": docspace_client_hash(PASSWORD, settings)}).status_code == 401
        new_hash = docspace_client_hash("another-Pass-7", settings)
        assert c.post(AUTH, json={"userName": email, "passwordHash": new_hash}).status_code == 200


def test_wrong_password_hashes_count_toward_the_account_limit(limited_server: Server) -> None:
    portal = make_portal(limited_server)
    email = user_with_a_password(portal)
    wrong = docspace_client_hash("a guess", published_hash_settings(portal))
    with portal.client(headers={"X-Forwarded-For": "198.51.100.50"}) as c:
        for _ in range(3):
            assert c.post(AUTH, json={"userName": email, "passwordHash": wrong}).status_code == 401
        right = docspace_client_hash(PASSWORD, published_hash_settings(portal))
        assert c.post(AUTH, json={"userName": email, "passwordHash": right}).status_code == 429
        assert c.post(AUTH, json={"userName": email, "password": PASSWORD}).status_code == 429


def test_set_password_ends_the_accounts_lockout(limited_server: Server) -> None:
    portal = make_portal(limited_server)
    email = portal.emails[Role.OWNER]
    with portal.client(headers={"X-Forwarded-For": "198.51.100.60"}) as c:
        for _ in range(3):
            assert c.post(AUTH, json={"userName": email, "password": "guess"}).status_code == 401
        assert c.post(AUTH, json={"userName": email, "password": PASSWORD}).status_code == 429
        set_password_by_cli(limited_server, portal.hostname, email, "fresh-Start-42")
        assert c.post(AUTH, json={"userName": email, "password": "fresh-Start-42"}).status_code == 200


# -- sign-out, as DocSpace's anonymous logout ---------------------------------------------------------


def test_logout_without_credentials_answers_200(portal: Portal) -> None:
    with portal.client() as c:
        r = c.post(AUTH + "/logout")
    assert r.status_code == 200, r.text
    assert r.json()["statusCode"] == 200 and "response" not in r.json()
    assert "asc_auth_key=" in r.headers["set-cookie"]  # the cookie is cleared all the same


@pytest.mark.parametrize("credentials", [{"Authorization": "Bearer no-such-token"}, {"Cookie": "asc_auth_key=ended"}])
def test_logout_with_a_token_no_longer_valid_answers_200(portal: Portal, credentials: dict[str, str]) -> None:
    with portal.client(headers=credentials) as c:
        assert c.post(AUTH + "/logout").status_code == 200


def test_logout_through_the_cookie_ends_that_token_only(portal: Portal) -> None:
    ended, kept = portal.sign_in(Role.ADMIN), portal.sign_in(Role.ADMIN)
    with portal.client(headers={"Cookie": f"asc_auth_key={ended}"}) as c:
        assert c.post(AUTH + "/logout").status_code == 200
        assert c.get(SMTP).status_code == 401
        assert c.post(AUTH + "/logout").status_code == 200  # again: now anonymous
    with portal.client(headers={"Authorization": kept}) as c:
        assert c.get(SMTP).status_code == 200


def test_logout_with_an_api_key_leaves_the_key_valid(portal: Portal, server: Server) -> None:
    _, key = server.accounts().create_api_key(portal.hostname, portal.emails[Role.ADMIN])
    with portal.client(headers={"Authorization": f"Bearer {key}"}) as c:
        assert c.post(AUTH + "/logout").status_code == 200
        assert c.get(SMTP).status_code == 200



@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Two worker processes sharing one database: a lock one of them counts must reach the other."""
    srv = start_server(tmp_path_factory.mktemp("keylock") / "data", {"SMTPSETTINGS_LOGIN_MAX_FAILURES_PER_ACCOUNT": "3"}, workers=2)
    yield srv
    srv.stop()


def _answers_on_fresh_connections(portal: Portal, key: str, n: int = 8) -> list[httpx.Response]:
    """``n`` requests with ``key``, each on its own connection, so both workers answer some of them."""
    answers = []
    for _ in range(n):
        with portal.client(headers={"Authorization": f"Bearer {key}"}) as c:
            answers.append(c.get(SMTP))
    return answers


def _within(seconds: float, condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def test_a_key_locked_by_wrong_attempts_is_refused_over_http_until_cleared(two_workers: Server) -> None:
    portal = make_portal(two_workers)
    key_id, key = two_workers.accounts().create_api_key(portal.hostname, portal.emails[Role.ADMIN])
    assert {r.status_code for r in _answers_on_fresh_connections(portal, key)} == {200}
    wrong = key[:-1] + ("A" if key[-1] != "A" else "B")
    with portal.client(headers={"Authorization": f"Bearer {wrong}"}) as c:
        assert [c.get(SMTP).status_code for _ in range(4)] == [401, 401, 401, 429]
    # The right key is refused as its wrong attempts are, by the worker that counted them at once and by the
    # other one within its refresh interval (2 s).
    assert _within(4, lambda: {r.status_code for r in _answers_on_fresh_connections(portal, key)} == {429})
    refused = _answers_on_fresh_connections(portal, key, 1)[0]
    assert 0 < int(refused.headers["retry-after"]) <= 15 * 60
    assert refused.json()["statusCode"] == 429 and refused.json()["error"]["message"] == "Too many failed sign-in attempts. Try again later."
    # Another key of the same user is unaffected.
    _, other = two_workers.accounts().create_api_key(portal.hostname, portal.emails[Role.ADMIN])
    assert {r.status_code for r in _answers_on_fresh_connections(portal, other)} == {200}
    # An operator lifts it: every worker lets the key in again within a few seconds.
    cleared = two_workers.cli("lockout", "clear", "--key", key_id, "--no-header").stdout
    assert cleared.split("\t")[:2] == ["http-key", key_id], cleared
    assert _within(4, lambda: {r.status_code for r in _answers_on_fresh_connections(portal, key)} == {200})
