"""The OpenAPI document's examples: realistic, valid against their schemas, and accepted by the real server.

The API page fills "Try it out" from them; without them it made values up from the patterns
(``"senderDisplayName": "}~y}}}{zzy{y}…"``) and the save it offered was refused with four field errors.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from serverkit import Server, make_portal, start_server
from test_openapi import _conforms, _fetch_document, _matches

# tests/e2e/smtp_peers.py: real aiosmtpd servers in threads, shared with the end-to-end tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from smtp_peers import raw_peer, smtp_peer  # noqa: E402

from smtpsettings.domain.accounts import Role

AUTHENTICATION = "/api/2.0/authentication"
SETTINGS = "/api/2.0/smtpsettings/smtp"
TEST = "/api/2.0/smtpsettings/smtp/test"
MESSAGES = "/api/2.0/smtpsettings/messages"


@pytest.fixture(scope="module")
def document(server: Any) -> dict[str, Any]:
    return _fetch_document(server.base_url)


def walk(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object in the document, with where it is."""
    if isinstance(node, dict):
        yield where, node
        for key, value in node.items():
            yield from walk(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{where}/{index}")


def request_examples(document: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    """The named examples of an operation's request body: their values by name."""
    content = document["paths"][path][method]["requestBody"]["content"]["application/json"]
    return {name: example["value"] for name, example in content["examples"].items()}


def test_every_schema_but_the_envelopes_has_examples_that_conform_to_it(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    # The success envelopes are composed by the page from what they wrap, and checked below through it.
    without = sorted(name for name, schema in schemas.items() if not schema.get("examples") and not name.endswith("Wrapper"))
    assert without == []
    for name, schema in schemas.items():
        for example in schema.get("examples", []):
            _conforms(document, name, example)


def test_every_request_body_offers_named_examples_that_conform_to_its_schema(document: dict[str, Any]) -> None:
    bodies = 0
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if "requestBody" not in operation:
                continue
            bodies += 1
            schema_name = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
            examples = request_examples(document, path, method)
            assert examples, (path, method)
            for example in examples.values():
                _conforms(document, schema_name, example)
    assert bodies == 4


def test_every_error_answer_has_an_example_of_its_own_status_that_conforms(document: dict[str, Any]) -> None:
    checked = 0
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if not status.startswith(("4", "5")):
                    continue
                media = response["content"]["application/json"]
                assert media.get("example"), (path, method, status)
                assert media["example"]["statusCode"] == int(status), (path, method, status)
                _conforms(document, media["schema"]["$ref"].rsplit("/", 1)[1], media["example"])
                checked += 1
    assert checked >= 100


def test_the_settings_examples_include_a_password_and_an_oauth2_sign_in(document: dict[str, Any]) -> None:
    examples = request_examples(document, SETTINGS, "post")
    assert {example["authMethod"] for example in examples.values()} >= {"password", "oauth2"}
    assert all(example["host"] != "127.0.0.1" and example["port"] in (25, 465, 587) for example in examples.values())


def test_every_patterned_string_has_examples_that_match_its_pattern(document: dict[str, Any]) -> None:
    patterned = [(where, node) for where, node in walk(document) if isinstance(node.get("pattern"), str)]
    assert len(patterned) >= 10  # host, names, subject, addresses, the query and header parameters
    for where, schema in patterned:
        assert schema.get("examples"), f"{where} has a pattern and no example"
        for example in schema["examples"]:
            assert _matches(schema["pattern"], example), (where, example)


def _point_at(client: httpx.Client, port: int) -> None:
    body = {"host": "127.0.0.1", "port": port, "senderAddress": "noreply@example.com", "enableSSL": False, "enableAuth": False}
    assert client.post(SETTINGS, json=body).status_code == 200


@pytest.fixture
def patient_server(tmp_path: Path) -> Iterator[Server]:
    """A server whose test mail waits for a silent mail server longer than the test takes."""
    server = start_server(
        tmp_path / "data", {"SMTPSETTINGS_SMTP_COMMAND_TIMEOUT": "60", "SMTPSETTINGS_SMTP_JOB_TIMEOUT": "120"}
    )
    yield server
    server.stop()


def test_every_request_example_is_accepted_by_the_server(document: dict[str, Any], patient_server: Server) -> None:
    """Each example sent as the page sends it, by a signed-in admin: none is refused for its fields.

    Nothing leaves the machine: tests of the example settings wait behind a test held by a loopback tarpit
    (409, after the body has been read and validated), and example messages go to a loopback sink.
    """
    portal = make_portal(patient_server)
    with portal.client(Role.ADMIN) as c, raw_peer() as tarpit, smtp_peer() as (sink, inbox):
        for example in request_examples(document, AUTHENTICATION, "post").values():
            r = c.post(AUTHENTICATION, json=example)
            # Well formed: refused only because the example's account is not on this portal.
            assert r.status_code == 401, r.text
            assert r.json()["error"]["message"] == "User authentication failed"

        for example in request_examples(document, SETTINGS, "post").values():
            r = c.post(SETTINGS, json=example)
            assert r.status_code == 200, r.text
            _conforms(document, "SmtpSettingsWrapper", r.json())
            assert r.json()["response"]["host"] == example["host"]
            assert r.json()["response"]["authMethod"] == example["authMethod"]

        _point_at(c, tarpit.port)
        assert c.get(TEST).json()["response"]["completed"] is False  # held by the tarpit
        for example in request_examples(document, TEST, "post").values():
            r = c.post(TEST, json=example)
            assert r.status_code == 409, r.text

        _point_at(c, sink)
        accepted = []
        for example in request_examples(document, MESSAGES, "post").values():
            r = c.post(MESSAGES, json=example)
            assert r.status_code == 202, r.text
            _conforms(document, "OutgoingMessageWrapper", r.json())
            accepted.append(r.json()["response"]["id"])
        deadline = time.monotonic() + 20
        while len(inbox.messages) < len(accepted) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert sorted(m["Subject"] for m in inbox.messages) == sorted(
        e["subject"] for e in request_examples(document, MESSAGES, "post").values()
    )
