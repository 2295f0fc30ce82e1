"""A saved password or OAuth 2.0 secret is never readable again: not in responses, the server log, or the database file."""

from __future__ import annotations

import base64
import json
import secrets
import time

import pytest
from serverkit import VALID_SETTINGS, Portal

from smtpsettings.crypto import DecryptionError, KeyRing
from smtpsettings.domain.accounts import Role
from smtpsettings.services.smtp import SECRET_NAMES, secret_purpose

PATH = "/api/2.0/smtpsettings/smtp"


def _forms(secret: str) -> list[bytes]:
    raw = secret.encode()
    return [raw, base64.b64encode(raw), raw.hex().encode(), secret.encode("utf-16-le")]


def test_a_saved_password_appears_nowhere(portal: Portal) -> None:
    secret = "Pw-" + secrets.token_hex(12)
    bodies: list[bytes] = []
    with portal.client(Role.OWNER) as c:
        for r in (
            c.post(PATH, json={**VALID_SETTINGS, "credentialsUserPassword": secret}),
            c.get(PATH),
            c.post(PATH, json={**VALID_SETTINGS, "credentialsUserPassword": "", "senderDisplayName": "Kept"}),
            c.post(PATH, json={**VALID_SETTINGS, "credentialsUserPassword": secret, "port": 0}),
            c.post(PATH, content=json.dumps({**VALID_SETTINGS, "credentialsUserPassword": secret})[:-3].encode(), headers={"Content-Type": "application/json"}),
            c.get("/api/2.0/openapi.json"),
        ):
            bodies.append(r.content + str(r.headers).encode())
        assert c.get(PATH).json()["response"]["credentialsUserPassword"] == ""
    audit = portal.server.cli("audit", "--portal", portal.hostname).stdout.encode()
    stored = portal.server.query(
        "SELECT password_ciphertext FROM smtp_settings s JOIN portals p ON p.id = s.portal_id WHERE p.hostname = :host",
        host=portal.hostname,
    )[0][0]
    assert isinstance(stored, str) and stored.startswith("v1.")  # encrypted, and still there after the save that omitted it
    haystacks = {
        "responses": b"\n".join(bodies),
        "server log": portal.server.log_path.read_bytes(),
        "audit": audit,
        "database files": portal.server.storage_bytes(),
    }
    for where, haystack in haystacks.items():
        for form in _forms(secret):
            assert form not in haystack, f"password found in the {where}"


def test_the_default_smtp_password_from_configuration_is_not_shown(portal: Portal) -> None:
    with portal.client(Role.ADMIN) as c:
        r = c.get(PATH)
    assert r.json()["response"]["credentialsUserPassword"] == ""
    assert b"default-secret-Zq9" not in r.content
    assert "default-secret-Zq9" not in portal.server.log_text()
    assert "default-secret-Zq9" not in portal.server.stdout


def test_tokens_and_api_keys_are_stored_only_as_hashes(portal: Portal) -> None:
    token = portal.sign_in(Role.ADMIN)
    _, key = portal.server.accounts().create_api_key(portal.hostname, portal.emails[Role.ADMIN])
    data = portal.server.storage_bytes()
    assert token.encode() not in data and key.encode() not in data
    assert b"correct horse battery" not in data


def test_the_log_has_one_json_line_per_request_without_credentials(portal: Portal) -> None:
    token = portal.sign_in(Role.ADMIN)
    marker = "/api/2.0/smtpsettings/smtp?probe=" + secrets.token_hex(4)
    with portal.client(headers={"Authorization": f"Bearer {token}"}) as c:
        c.get(marker)
    # The line is written just after the response goes out: give the worker a moment.
    deadline = time.monotonic() + 5
    while True:
        log = portal.server.log_text()
        lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        mine = [line for line in lines if line.get("portal") == portal.hostname and line.get("event") == "request"]
        if any(line["path"] == "/api/2.0/smtpsettings/smtp" and line["status"] == 200 for line in mine):
            break
        assert time.monotonic() < deadline, "no log line for the request"
        time.sleep(0.05)
    assert all({"method", "path", "status", "duration_ms", "request_id", "timestamp"} <= set(line) for line in mine)
    assert token not in log


def _oauth2_settings(secret: str) -> dict[str, object]:
    return {
        **{k: v for k, v in VALID_SETTINGS.items() if k != "credentialsUserPassword"},
        "credentialsUserName": "mailer@example.com",
        "authMethod": "oauth2",
        "oauth2": {"provider": "generic", "clientId": "app-1", "clientSecret": secret, "tokenUrl": "https://idp.example.com/token"},
    }


def _stored(portal: Portal, column: str) -> object:
    return portal.server.query(
        f"SELECT {column} FROM smtp_settings s JOIN portals p ON p.id = s.portal_id WHERE p.hostname = :host", host=portal.hostname
    )[0][0]


def test_a_saved_oauth2_client_secret_appears_nowhere(portal: Portal) -> None:
    secret = "Cs-" + secrets.token_hex(12)
    bodies: list[bytes] = []
    with portal.client(Role.OWNER) as c:
        settings = _oauth2_settings(secret)
        without = {**settings, "oauth2": {k: v for k, v in settings["oauth2"].items() if k != "clientSecret"}}  # type: ignore[attr-defined]
        for r in (
            c.post(PATH, json=settings),
            c.get(PATH),
            c.post(PATH, json={**without, "senderDisplayName": "Kept"}),
            c.post(PATH, json={**settings, "port": 0}),
            c.post(PATH + "/test", json={**settings, "port": 0}),
        ):
            bodies.append(r.content + str(r.headers).encode())
        assert c.get(PATH).json()["response"]["oauth2"]["clientSecretStored"] is True
    stored = _stored(portal, "oauth2_client_secret_ciphertext")
    assert isinstance(stored, str) and stored.startswith("v1.")  # encrypted, and kept by the save that omitted it
    haystacks = {
        "responses": b"\n".join(bodies),
        "server log": portal.server.log_path.read_bytes(),
        "audit": portal.server.cli("audit", "--portal", portal.hostname).stdout.encode(),
        "database files": portal.server.storage_bytes(),
    }
    for where, haystack in haystacks.items():
        for form in _forms(secret):
            assert form not in haystack, f"client secret found in the {where}"


def test_each_secret_decrypts_only_as_the_secret_of_its_own_portal(tmp_path: object) -> None:
    keyring = KeyRing(tmp_path / "keys.json")  # type: ignore[operator]
    purposes = [secret_purpose(name, portal_id) for name in ("password", *SECRET_NAMES) for portal_id in (1, 2)]
    assert len(set(purposes)) == len(purposes)
    sealed = keyring.encrypt("s", secret_purpose("client_secret", 1))
    assert keyring.decrypt(sealed, secret_purpose("client_secret", 1)) == "s"
    for other in purposes:
        if other != secret_purpose("client_secret", 1):
            with pytest.raises(DecryptionError):
                keyring.decrypt(sealed, other)


def test_keys_rotate_re_encrypts_oauth2_secrets_and_the_server_still_reads_them(portal: Portal) -> None:
    secret = "Cs-" + secrets.token_hex(12)
    with portal.client(Role.ADMIN) as c:
        assert c.post(PATH, json=_oauth2_settings(secret)).status_code == 200
        before = _stored(portal, "oauth2_client_secret_ciphertext")
        out = portal.server.cli("keys", "rotate").stdout
        after = _stored(portal, "oauth2_client_secret_ciphertext")
        keyring = KeyRing(portal.server.data_dir / "keys.json")
        assert isinstance(after, str) and after != before and after.split(".")[1] == keyring.primary_key_id
        assert keyring.key_id_of(after) in out
        portal_id = portal.server.query("SELECT id FROM portals WHERE hostname = :h", h=portal.hostname)[0][0]
        assert keyring.decrypt(after, secret_purpose("client_secret", int(portal_id))) == secret  # type: ignore[call-overload]
        # The running server decrypts it: a save that omits the secret compares it and keeps it.
        settings = _oauth2_settings(secret)
        without = {**settings, "oauth2": {k: v for k, v in settings["oauth2"].items() if k != "clientSecret"}}  # type: ignore[attr-defined]
        r = c.post(PATH, json={**without, "senderDisplayName": "After rotation"})
        assert r.status_code == 200, r.text
        assert _stored(portal, "oauth2_client_secret_ciphertext") == after
        r = c.post(PATH, json=settings)  # the same secret again: decrypted and found unchanged
        assert r.status_code == 200, r.text
    audit = portal.server.cli("audit", "--portal", portal.hostname, "--no-header").stdout.splitlines()
    assert "oauth2.clientSecret" not in audit[0]
