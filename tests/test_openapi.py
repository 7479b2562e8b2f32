"""The OpenAPI 3.1 document of a project's API steps, checked with a real validator (openapi-spec-validator)."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from motia_py.cli import main
from motia_py.discovery import Project
from motia_py.findings import Severity
from motia_py.http import start_server
from motia_py.openapi import openapi_document
from motia_py.runtime import Runtime, backend_for, load_project
from motia_py.settings import load_settings
from tests.conftest import ProjectFactory

CREATE_ORDER = """
from pydantic import BaseModel

class Address(BaseModel):
    street: str
    city: str

class LineItem(BaseModel):
    sku: str
    qty: int = 1

class Order(BaseModel):
    customer: str
    ship_to: Address
    lines: list[LineItem]

class Created(BaseModel):
    id: str
    ship_to: Address

config = {"type": "api", "name": "CreateOrder", "description": "Place an order", "path": "/orders",
          "method": "POST", "bodySchema": Order, "emits": ["order.created"], "flows": ["shop"],
          "responseSchema": {201: Created,
                             "400": {"type": "object", "properties": {"error": {"type": "string"}}}}}

async def handler(req, ctx):
    return {"status": 201, "body": {"id": "o1", "ship_to": req.body.ship_to}}
"""

GET_ORDER = """
config = {"type": "api", "name": "GetOrder", "path": "/orders/:id", "method": "GET", "flows": ["shop"],
          "queryParams": ["expand", {"name": "fields", "description": "comma-separated field names"}],
          "responseSchema": {"200": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}}}

async def handler(req, ctx):
    return {"status": 200, "body": {"id": req.pathParams["id"]}}
"""

PUT_NOTE = """
config = {"type": "api", "name": "PutNote", "path": "/orders/{order_id}/notes/{note_id}", "method": "PUT",
          "bodySchema": {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}}

async def handler(req, ctx):
    return {"status": 204}
"""

ON_ORDER = """
config = {"type": "event", "name": "OnOrder", "subscribes": ["order.created"], "emits": [], "flows": ["shop"]}

async def handler(input, ctx):
    pass
"""

SHOP = {
    "steps/create_order.step.py": CREATE_ORDER,
    "steps/get_order.step.py": GET_ORDER,
    "steps/put_note.step.py": PUT_NOTE,
    "steps/on_order.step.py": ON_ORDER,
}


def _load(root: Path) -> Project:
    project, findings = load_project(load_settings(root, flags={"backend_url": "memory://"}, env={}))
    assert [f for f in findings if f.severity is Severity.ERROR] == []
    return project


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def _assert_refs_resolve(doc: dict[str, Any]) -> None:
    """openapi-spec-validator does not follow ``$ref`` inside 3.1 schemas, so resolve each one here."""
    for ref in _refs(doc):
        assert ref.startswith("#/"), ref
        node: Any = doc
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
            node = node[part]


@pytest.fixture
def shop_root(make_project: ProjectFactory) -> Path:
    return make_project(SHOP)


@pytest.fixture
def doc(shop_root: Path) -> dict[str, Any]:
    return openapi_document(_load(shop_root))


def test_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.1.0"
    assert doc["info"] == {"title": "project", "version": doc["info"]["version"]}
    validate(doc)
    _assert_refs_resolve(doc)


def test_validator_rejects_a_broken_document(doc: dict[str, Any]) -> None:
    broken = copy.deepcopy(doc)
    del broken["paths"]["/orders"]["post"]["responses"]["201"]["description"]
    with pytest.raises(OpenAPIValidationError):
        validate(broken)


def test_only_api_steps_become_operations(doc: dict[str, Any]) -> None:
    ops = {(path, method): op["operationId"] for path, item in doc["paths"].items() for method, op in item.items()}
    assert ops == {
        ("/orders", "post"): "CreateOrder",
        ("/orders/{id}", "get"): "GetOrder",
        ("/orders/{order_id}/notes/{note_id}", "put"): "PutNote",
    }
    create = doc["paths"]["/orders"]["post"]
    assert create["summary"] == "Place an order"
    assert create["tags"] == ["shop"]
    assert "tags" not in doc["paths"]["/orders/{order_id}/notes/{note_id}"]["put"]


def test_path_and_query_params_are_documented(doc: dict[str, Any]) -> None:
    params = doc["paths"]["/orders/{id}"]["get"]["parameters"]
    assert params == [
        {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
        {"name": "expand", "in": "query", "required": False, "schema": {"type": "string"}},
        {"name": "fields", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "comma-separated field names"},
    ]
    note = doc["paths"]["/orders/{order_id}/notes/{note_id}"]["put"]["parameters"]
    assert [(p["name"], p["in"]) for p in note] == [("order_id", "path"), ("note_id", "path")]
    assert "parameters" not in doc["paths"]["/orders"]["post"]


def test_nested_pydantic_models_are_hoisted_to_components(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    assert set(schemas) == {"Address", "LineItem"}
    assert schemas["Address"]["required"] == ["street", "city"]
    body = doc["paths"]["/orders"]["post"]["requestBody"]
    assert body["required"] is True
    order = body["content"]["application/json"]["schema"]
    assert order["title"] == "Order"
    assert order["properties"]["ship_to"] == {"$ref": "#/components/schemas/Address"}
    assert order["properties"]["lines"]["items"] == {"$ref": "#/components/schemas/LineItem"}
    created = doc["paths"]["/orders"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    assert created["properties"]["ship_to"] == {"$ref": "#/components/schemas/Address"}
    assert "$defs" not in json.dumps(doc)


def test_json_schema_body_is_kept_as_written(doc: dict[str, Any]) -> None:
    op = doc["paths"]["/orders/{order_id}/notes/{note_id}"]["put"]
    assert op["requestBody"]["content"]["application/json"]["schema"] == {
        "type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}
    assert set(op["responses"]) == {"200", "400", "422", "500"}  # no responseSchema: a generic success


def test_response_schemas_keyed_by_int_or_str(doc: dict[str, Any]) -> None:
    create = doc["paths"]["/orders"]["post"]["responses"]
    assert set(create) == {"201", "400", "422", "500"}
    assert create["400"]["content"]["application/json"]["schema"] == {
        "type": "object", "properties": {"error": {"type": "string"}}}
    get = doc["paths"]["/orders/{id}"]["get"]["responses"]
    assert set(get) == {"200", "500"}  # no bodySchema: no 422
    assert get["200"]["content"]["application/json"]["schema"]["required"] == ["id"]


def test_same_named_nested_models_of_different_steps_stay_distinct(make_project: ProjectFactory) -> None:
    step = """
    from pydantic import BaseModel

    class Item(BaseModel):
        {field}: str

    class {name}Body(BaseModel):
        item: Item

    config = {{"type": "api", "name": "{name}", "path": "/{name}", "method": "POST", "bodySchema": {name}Body}}

    async def handler(req, ctx):
        return {{"status": 200, "body": {{}}}}
    """
    root = make_project({"steps/a.step.py": step.format(name="A", field="sku"),
                         "steps/b.step.py": step.format(name="B", field="weight")})
    doc = openapi_document(_load(root))
    validate(doc)
    fields = set()
    for path in ("/A", "/B"):
        ref = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        item_ref = ref["properties"]["item"]["$ref"]
        fields |= set(doc["components"]["schemas"][item_ref.rsplit("/", 1)[1]]["properties"])
    assert fields == {"sku", "weight"}


def test_json_schema_definitions_refs_resolve_in_the_document(make_project: ProjectFactory) -> None:
    root = make_project({"steps/c.step.py": """
    config = {"type": "api", "name": "C", "path": "/c", "method": "POST", "bodySchema": {
        "type": "object", "properties": {"p": {"$ref": "#/definitions/P"}},
        "definitions": {"P": {"type": "string"}}}}

    async def handler(req, ctx):
        return {"status": 200, "body": {}}
    """})
    doc = openapi_document(_load(root))
    validate(doc)
    _assert_refs_resolve(doc)


# -- served and printed ------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def client(shop_root: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings(shop_root, flags={"backend_url": "memory://"}, env={})
    project, _ = load_project(settings)
    rt = Runtime(project, backend_for(settings), cron=False, poll_s=0.05)
    await rt.start()
    server = await start_server(rt.router, settings, dev=False, port=0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=5.0) as c:
            yield c
    finally:
        await server.stop()
        await rt.stop(grace_s=1.0)


async def test_server_serves_the_document_at_openapi_json(client: httpx.AsyncClient, doc: dict[str, Any]) -> None:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == doc


def test_cli_openapi_prints_the_document(shop_root: Path, doc: dict[str, Any],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["openapi", "--project", str(shop_root)])
    assert exc.value.code == 0
    assert json.loads(capsys.readouterr().out) == doc


def test_query_param_schemas_defaults_and_required_are_documented(make_project: ProjectFactory) -> None:
    root = make_project({"steps/list.step.py": """
        config = {"type": "api", "name": "ListJobs", "path": "/jobs", "method": "GET", "flows": ["f"],
                  "queryParams": [
                      {"name": "limit", "description": "how many", "default": 50,
                       "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                      {"name": "owner", "required": True},
                      {"name": "tag", "schema": {"type": "array", "items": {"type": "string"}}},
                  ]}

        async def handler(req, ctx):
            return {"status": 200, "body": {}}
    """})
    project, _ = load_project(load_settings(root, env={}))
    doc = openapi_document(project)
    validate(doc)
    assert doc["paths"]["/jobs"]["get"]["parameters"] == [
        {"name": "limit", "in": "query", "required": False, "description": "how many",
         "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}},
        {"name": "owner", "in": "query", "required": True, "schema": {"type": "string"}},
        {"name": "tag", "in": "query", "required": False, "schema": {"type": "array", "items": {"type": "string"}}},
    ]
