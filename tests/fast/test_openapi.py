"""The OpenAPI document: committed in docs/openapi.json, and it says what the API answers.

No Redis, no worker, no database: describing the app builds it and reads nothing.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from api_hooks.__main__ import OPENAPI_FILE
from api_hooks.app import create_app, render_openapi
from api_hooks.bodies import ADOPT_FIELDS, CREATE_FIELDS, OPTIONAL_FIELDS

REGENERATE = "python -m api_hooks --openapi"
ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app().openapi()


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def test_the_committed_document_is_the_apps(document):
    committed = OPENAPI_FILE.read_text(encoding="utf-8")
    current = render_openapi(document)
    if committed != current:
        diff = difflib.unified_diff(
            committed.splitlines(),
            current.splitlines(),
            "docs/openapi.json",
            "the app",
            lineterm="",
        )
        shown = "\n".join(list(diff)[:60])
        pytest.fail(
            f"docs/openapi.json differs from the app's OpenAPI document. If the change is "
            f"intended, regenerate it with `{REGENERATE}` and commit it.\n{shown}",
            pytrace=False,
        )


def test_every_body_is_typed(document):
    # dict[str, Any] shows as an object without properties: a body nobody can read off.
    def untyped(node: Any, where: str) -> Iterator[str]:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" not in node:
                yield where
            if node.get("additionalProperties") is True:
                yield where
            for key, value in node.items():
                yield from untyped(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                yield from untyped(value, f"{where}/{index}")

    assert list(untyped(document, "#")) == []


def test_every_operation_declares_its_answers(document):
    for path, method, operation in operations(document):
        responses = operation["responses"]
        successes = [code for code in responses if code.startswith("2")]
        assert len(successes) == 1, f"{method} {path}: {sorted(responses)}"
        assert responses[successes[0]]["content"], f"{method} {path} has no success body"
        for code, response in responses.items():
            if code.startswith("4"):
                schema = response["content"]["application/json"]["schema"]
                assert schema == ERROR_BODY, f"{method} {path} {code}: {schema}"
    # FastAPI's list-of-errors shape is never answered, so it is never documented.
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_operator_routes_need_the_token_and_say_how_they_fail(document):
    for path, method, operation in operations(document):
        if path.startswith("/locations"):
            assert operation["security"] == [{"LocationsToken": []}]
            assert "401" in operation["responses"], f"{method} {path}"
            continue
        if path == "/metrics":
            assert operation["security"] == [{"MetricsToken": []}]
            assert "401" in operation["responses"]
            continue
        if not path.startswith("/operator/"):
            assert "security" not in operation, f"{method} {path} must stay open"
            continue
        assert operation["security"] == [{"OperatorToken": []}]
        assert {"401", "422"} <= set(operation["responses"]), f"{method} {path}"
        if "{tenant_id}" in path:
            assert "404" in operation["responses"], f"{method} {path}"
        if "requestBody" in operation:
            assert "413" in operation["responses"], f"{method} {path}"


def test_metrics_are_documented_as_text(document):
    metrics = document["paths"]["/metrics"]["get"]["responses"]["200"]
    assert list(metrics["content"]) == ["text/plain"]


def test_the_hand_parsed_bodies_are_described_field_by_field(document):
    create = document["paths"]["/operator/tenants"]["post"]["requestBody"]
    schema = create["content"]["application/json"]["schema"]
    assert create["required"] is True
    assert list(schema["properties"]) == [*CREATE_FIELDS, *OPTIONAL_FIELDS]
    assert schema["required"] == list(CREATE_FIELDS)
    assert schema["additionalProperties"] is False
    for name, field in schema["properties"].items():
        assert field.get("description"), f"tenant field {name} has no description"
    assert "54" in schema["properties"]["tenant_id"]["description"]
    assert "control characters" in schema["properties"]["name"]["description"]
    assert "30d" in schema["properties"]["retention_period"]["description"]

    adopt = document["paths"]["/operator/tenants/{tenant_id}/influxdb/adopt"]["post"]
    body = adopt["requestBody"]
    assert body["required"] is False
    assert set(body["content"]["application/json"]["schema"]["properties"]) == ADOPT_FIELDS


def test_the_committed_document_is_pretty_printed_with_sorted_keys():
    text = OPENAPI_FILE.read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
