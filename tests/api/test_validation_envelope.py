"""The validation 400 in DocSpace's shape, field by field, against a real server.

DocSpace (``CommonApiResponse``) answers a model validation failure with its *success* envelope: ``response``
is ASP.NET's ValidationProblemDetails, with ``count`` 1, ``links``, ``status`` 1 and ``statusCode`` 400. We send
exactly that and keep our ``error`` object beside it, so that clients of either shape find what they read.
Every other error keeps the plain error envelope.
"""

from __future__ import annotations

import pytest
from serverkit import VALID_SETTINGS, Portal

from smtpsettings.domain.accounts import Role

SETTINGS = "/api/2.0/smtpsettings/smtp"
SIGN_IN = "/api/2.0/authentication"
PORT_MESSAGE = "The field Port must be between 1 and 65535."


def test_a_validation_400_is_docspaces_envelope_with_our_error_beside(portal: Portal) -> None:
    with portal.client(Role.ADMIN) as c:
        r = c.post(SETTINGS, json={**VALID_SETTINGS, "port": 0})
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    body = r.json()
    assert list(body) == ["response", "count", "links", "status", "statusCode", "error"]
    assert body["response"] == {
        "type": "https://tools.ietf.org/html/rfc9110#section-15.5.1",
        "title": "One or more validation errors occurred.",
        "status": 400,
        "errors": {"Port": [PORT_MESSAGE]},
        "traceId": r.headers["x-request-id"],
    }
    assert body["count"] == 1
    assert body["links"] == [{"href": f"http://{portal.hostname}{SETTINGS}", "action": "POST"}]
    assert body["status"] == 1
    assert body["statusCode"] == 400
    assert body["error"] == {"message": PORT_MESSAGE, "type": "ArgumentException", "stack": None, "hresult": 0}


def test_the_links_of_a_validation_400_are_built_as_the_success_envelopes(portal: Portal) -> None:
    url = SETTINGS + "?lang=en&x=%20y"
    with portal.client(Role.ADMIN) as c:
        refused = c.post(url, json={**VALID_SETTINGS, "port": 70000}, headers={"Host": portal.hostname.upper()})
        saved = c.post(url, json=VALID_SETTINGS, headers={"Host": portal.hostname.upper()})
    assert (refused.status_code, saved.status_code) == (400, 200)
    assert refused.json()["links"] == saved.json()["links"]
    assert saved.json()["links"] == [{"href": f"http://{portal.hostname.upper()}{url}", "action": "POST"}]


def test_every_field_in_error_is_listed_by_its_pascal_case_name(portal: Portal) -> None:
    with portal.client(Role.ADMIN) as c:
        body = c.post(SETTINGS, json={**VALID_SETTINGS, "port": 0, "host": "h" * 256, "enableSSL": "yes"}).json()
    assert set(body["response"]["errors"]) == {"Port", "Host", "EnableSSL"}
    assert body["count"] == 1  # one problem-details object, however many fields it names
    assert body["error"]["message"] in [m for messages in body["response"]["errors"].values() for m in messages]


def test_a_sign_in_validation_400_has_the_same_shape(portal: Portal) -> None:
    with portal.client() as c:
        r = c.post(SIGN_IN, json={"userName": 7, "password": "x"})
    assert r.status_code == 400
    body = r.json()
    assert body["response"]["errors"] == {"UserName": ["The field UserName must be a string."]}
    assert body["response"]["traceId"] == r.headers["x-request-id"]
    assert (body["count"], body["status"], body["statusCode"]) == (1, 1, 400)
    assert body["links"] == [{"href": f"http://{portal.hostname}{SIGN_IN}", "action": "POST"}]
    assert body["error"]["message"] == "The field UserName must be a string."


def test_the_validation_400_keeps_its_shape_when_json_is_asked_for_as_text(portal: Portal) -> None:
    with portal.client(Role.ADMIN, headers={"Accept": "text/plain"}) as c:
        r = c.post(SETTINGS, json={**VALID_SETTINGS, "port": 0})
    assert r.status_code == 400 and r.headers["content-type"].startswith("text/plain")
    assert set(r.json()) == {"response", "count", "links", "status", "statusCode", "error"}


@pytest.mark.parametrize(
    ("method", "path", "role", "body", "status"),
    [
        ("POST", SETTINGS, Role.ADMIN, {**VALID_SETTINGS, "host": ""}, 400),  # a rule, not a field validation
        ("POST", SETTINGS, Role.ADMIN, [1, 2], 400),
        ("GET", SETTINGS, None, None, 401),
        ("GET", SETTINGS, Role.USER, None, 403),
        ("PUT", SETTINGS, Role.ADMIN, None, 405),
        ("GET", "/api/2.0/nothing-here", Role.ADMIN, None, 404),
    ],
)
def test_other_errors_keep_the_plain_error_envelope(
    portal: Portal, method: str, path: str, role: Role | None, body: object, status: int
) -> None:
    with portal.client(role) as c:
        r = c.request(method, path, json=body)
    assert r.status_code == status, r.text
    answer = r.json()
    assert set(answer) == {"error", "status", "statusCode"}
    assert (answer["status"], answer["statusCode"]) == (1, status)
