"""The OpenAPI document and the interactive API page, checked against the official DocSpace SDK's models.

The SDK (``docspace-api-sdk`` 3.7.0) is generated from DocSpace's own OpenAPI document, so its pydantic
models are the reference for names, types and limits; the comparisons below read them programmatically
rather than restating them.
"""

from __future__ import annotations

import inspect
import re
import typing
import warnings
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

with warnings.catch_warnings():
    # The SDK's own models warn about a field named "copy" when imported; not our concern.
    warnings.simplefilter("ignore", UserWarning)
    import docspace_api_sdk as sdk
    from docspace_api_sdk.models.smtp_settings_dto import SmtpSettingsDto as SdkSmtpSettingsDto

JSON_TYPES = {str: "string", int: "integer", bool: "boolean"}


def _fetch_document(base_url: str) -> dict[str, Any]:
    with httpx.Client(base_url=base_url, timeout=30) as c:
        r = c.get("/api/2.0/openapi.json")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    return r.json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def document(server: Any) -> dict[str, Any]:
    return _fetch_document(server.base_url)


def sdk_field(annotation: Any) -> tuple[str, dict[str, Any]]:
    """The JSON type and the constraints (min_length, max_length, ge, le, ...) of an SDK model field."""
    constraints: dict[str, Any] = {}
    base: Any = annotation
    while True:
        origin = typing.get_origin(base)
        if origin is typing.Union:
            non_null = [a for a in typing.get_args(base) if a is not type(None)]
            assert len(non_null) == 1, base
            base = non_null[0]
        elif origin is typing.Annotated:
            base, *extras = typing.get_args(base)
            for extra in extras:
                for item in getattr(extra, "metadata", [extra]):
                    for attr in ("min_length", "max_length", "ge", "le", "gt", "lt"):
                        if getattr(item, attr, None) is not None:
                            constraints[attr] = getattr(item, attr)
        else:
            break
    return JSON_TYPES[base], constraints


def sdk_fields() -> dict[str, tuple[str, dict[str, Any]]]:
    return {(f.alias or name): sdk_field(f.annotation) for name, f in SdkSmtpSettingsDto.model_fields.items()}


def json_type(schema: dict[str, Any]) -> str:
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    non_null = [t for t in types if t != "null"]
    assert len(non_null) == 1, schema
    return str(non_null[0])


def smtp_schema(document: dict[str, Any]) -> dict[str, Any]:
    return document["components"]["schemas"]["SmtpSettingsDto"]  # type: ignore[no-any-return]


def test_openapi_json_is_served_without_credentials_as_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    assert document["info"]["title"]
    assert document["paths"]


def test_sdk_model_reading_finds_the_constraints_it_should() -> None:
    # Guards the helper itself: if the SDK's annotations changed shape, the comparisons below would be vacuous.
    fields = sdk_fields()
    assert fields["host"] == ("string", {"min_length": 0, "max_length": 255})
    assert fields["port"] == ("integer", {"ge": 1, "le": 65535})
    assert fields["enableSSL"] == ("boolean", {})


def test_smtp_settings_schema_has_exactly_the_sdk_property_names(document: dict[str, Any]) -> None:
    assert set(smtp_schema(document)["properties"]) == set(sdk_fields())


def test_smtp_settings_schema_types_match_the_sdk(document: dict[str, Any]) -> None:
    properties = smtp_schema(document)["properties"]
    assert {name: json_type(properties[name]) for name in properties} == {name: t for name, (t, _) in sdk_fields().items()}


def test_smtp_settings_schema_limits_to_255_exactly_the_fields_the_sdk_limits(document: dict[str, Any]) -> None:
    properties = smtp_schema(document)["properties"]
    ours = {name: s["maxLength"] for name, s in properties.items() if "maxLength" in s}
    theirs = {name: c["max_length"] for name, (_, c) in sdk_fields().items() if "max_length" in c}
    assert theirs == dict.fromkeys(["host", "senderAddress", "senderDisplayName", "credentialsUserName"], 255)
    assert ours == theirs


def test_smtp_settings_schema_min_lengths_match_the_sdk(document: dict[str, Any]) -> None:
    properties = smtp_schema(document)["properties"]
    ours = {name: s["minLength"] for name, s in properties.items() if "minLength" in s}
    theirs = {name: c["min_length"] for name, (_, c) in sdk_fields().items() if "min_length" in c}
    assert ours == theirs


def test_smtp_settings_schema_port_range_matches_the_sdk(document: dict[str, Any]) -> None:
    port = smtp_schema(document)["properties"]["port"]
    _, constraints = sdk_fields()["port"]
    assert (port["minimum"], port["maximum"]) == (constraints["ge"], constraints["le"]) == (1, 65535)
    assert port.get("format") == "int32"


def test_smtp_settings_schema_has_no_numeric_limits_the_sdk_lacks(document: dict[str, Any]) -> None:
    properties = smtp_schema(document)["properties"]
    limited = {name for name, s in properties.items() if {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"} & set(s)}
    assert limited == {name for name, (_, c) in sdk_fields().items() if {"ge", "le", "gt", "lt"} & set(c)}


def test_smtp_settings_schema_documents_the_password_as_write_only(document: dict[str, Any]) -> None:
    password = smtp_schema(document)["properties"]["credentialsUserPassword"]
    assert "maxLength" not in password
    assert "response" in password["description"].lower() or password.get("writeOnly") is True


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/api/2.0/authentication", "post"),
        ("/api/2.0/authentication", "get"),
        ("/api/2.0/authentication/logout", "post"),
        ("/api/2.0/smtpsettings/smtp", "get"),
        ("/api/2.0/smtpsettings/smtp", "post"),
        ("/api/2.0/smtpsettings/smtp", "delete"),
    ],
)
def test_document_declares_the_operation(document: dict[str, Any], path: str, method: str) -> None:
    operation = document["paths"][path][method]
    assert operation["operationId"]
    assert "200" in operation["responses"]


SDK_APIS = (sdk.AuthenticationApi, sdk.SMTPSettingsApi)
# The calls this service must implement, by the SDK's operation names.
REQUIRED_OPERATIONS = {"authenticateMe", "getIsAuthentificated", "logout", "getSmtpSettings", "saveSmtpSettings", "resetSmtpSettings"}


def _snake(operation_id: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation_id).lower()


def _sdk_request(operation_id: str) -> tuple[str, str] | None:
    """(METHOD, path) of an SDK call as the SDK builds it, or None when the SDK has no such operation."""
    client = sdk.ApiClient(sdk.Configuration(host="http://sdk.invalid"))
    for api_class in SDK_APIS:
        serialize = getattr(api_class(client), f"_{_snake(operation_id)}_serialize", None)
        if serialize is None:
            continue
        params = inspect.signature(serialize).parameters
        method, url, *_ = serialize(**{name: 0 if name == "_host_index" else None for name in params})
        return method, urlsplit(url).path
    return None


def _declared(document: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    """operationId -> (METHOD, path, summary) of every operation in the document."""
    return {
        op["operationId"]: (method.upper(), path, op.get("summary", ""))
        for path, item in document["paths"].items()
        for method, op in item.items()
    }


def test_document_declares_every_operation_the_service_must_implement(document: dict[str, Any]) -> None:
    assert REQUIRED_OPERATIONS <= set(_declared(document))


def test_document_operations_known_to_the_sdk_are_where_the_sdk_sends_them(document: dict[str, Any]) -> None:
    declared = _declared(document)
    checked = 0
    for operation_id, (method, path, _) in declared.items():
        expected = _sdk_request(operation_id)
        if expected is not None:
            assert (method, path) == expected, operation_id
            checked += 1
    assert checked >= len(REQUIRED_OPERATIONS)


def test_document_operations_unknown_to_the_sdk_are_marked_as_ours(document: dict[str, Any]) -> None:
    extras = {op: summary for op, (_, _, summary) in _declared(document).items() if _sdk_request(op) is None}
    assert all(summary.startswith("(ours)") for summary in extras.values()), extras


def test_document_operation_ids_are_unique(document: dict[str, Any]) -> None:
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_smtp_operations_return_the_settings_wrapper_of_the_dto(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for method in ("get", "post", "delete"):
        ref = document["paths"]["/api/2.0/smtpsettings/smtp"][method]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        wrapper = schemas[ref.rsplit("/", 1)[1]]
        assert wrapper["properties"]["response"] == {"$ref": "#/components/schemas/SmtpSettingsDto"}
    body = document["paths"]["/api/2.0/smtpsettings/smtp"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/SmtpSettingsDto"}


def test_every_reference_in_the_document_resolves(document: dict[str, Any]) -> None:
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert refs
    for ref in refs:
        assert ref.startswith("#/"), ref
        target: Any = document
        for part in ref[2:].split("/"):
            assert part in target, ref
            target = target[part]


def test_document_declares_the_three_sdk_security_schemes(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["asc_auth_key"] == {"type": "apiKey", "in": "cookie", "name": "asc_auth_key"}
    assert schemes["Bearer"]["scheme"] == "bearer"
    assert schemes["Basic"]["scheme"] == "basic"


class _AssetParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)


def _docs_assets(base_url: str) -> list[str]:
    with httpx.Client(base_url=base_url, timeout=30) as c:
        r = c.get("/api/2.0/docs")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    parser = _AssetParser()
    parser.feed(r.text)
    assert parser.urls, r.text
    return parser.urls


def test_docs_page_references_only_local_assets(server: Any) -> None:
    for url in _docs_assets(server.base_url):
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, url
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        page = c.get("/api/2.0/docs").text
    assert not re.search(r"https?://|//[a-z0-9]", page, re.IGNORECASE)


def test_docs_page_assets_are_served(server: Any) -> None:
    urls = _docs_assets(server.base_url)
    assert any(u.endswith(".js") for u in urls)
    assert any(u.endswith(".css") for u in urls)
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        for url in urls:
            r = c.get(urljoin(server.base_url + "/api/2.0/docs", url))
            assert r.status_code == 200, url
            assert r.content, url


def test_docs_init_script_loads_the_local_openapi_document(server: Any) -> None:
    scripts = [u for u in _docs_assets(server.base_url) if u.endswith(".js")]
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        bodies = [c.get(urljoin(server.base_url + "/api/2.0/docs", u)).text for u in scripts if "swagger-ui-bundle" not in u]
    assert any("/api/2.0/openapi.json" in body for body in bodies)
    assert not any(re.search(r"https?://", body) for body in bodies)
