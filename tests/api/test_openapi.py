"""The OpenAPI document and the interactive API page, checked against the official DocSpace SDK's models.

The SDK (``docspace-api-sdk`` 3.7.0) is generated from DocSpace's own OpenAPI document, so its pydantic
models are the reference for names, types and limits; the comparisons below read them programmatically
rather than restating them.
"""

from __future__ import annotations

import datetime
import enum
import inspect
import re
import sys
import typing
import uuid
import warnings
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

with warnings.catch_warnings():
    # The SDK's own models warn about a field named "copy" when imported; not our concern.
    warnings.simplefilter("ignore", UserWarning)
    import docspace_api_sdk as sdk
    from docspace_api_sdk.models.smtp_settings_dto import SmtpSettingsDto as SdkSmtpSettingsDto
    from pydantic import BaseModel

# tests/e2e/smtp_peers.py: real aiosmtpd servers in threads, shared with the end-to-end tests.
if str(Path(__file__).resolve().parents[1] / "e2e") not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

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


# (ours) beside the SDK's fields: OAuth 2.0 to the mail server.
OURS = {"authMethod", "oauth2"}


def sdk_properties(document: dict[str, Any]) -> dict[str, Any]:
    """The settings schema's properties that the SDK's model has too."""
    return {name: s for name, s in smtp_schema(document)["properties"].items() if name not in OURS}


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
    properties = smtp_schema(document)["properties"]
    assert set(properties) - OURS == set(sdk_fields())
    assert all(properties[name]["description"].startswith("(ours)") for name in OURS)


def test_smtp_settings_schema_types_match_the_sdk(document: dict[str, Any]) -> None:
    properties = sdk_properties(document)
    assert {name: json_type(properties[name]) for name in properties} == {name: t for name, (t, _) in sdk_fields().items()}


def test_smtp_settings_schema_limits_to_255_exactly_the_fields_the_sdk_limits(document: dict[str, Any]) -> None:
    properties = sdk_properties(document)
    ours = {name: s["maxLength"] for name, s in properties.items() if "maxLength" in s}
    theirs = {name: c["max_length"] for name, (_, c) in sdk_fields().items() if "max_length" in c}
    assert theirs == dict.fromkeys(["host", "senderAddress", "senderDisplayName", "credentialsUserName"], 255)
    assert ours == theirs


def test_smtp_settings_schema_min_lengths_match_the_sdk(document: dict[str, Any]) -> None:
    properties = sdk_properties(document)
    ours = {name: s["minLength"] for name, s in properties.items() if "minLength" in s}
    theirs = {name: c["min_length"] for name, (_, c) in sdk_fields().items() if "min_length" in c}
    assert ours == theirs


def test_smtp_settings_schema_port_range_matches_the_sdk(document: dict[str, Any]) -> None:
    port = smtp_schema(document)["properties"]["port"]
    _, constraints = sdk_fields()["port"]
    assert (port["minimum"], port["maximum"]) == (constraints["ge"], constraints["le"]) == (1, 65535)
    assert port.get("format") == "int32"


def test_smtp_settings_schema_has_no_numeric_limits_the_sdk_lacks(document: dict[str, Any]) -> None:
    properties = sdk_properties(document)
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


SDK_APIS = (sdk.AuthenticationApi, sdk.SMTPSettingsApi, sdk.CommonSettingsApi)
# The calls this service must implement, by the SDK's operation names.
REQUIRED_OPERATIONS = {
    "authenticateMe",
    "getIsAuthentificated",
    "logout",
    "getSmtpSettings",
    "saveSmtpSettings",
    "resetSmtpSettings",
    "testSmtpSettings",
    "getSmtpOperationStatus",
    "getPortalSettings",
}


def _snake(operation_id: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation_id).lower()


def _sdk_method(operation_id: str) -> Any:
    """The SDK's method for an operation, or None when the SDK has no such operation."""
    for api_class in SDK_APIS:
        method = getattr(api_class, _snake(operation_id), None)
        if method is not None:
            return method
    return None


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


def test_smtp_operations_answer_the_settings_answer_and_take_the_dto(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for method in ("get", "post", "delete"):
        ref = document["paths"]["/api/2.0/smtpsettings/smtp"][method]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        wrapper = schemas[ref.rsplit("/", 1)[1]]
        assert wrapper["properties"]["response"] == {"$ref": "#/components/schemas/SmtpSettingsAnswerDto"}
    body = document["paths"]["/api/2.0/smtpsettings/smtp"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/SmtpSettingsDto"}
    answer, dto = schemas["SmtpSettingsAnswerDto"], schemas["SmtpSettingsDto"]
    assert answer["properties"].keys() == dto["properties"].keys()


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


def test_document_declares_the_sdk_security_schemes(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["asc_auth_key"] == {"type": "apiKey", "in": "cookie", "name": "asc_auth_key"}
    assert schemes["Bearer"]["scheme"] == "bearer"
    assert schemes["Basic"]["scheme"] == "basic"
    api_key_bearer = {k: schemes["ApiKeyBearer"][k] for k in ("type", "in", "name")}
    assert api_key_bearer == {"type": "apiKey", "in": "header", "name": "ApiKeyBearer"}


def test_the_api_key_schemes_are_where_the_sdk_sends_them(document: dict[str, Any]) -> None:
    # The SDK's own account of where each credential goes (OAuth2 and OpenId are not offered here).
    configuration = sdk.Configuration(host="http://sdk.invalid", api_key={"asc_auth_key": "t", "ApiKeyBearer": "k"})
    sent = configuration.auth_settings()
    schemes = document["components"]["securitySchemes"]
    for name in ("asc_auth_key", "ApiKeyBearer"):
        assert (schemes[name]["in"], schemes[name]["name"]) == (sent[name]["in"], sent[name]["key"]), name
    # Every operation that takes credentials accepts each scheme.
    for key, op in _operations(document).items():
        security = op.get("security", document["security"])
        if security:
            assert {name for requirement in security for name in requirement} == set(schemes), key


# ------------------------------------------------------------------------ the models against the SDK's


def sdk_json_type(annotation: Any) -> str:
    """The JSON type an SDK model field's annotation stands for."""
    base: Any = annotation
    while typing.get_origin(base) in (typing.Union, typing.Annotated):
        args = [a for a in typing.get_args(base) if a is not type(None)]
        if typing.get_origin(base) is typing.Annotated:
            args = args[:1]
        if len(args) > 1 and {sdk_json_type(a) for a in args} <= {"integer", "number"}:
            return "number"  # Union[StrictFloat, StrictInt]
        assert len(args) == 1, base
        base = args[0]
    if typing.get_origin(base) is list:
        return "array"
    if isinstance(base, type) and issubclass(base, enum.Enum):
        return "integer" if issubclass(base, int) else "string"
    if isinstance(base, type) and issubclass(base, BaseModel):
        return "object"
    scalars = {str: "string", bool: "boolean", int: "integer", float: "number", datetime.datetime: "string", uuid.UUID: "string"}
    return scalars[base]


def sdk_model(model: type[BaseModel]) -> dict[str, tuple[str, bool, bool]]:
    """name -> (JSON type, nullable, required) of each field of an SDK model, as the SDK reads them.

    Nullability is what the generated ``to_dict`` keeps: a nullable field set to None is written as null,
    any other left out. So the fields a model with every field set to None writes are the nullable ones.
    """
    fields = model.model_fields
    nulls = model.model_construct(_fields_set=set(fields), **dict.fromkeys(fields)).to_dict()
    return {
        (f.alias or name): (sdk_json_type(f.annotation), (f.alias or name) in nulls, f.is_required())
        for name, f in fields.items()
    }


def our_model(document: dict[str, Any], name: str) -> dict[str, tuple[str, bool]]:
    """name -> (JSON type, nullable) of each property of one of our schemas."""
    result = {}
    for prop, schema in document["components"]["schemas"][name]["properties"].items():
        schema = _resolve(document, schema)
        types = schema["type"] if isinstance(schema.get("type"), list) else [schema.get("type")]
        non_null = [t for t in types if t != "null"]
        assert len(non_null) == 1, (name, prop, schema)
        result[prop] = (non_null[0], "null" in types)
    return result


def test_sdk_model_reading_finds_nullability_and_types() -> None:
    # Guards the helper: if the SDK's generated code changed shape, the comparisons below would be vacuous.
    status = sdk_model(sdk.SmtpOperationStatusRequestsDto)
    assert status["id"] == ("string", True, False)
    assert status["completed"] == ("boolean", False, False)
    assert sdk_model(sdk.AuthenticationTokenDto)["expires"] == ("string", False, False)
    assert sdk_model(sdk.AuthRequestsDto)["recaptchaType"] == ("integer", False, False)
    assert sdk_model(sdk.SettingsDto)["deepLink"] == ("object", False, True)


# Our schema, the SDK's model, and whether ours lists every field of the SDK's (SettingsDto: DocSpace has
# dozens; we answer those the SDK requires, and passwordHash).
SDK_MODELS = [
    ("AuthRequestsDto", sdk.AuthRequestsDto, True),
    ("ConfirmData", sdk.ConfirmData, True),
    ("AuthenticationTokenDto", sdk.AuthenticationTokenDto, True),
    ("SmtpOperationStatusRequestsDto", sdk.SmtpOperationStatusRequestsDto, True),
    ("SettingsDto", sdk.SettingsDto, False),
    ("DeepLinkDto", sdk.DeepLinkDto, True),
    ("PasswordHasher", sdk.PasswordHasher, True),
]


@pytest.mark.parametrize(("name", "model", "complete"), SDK_MODELS, ids=[m[0] for m in SDK_MODELS])
def test_models_have_the_sdks_fields_types_and_nullability(
    document: dict[str, Any], name: str, model: type[BaseModel], complete: bool
) -> None:
    ours, theirs = our_model(document, name), sdk_model(model)
    schema = document["components"]["schemas"][name]
    if complete:
        assert set(theirs) <= set(ours)
    else:
        assert {field for field, (_, _, required) in theirs.items() if required} <= set(ours)
    extras = set(ours) - set(theirs)
    assert all(schema["properties"][extra]["description"].startswith("(ours)") for extra in extras), extras
    assert {f: ours[f] for f in set(ours) & set(theirs)} == {f: theirs[f][:2] for f in set(ours) & set(theirs)}
    # What the SDK cannot do without, we always answer.
    assert {f for f, (_, _, required) in theirs.items() if required} <= set(schema.get("required", []))


def test_the_recaptcha_kinds_are_the_sdks(document: dict[str, Any]) -> None:
    declared = document["components"]["schemas"]["AuthRequestsDto"]["properties"]["recaptchaType"]["enum"]
    assert declared == [kind.value for kind in sdk.RecaptchaType]


def test_sign_in_fields_say_whether_they_are_used(document: dict[str, Any]) -> None:
    properties = document["components"]["schemas"]["AuthRequestsDto"]["properties"]
    used = {"userName", "password", "passwordHash", "session"}
    for field, schema in properties.items():
        assert ("Accepted and ignored." in schema.get("description", "")) is (field not in used), field
    token = document["components"]["schemas"]["AuthenticationTokenDto"]["properties"]
    never_sent = {f for f, schema in token.items() if "Never sent by this server." in schema["description"]}
    assert never_sent == set(token) - {"token", "expires"}


def _sdk_answer_model(operation_id: str) -> str:
    """The model the SDK reads a 200 of this operation into (from its generated method)."""
    source = inspect.getsource(_sdk_method(operation_id))
    match = re.search(r"'200': \"(\w+)\"", source)
    assert match, operation_id
    return match.group(1)


def test_operations_answer_the_wrapper_the_sdk_reads(document: dict[str, Any]) -> None:
    checked = 0
    for path, item in document["paths"].items():
        for method, op in item.items():
            if _sdk_method(op["operationId"]) is None:
                continue
            ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.rsplit("/", 1)[1] == _sdk_answer_model(op["operationId"]), (path, method)
            checked += 1
    assert checked >= len(REQUIRED_OPERATIONS)


def test_sign_out_answers_a_string_wrapper_that_is_usually_empty(document: dict[str, Any]) -> None:
    wrapper = document["components"]["schemas"]["StringWrapper"]
    assert wrapper["properties"]["response"] == {"type": ["string", "null"]}
    assert "response" not in wrapper["required"]


# ------------------------------------------------------------------------ statuses, errors, security

JSON_API = "/api/2.0/smtpsettings", "/api/2.0/authentication"
HEALTH = "/api/2.0/health/live"
SIGN_IN = ("/api/2.0/authentication", "post")
TEST_MAIL = [("/api/2.0/smtpsettings/smtp/test", "get"), ("/api/2.0/smtpsettings/smtp/test", "post")]


def _operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(path, method): op for path, item in document["paths"].items() for method, op in item.items()}


def _json_api(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {key: op for key, op in _operations(document).items() if key[0].startswith(JSON_API)}


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _error_schema(document: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """The envelope schema of an error answer (the first ``allOf`` part for the 400 one)."""
    schema = _resolve(document, response["content"]["application/json"]["schema"])
    return _resolve(document, schema["allOf"][0]) if "allOf" in schema else schema


def test_every_json_api_operation_declares_406_404_and_503(document: dict[str, Any]) -> None:
    for key, op in _json_api(document).items():
        assert {"404", "406", "503"} <= set(op["responses"]), key


def test_every_operation_with_a_body_declares_400_413_and_415(document: dict[str, Any]) -> None:
    with_body = {key: op for key, op in _operations(document).items() if "requestBody" in op}
    assert len(with_body) == 4
    for key, op in with_body.items():
        assert {"400", "413", "415"} <= set(op["responses"]), key


def test_sign_in_the_test_mail_routes_and_sending_declare_429_with_retry_after(document: dict[str, Any]) -> None:
    operations = _operations(document)
    for key in [SIGN_IN, *TEST_MAIL, (MESSAGES, "post")]:
        too_many = operations[key]["responses"]["429"]
        assert "Retry-After" in too_many["headers"], key
        assert _error_schema(document, too_many)["required"] == ["error", "status", "statusCode"]
    assert "outbox is full" in operations[(MESSAGES, "post")]["responses"]["429"]["description"]


def test_a_test_of_unsaved_settings_declares_409(document: dict[str, Any]) -> None:
    conflict = document["paths"]["/api/2.0/smtpsettings/smtp/test"]["post"]["responses"]["409"]
    assert _error_schema(document, conflict)["properties"]["error"] == {"$ref": "#/components/schemas/ErrorInfo"}


def test_every_error_answer_is_the_error_envelope(document: dict[str, Any]) -> None:
    for key, op in _operations(document).items():
        for status, response in op["responses"].items():
            if status.startswith(("4", "5")):
                envelope = _error_schema(document, response)
                assert set(envelope["required"]) == {"error", "status", "statusCode"}, (key, status)
                info = _resolve(document, envelope["properties"]["error"])
                assert set(info["required"]) == {"message", "type", "stack", "hresult"}, (key, status)


def test_validation_400_declares_the_problem_details_beside_the_error(document: dict[str, Any]) -> None:
    for key, op in _json_api(document).items():
        if "400" in op["responses"]:
            schema = _resolve(document, op["responses"]["400"]["content"]["application/json"]["schema"])
            details = _resolve(document, schema["allOf"][1]["properties"]["response"])
            assert set(details["required"]) == {"type", "title", "status", "errors"}, key


def test_a_real_validation_400_has_what_the_document_declares(document: dict[str, Any], portal: Any) -> None:
    from smtpsettings.domain.accounts import Role

    with portal.client(Role.ADMIN) as c:
        r = c.post("/api/2.0/smtpsettings/smtp", json={"host": "mail.example.com", "senderAddress": "a@example.com", "port": 0})
    assert r.status_code == 400
    body = r.json()
    schemas = document["components"]["schemas"]
    details = schemas["ValidationProblemDetails"]
    assert set(schemas["Error"]["required"]) <= set(body)
    assert set(schemas["ErrorInfo"]["required"]) <= set(body["error"])
    assert set(details["required"]) <= set(body["response"]) <= set(details["properties"])
    assert body["response"]["type"] == details["properties"]["type"]["const"]
    assert set(schemas["ValidationError"]["allOf"][1]["dependentRequired"]["response"]) <= set(body)
    assert body["count"] == schemas["ValidationError"]["allOf"][1]["properties"]["count"]["const"]
    assert body["response"]["errors"]["Port"]


def test_sign_in_the_portal_settings_and_the_health_check_need_no_credentials(document: dict[str, Any]) -> None:
    operations = _operations(document)
    assert operations[SIGN_IN]["security"] == []
    assert operations[(HEALTH, "get")]["security"] == []
    assert operations[("/api/2.0/settings", "get")]["security"] == []
    # "Am I signed in?" answers false, and sign-out 200, rather than 401: credentials are optional there.
    for key in [("/api/2.0/authentication", "get"), ("/api/2.0/authentication/logout", "post")]:
        assert {} in operations[key]["security"], key
        assert "401" not in operations[key]["responses"], key


def test_the_portal_settings_answer_what_the_document_declares(document: dict[str, Any], portal: Any) -> None:
    from smtpsettings.domain.accounts import Role

    schemas = document["components"]["schemas"]
    declared = set(schemas["SettingsDto"]["properties"])
    with portal.client() as c:
        anonymous = c.get("/api/2.0/settings").json()["response"]
    with portal.client(Role.ADMIN) as c:
        signed_in = c.get("/api/2.0/settings").json()["response"]
        asked = c.get("/api/2.0/settings", params={"withpassword": "true"}).json()["response"]
    assert set(anonymous) == set(asked) == declared
    assert set(signed_in) == declared - {"passwordHash"}
    assert set(anonymous["passwordHash"]) == set(schemas["PasswordHasher"]["properties"])
    assert set(anonymous["deepLink"]) == set(schemas["DeepLinkDto"]["properties"])


@pytest.mark.parametrize("value", ["true", "False", "TRUE", " true ", "", "yes", "1", "tru", "true false"])
def test_withpassword_is_refused_exactly_when_the_document_says(
    document: dict[str, Any], server: Any, value: str
) -> None:
    (parameter,) = document["paths"]["/api/2.0/settings"]["get"]["parameters"]
    string_form = next(s for s in parameter["schema"]["anyOf"] if s["type"] == "string")
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        status = c.get("/api/2.0/settings", params={"withpassword": value}).status_code
    assert status == (200 if re.search(string_form["pattern"], value) else 400), value


def test_options_answers_allow_with_exactly_the_documented_methods(document: dict[str, Any], server: Any) -> None:
    # Litestar 2 listed only the first handler's methods on a path with several (GET, OPTIONS on /smtp).
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        for path, item in document["paths"].items():
            r = c.options(path)
            assert r.status_code == 204, (path, r.text)
            assert set(r.headers["allow"].split(", ")) == {*(m.upper() for m in item), "OPTIONS"}, path


def test_the_health_check_is_listed_and_answers_as_declared(document: dict[str, Any], server: Any) -> None:
    operation = document["paths"][HEALTH]["get"]
    assert operation["summary"].startswith("(ours)")
    schema = _resolve(document, operation["responses"]["200"]["content"]["application/json"]["schema"])
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        body = c.get(HEALTH).json()
    assert set(schema["required"]) <= set(body)
    assert body["response"] == schema["properties"]["response"]["const"]


def test_sender_address_is_declared_as_an_email(document: dict[str, Any]) -> None:
    assert smtp_schema(document)["properties"]["senderAddress"]["format"] == "email"


def test_host_and_sender_are_declared_required_as_the_server_requires_them(document: dict[str, Any]) -> None:
    assert set(smtp_schema(document)["required"]) == {"host", "senderAddress"}


@pytest.mark.parametrize(
    ("default", "unset"),
    [
        ({}, {"host", "senderAddress"}),
        ({"SMTPSETTINGS_DEFAULT_SMTP_HOST": "mail.default.test"}, {"senderAddress"}),
    ],
    ids=["no server default", "a default without a sender"],
)
def test_answers_without_a_host_or_sender_anywhere_are_what_the_document_declares(
    document: dict[str, Any], tmp_path: Path, default: dict[str, str], unset: set[str]
) -> None:
    """DELETE, and GET after it, answer the server default ("" where it names nothing); saving "" is refused."""
    from serverkit import VALID_SETTINGS, make_portal, start_server

    from smtpsettings.domain.accounts import Role

    server = start_server(tmp_path / "data", default)
    try:
        with make_portal(server).client(Role.ADMIN) as c:
            assert c.post("/api/2.0/smtpsettings/smtp", json=VALID_SETTINGS).status_code == 200
            answers = [c.delete("/api/2.0/smtpsettings/smtp"), c.get("/api/2.0/smtpsettings/smtp")]
            for answer in answers:
                assert answer.status_code == 200, answer.text
                settings = answer.json()["response"]
                assert {f for f in ("host", "senderAddress") if settings[f] == ""} == unset
                assert settings["isDefaultSettings"] is True
                _conforms(document, "SmtpSettingsWrapper", answer.json())
            refused = c.post("/api/2.0/smtpsettings/smtp", json=answers[0].json()["response"])
            assert refused.status_code == 400, refused.text
    finally:
        server.stop()
    assert not _validator(document, "SmtpSettingsDto").is_valid(answers[0].json()["response"])


# Forms the server accepts and stores (IP literals as their bare, compressed form).
HOSTS_ACCEPTED = [
    "mail.example.com",
    "localhost",
    "smtp-relay.example.co.uk",
    "127.0.0.1",
    "192.0.2.25",
    "::1",
    "[::1]",
    "2001:db8::25",
    "[192.0.2.25]",
    "почта.рф",
    "Faß.de",
    "例え。テスト",
    "mail.1and1",
]
HOSTS_REFUSED = ["", "a b", "smtp://mail.example.com", "mail.example.com:25", "user@mail.example.com", "mail.example.com."]


@pytest.mark.parametrize("host", HOSTS_ACCEPTED)
def test_every_host_the_server_stores_matches_the_documented_pattern(document: dict[str, Any], host: str) -> None:
    from smtpsettings.domain.smtp import parse_settings

    stored = parse_settings({"host": host, "senderAddress": "a@example.com"}).settings.host
    assert re.search(smtp_schema(document)["properties"]["host"]["pattern"], stored), stored


@pytest.mark.parametrize("host", HOSTS_REFUSED)
def test_the_host_pattern_leaves_out_what_is_no_host(document: dict[str, Any], host: str) -> None:
    assert not re.search(smtp_schema(document)["properties"]["host"]["pattern"], host)


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


def test_docs_serve_only_the_swagger_ui_files_the_page_uses(server: Any) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        # The package's sample page and initializer would point a browser at the public Petstore.
        for name in ("index.html", "swagger-initializer.js", "../__init__.py"):
            assert c.get(f"/api/2.0/docs/assets/{name}").status_code == 404, name
        assert c.get("/api/2.0/docs/assets/swagger-ui-bundle.js").headers["content-type"].startswith("text/javascript")


def test_docs_init_script_turns_off_the_online_validator(server: Any) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        assert "validatorUrl: null" in c.get("/api/2.0/docs/init.js").text


# ------------------------------------------------------------------------ (ours) outgoing mail, health, metrics

MESSAGES = "/api/2.0/smtpsettings/messages"
MESSAGE_OPERATIONS = {
    (MESSAGES, "post"): "sendMessage",
    (MESSAGES, "get"): "getMessages",
    (MESSAGES + "/{id}", "get"): "getMessage",
    (MESSAGES + "/{id}", "delete"): "cancelMessage",
    (MESSAGES + "/{id}/retry", "post"): "retryMessage",
}
# Served but not part of the API the document describes: the document itself, its page, the admin page.
UNDOCUMENTED = ("/api/2.0/openapi.json", "/api/2.0/docs", "/static/")


def _validator(document: dict[str, Any], name: str) -> Any:
    """A JSON Schema validator for one of the document's schemas (its references resolved in the document)."""
    import jsonschema_rs

    schema = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    return jsonschema_rs.Draft202012Validator(schema, validate_formats=True)


def _conforms(document: dict[str, Any], name: str, body: Any) -> None:
    errors = [f"{e.instance_path}: {e.message}" for e in _validator(document, name).iter_errors(body)]
    assert not errors, (name, errors, body)


def _matches(pattern: str, value: str) -> bool:
    """Whether ``value`` matches a pattern as JSON Schema validators read it (``$`` is the end, newline or not)."""
    import jsonschema_rs

    return bool(jsonschema_rs.Draft202012Validator({"pattern": pattern}).is_valid(value))


def _route_key(path: str) -> str:
    """A path with every parameter written ``{}``: the app's ``{message_id:str}`` is the document's ``{id}``."""
    return re.sub(r"\{[^}]*\}", "{}", path)


async def test_every_route_the_app_serves_is_documented_with_exactly_its_methods(tmp_path: Path) -> None:
    from litestar.exceptions import LitestarDeprecationWarning

    from smtpsettings.api.openapi import openapi_document
    from smtpsettings.app import create_app
    from smtpsettings.config import load_settings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LitestarDeprecationWarning)  # the docs routes' parameter style
        app = create_app(load_settings({"SMTPSETTINGS_DATA_DIR": str(tmp_path / "data")}))
    try:
        served = {
            _route_key(route.path): set(route.methods) - {"OPTIONS", "HEAD"}
            for route in app.app.routes  # type: ignore[attr-defined]
            if route.path != "/" and not route.path.startswith(UNDOCUMENTED)
        }
    finally:
        await app.app.state.services.close()  # type: ignore[attr-defined]
    documented = {_route_key(path): {m.upper() for m in item} for path, item in openapi_document()["paths"].items()}
    assert served == documented
    assert {MESSAGES, "/api/2.0/health/ready", "/metrics"} <= set(served)


def test_the_message_routes_are_declared_as_ours_with_their_answers(document: dict[str, Any]) -> None:
    operations = _operations(document)
    declared = {key: op["operationId"] for key, op in operations.items() if key[0].startswith(MESSAGES)}
    assert declared == MESSAGE_OPERATIONS
    common = {"401", "403", "404", "406", "429", "503"}
    expected = {
        (MESSAGES, "post"): {"202", "200", "400", "408", "413", "415", *common},
        (MESSAGES, "get"): {"200", "400", *common},
        (MESSAGES + "/{id}", "get"): {"200", *common},
        (MESSAGES + "/{id}", "delete"): {"200", "409", *common},
        (MESSAGES + "/{id}/retry", "post"): {"200", "409", *common},
    }
    for key, statuses in expected.items():
        op = operations[key]
        assert op["summary"].startswith("(ours)"), key
        assert set(op["responses"]) == statuses, key
        # Signed in as everywhere else: cookie asc_auth_key, a Bearer token or API key, Basic.
        assert "security" not in op and {"asc_auth_key", "Bearer"} <= {n for r in document["security"] for n in r}, key
        wrapper = "OutgoingMessageListWrapper" if key == (MESSAGES, "get") else "OutgoingMessageWrapper"
        for status in ("200", "202"):
            if status in op["responses"]:
                assert op["responses"][status]["content"]["application/json"]["schema"] == _ref_of(wrapper), key
    send = operations[(MESSAGES, "post")]
    assert send["requestBody"]["content"]["application/json"]["schema"] == _ref_of("OutgoingMessageRequestDto")
    assert [(p["name"], p["in"], p["required"]) for p in send["parameters"]] == [("Idempotency-Key", "header", False)]
    listing = operations[(MESSAGES, "get")]
    assert {p["name"] for p in listing["parameters"]} == {"status", "count", "startIndex"}
    schemas = document["components"]["schemas"]
    assert set(schemas["OutgoingMessageRequestDto"]["properties"]) == {"to", "cc", "bcc", "replyTo", "subject", "text", "html"}
    dto = schemas["OutgoingMessageDto"]
    assert set(dto["properties"]) == set(dto["required"]) == {
        "id", "status", "to", "cc", "subject", "attempts", "createdAt", "nextAttemptAt", "sentAt", "lastError",
        "smtpReply", "messageId", "recipients",
    }  # fmt: skip
    assert dto["properties"]["status"]["enum"] == ["queued", "sending", "sent", "partial", "deferred", "failed", "cancelled"]
    assert dto["properties"]["recipients"]["items"] == _ref_of("OutgoingMessageRecipientDto")
    recipient = schemas["OutgoingMessageRecipientDto"]
    assert set(recipient["properties"]) == set(recipient["required"]) == {"address", "status", "reply"}
    assert recipient["properties"]["status"]["enum"] == ["pending", "accepted", "refused", "deferred", "failed", "cancelled"]
    assert {"total", "count"} <= set(schemas["OutgoingMessageListWrapper"]["required"])


def _ref_of(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _settings_for(port: int) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": port, "senderAddress": "noreply@example.com", "enableSSL": False, "enableAuth": False}


def _wait_for(client: httpx.Client, message_id: str, statuses: set[str], document: dict[str, Any]) -> dict[str, Any]:
    """Poll the message until it is in one of ``statuses``; every answer on the way must conform."""
    import time

    deadline = time.monotonic() + 20
    while True:
        r = client.get(f"{MESSAGES}/{message_id}")
        assert r.status_code == 200, r.text
        _conforms(document, "OutgoingMessageWrapper", r.json())
        if r.json()["response"]["status"] in statuses or time.monotonic() > deadline:
            return r.json()["response"]  # type: ignore[no-any-return]
        time.sleep(0.05)


def test_the_message_routes_answer_what_the_document_declares(document: dict[str, Any], portal: Any) -> None:
    from smtp_peers import smtp_peer

    from smtpsettings.domain.accounts import Role

    schemas = document["components"]["schemas"]
    example = schemas["OutgoingMessageRequestDto"]["examples"][0]
    with smtp_peer() as (port, inbox), portal.client(Role.ADMIN) as c:
        assert c.post("/api/2.0/smtpsettings/smtp", json=_settings_for(port)).status_code == 200
        # The documented example is accepted, and a repeated Idempotency-Key answers the same message with 200.
        accepted = c.post(MESSAGES, json=example, headers={"Idempotency-Key": "order-42"})
        assert accepted.status_code == 202, accepted.text
        _conforms(document, "OutgoingMessageWrapper", accepted.json())
        again = c.post(MESSAGES, json=example, headers={"Idempotency-Key": "order-42"})
        assert again.status_code == 200 and again.json()["response"]["id"] == accepted.json()["response"]["id"]
        _conforms(document, "OutgoingMessageWrapper", again.json())
        sent = _wait_for(c, accepted.json()["response"]["id"], {"sent"}, document)
        assert sent["status"] == "sent" and sent["sentAt"] and sent["smtpReply"]
        assert len(inbox.messages) == 1

        page = c.get(MESSAGES, params={"status": "sent", "count": "1", "startIndex": "0"})
        assert page.status_code == 200
        _conforms(document, "OutgoingMessageListWrapper", page.json())
        assert page.json()["total"] == 1 and page.json()["count"] == 1

        # Errors: cancel and retry of a sent message, an unknown id, and field-by-field validation.
        for call in (lambda: c.delete(f"{MESSAGES}/{sent['id']}"), lambda: c.post(f"{MESSAGES}/{sent['id']}/retry")):
            conflict = call()
            assert conflict.status_code == 409
            _conforms(document, "Error", conflict.json())
        missing = c.get(f"{MESSAGES}/no-such-message")
        assert missing.status_code == 404
        _conforms(document, "Error", missing.json())
        refused = c.post(MESSAGES, json={"to": ["not an address"], "replyTo": "x", "subject": "a\u0007b"})
        assert refused.status_code == 400
        _conforms(document, "ValidationError", refused.json())
        properties = {name.lower() for name in schemas["OutgoingMessageRequestDto"]["properties"]}
        assert {"To", "ReplyTo", "Subject", "Text"} == set(refused.json()["response"]["errors"])
        assert {name.lower() for name in refused.json()["response"]["errors"]} <= properties


def test_a_failed_message_and_its_retry_answer_what_the_document_declares(document: dict[str, Any], portal: Any) -> None:
    from smtp_peers import smtp_peer

    from smtpsettings.domain.accounts import Role

    with smtp_peer(refuse_rcpt="550 5.1.1 No such user") as (port, _), portal.client(Role.ADMIN) as c:
        assert c.post("/api/2.0/smtpsettings/smtp", json=_settings_for(port)).status_code == 200
        r = c.post(MESSAGES, json={"to": ["a@example.com"], "subject": "", "text": "Hi"})
        assert r.status_code == 202, r.text
        failed = _wait_for(c, r.json()["response"]["id"], {"failed"}, document)
        assert failed["status"] == "failed" and failed["lastError"] and failed["smtpReply"].startswith("550")
        retried = c.post(f"{MESSAGES}/{failed['id']}/retry")
        assert retried.status_code == 200
        _conforms(document, "OutgoingMessageWrapper", retried.json())
        _wait_for(c, failed["id"], {"failed"}, document)


def _pattern(document: dict[str, Any], path: str, method: str, name: str) -> str:
    """The pattern of a parameter's string form."""
    (parameter,) = [p for p in document["paths"][path][method]["parameters"] if p["name"] == name]
    schema = parameter["schema"]
    string_form = next(s for s in schema.get("anyOf", [schema]) if s["type"] == "string")
    return str(string_form["pattern"])


PAGE_VALUES = ["", "1", "0001", "50", " 7", "7\t", "1000", "1001", "0", "  ", "+5", "-1", "5.0", "\u0665", "abc", "1e3"]


@pytest.mark.parametrize("name", ["count", "startIndex"])
def test_the_page_parameters_are_refused_exactly_when_the_document_says(
    document: dict[str, Any], portal: Any, name: str
) -> None:
    from smtpsettings.domain.accounts import Role

    pattern = _pattern(document, MESSAGES, "get", name)
    with portal.client(Role.ADMIN) as c:
        for value in [*PAGE_VALUES, "999999999", "1000000000", "1000000001"]:
            status = c.get(MESSAGES, params={name: value}).status_code
            assert status == (200 if _matches(pattern, value) else 400), (name, value)


def test_the_status_filter_is_refused_exactly_when_the_document_says(document: dict[str, Any], portal: Any) -> None:
    from smtpsettings.domain.accounts import Role

    (parameter,) = [p for p in document["paths"][MESSAGES]["get"]["parameters"] if p["name"] == "status"]
    with portal.client(Role.ADMIN) as c:
        for value in ["", "sent", "failed", "cancelled", "Sent", " sent", "bogus"]:
            status = c.get(MESSAGES, params={"status": value}).status_code
            assert status == (200 if value in parameter["schema"]["enum"] else 400), value


IDEMPOTENCY_KEYS = ["k", "order-42", "a" * 255, "a" * 256, "with space", "", "~!{}", "caf\u00e9", "tab\there"]


def test_the_idempotency_key_is_refused_exactly_when_the_document_says(document: dict[str, Any], portal: Any) -> None:
    from smtpsettings.domain.accounts import Role

    pattern = _pattern(document, MESSAGES, "post", "Idempotency-Key")
    body = {"to": ["a@example.com"], "subject": "Hi", "text": "Hi"}
    with portal.client(Role.ADMIN) as c:
        # Nothing is delivered anywhere: the portal's mail server is a closed port on loopback.
        assert c.post("/api/2.0/smtpsettings/smtp", json=_settings_for(9)).status_code == 200
        for value in IDEMPOTENCY_KEYS:
            r = c.post(MESSAGES, json=body, headers={"Idempotency-Key": value.encode("latin-1")})  # type: ignore[dict-item]
            assert r.status_code in (200, 202, 400), r.text
            assert (r.status_code != 400) is _matches(pattern, value), (value, r.text)
            if r.status_code == 202:
                c.delete(f"{MESSAGES}/{r.json()['response']['id']}")


# Addresses the server accepts, each of which the documented pattern must admit.
ADDRESSES_ACCEPTED = [
    "ann@example.com",
    "Ann.Lee+tag@Example.COM",
    "o'brien@mail.example.co.uk",
    "x!#$%&*/=?^_`{|}~-@example.com",
    "ünïcode@bücher.example",
    "a@例え。テスト",
    "user@localhost",
    "a@1and1.com",
]
# Strings the pattern leaves out, each of which the server must refuse (else a fuzzer's "invalid" data passes).
ADDRESSES_OUTSIDE_THE_PATTERN = [
    "",
    "ann",
    "@example.com",
    "ann@",
    "a@b@example.com",
    "Ann <ann@example.com>",
    "<ann@example.com>",
    "a b@example.com",
    "ann@example.com\n",
    "ann\u00a0@example.com",
    "ann@exa\u0085mple.com",
    "\u007fann@example.com",
]


def test_the_address_pattern_admits_what_the_server_accepts_and_only_leaves_out_what_it_refuses(
    document: dict[str, Any],
) -> None:
    from smtpsettings.domain.errors import ValidationFailed
    from smtpsettings.domain.outbox import parse_message

    to = document["components"]["schemas"]["OutgoingMessageRequestDto"]["properties"]["to"]
    pattern = to["items"]["pattern"]
    for address in ADDRESSES_ACCEPTED:
        parse_message({"to": [address], "subject": "", "text": "x"})
        assert _matches(pattern, address), address
    for address in ADDRESSES_OUTSIDE_THE_PATTERN:
        assert not _matches(pattern, address), address
        with pytest.raises(ValidationFailed):
            parse_message({"to": [address], "subject": "", "text": "x"})


def test_a_message_body_the_schema_refuses_the_server_refuses(document: dict[str, Any]) -> None:
    # What the request schema says beyond each field (a recipient, a body) is what the server checks.
    from smtpsettings.domain.errors import ValidationFailed
    from smtpsettings.domain.outbox import parse_message

    validator = _validator(document, "OutgoingMessageRequestDto")
    bodies = [
        {"subject": "", "text": "x"},
        {"to": [], "cc": None, "bcc": [], "subject": "", "text": "x"},
        {"to": ["a@example.com"], "subject": ""},
        {"to": ["a@example.com"], "subject": "", "text": "", "html": None},
        {"to": ["a@example.com"], "text": "x"},
        {"to": ["a@example.com"], "subject": "x" * 999, "text": "x"},
        {"to": ["a@example.com"], "subject": "a\rb", "text": "x"},
    ]
    for body in bodies:
        assert not validator.is_valid(body), body
        with pytest.raises(ValidationFailed):
            parse_message(body)
    for body in [
        {"bcc": ["a@example.com"], "subject": "", "html": "<p>x</p>"},
        {"to": ["a@example.com"], "cc": [], "subject": "", "text": "x", "unknown": 1},
        document["components"]["schemas"]["OutgoingMessageRequestDto"]["examples"][0],
    ]:
        assert validator.is_valid(body), body
        parse_message(body)


def test_readiness_and_metrics_are_listed_and_answer_as_declared(document: dict[str, Any], server: Any) -> None:
    operations = _operations(document)
    ready, metrics = operations[("/api/2.0/health/ready", "get")], operations[("/metrics", "get")]
    assert ready["summary"].startswith("(ours)") and metrics["summary"].startswith("(ours)")
    assert ready["security"] == metrics["security"] == []
    assert "Retry-After" in ready["responses"]["503"]["headers"]
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        _conforms(document, "HealthWrapper", c.get("/api/2.0/health/ready").json())
        declared = set(metrics["responses"]["200"]["content"])
        for accept in (None, "application/openmetrics-text; version=1.0.0"):
            r = c.get("/metrics", headers={"Accept": accept} if accept else {})
            assert r.status_code == 200
            assert r.headers["content-type"].split(";")[0] in declared, r.headers["content-type"]


def test_a_message_delivered_in_part_answers_what_the_document_declares(document: dict[str, Any], portal: Any) -> None:
    from smtp_peers import smtp_peer

    from smtpsettings.domain.accounts import Role

    replies = {"gone@example.com": ["550 5.1.1 No such user"], "later@example.com": ["450 4.2.1 Busy"]}
    with smtp_peer(rcpt_replies=replies) as (port, _), portal.client(Role.ADMIN) as c:
        assert c.post("/api/2.0/smtpsettings/smtp", json=_settings_for(port)).status_code == 200
        body = {"to": ["a@example.com", "gone@example.com"], "cc": ["later@example.com"], "subject": "", "text": "Hi"}
        r = c.post(MESSAGES, json=body)
        assert r.status_code == 202, r.text
        _conforms(document, "OutgoingMessageWrapper", r.json())
        done = _wait_for(c, r.json()["response"]["id"], {"partial"}, document)  # deferred on the way, checked too
        assert done["status"] == "partial"
        assert [x["status"] for x in done["recipients"]] == ["accepted", "refused", "accepted"]
        page = c.get(MESSAGES, params={"status": "partial"})
        _conforms(document, "OutgoingMessageListWrapper", page.json())
        assert page.json()["total"] == 1
