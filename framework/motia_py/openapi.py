"""An OpenAPI 3.1 document built from the project's API steps."""

from __future__ import annotations

import re
from typing import Any

from . import __version__
from .config import StepType
from .discovery import Project

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _hoist(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """Move pydantic's ``$defs`` into ``components.schemas`` and point refs there."""
    schema = dict(schema)
    defs = schema.pop("$defs", None) or {}
    for name, sub in defs.items():
        components[name] = _rewrite(sub)
    out: dict[str, Any] = _rewrite(schema)
    return out


def _rewrite(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and v.startswith("#/$defs/"):
                out[k] = "#/components/schemas/" + v[len("#/$defs/"):]
            else:
                out[k] = _rewrite(v)
        return out
    if isinstance(node, list):
        return [_rewrite(v) for v in node]
    return node


def openapi_document(project: Project, title: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every API step (paths, parameters, bodies, responses)."""
    paths: dict[str, dict[str, Any]] = {}
    components: dict[str, Any] = {}
    for s in sorted((s for s in project.steps if s.type is StepType.API and s.api), key=lambda s: s.name):
        api = s.api
        assert api is not None
        op: dict[str, Any] = {"operationId": s.name, "summary": s.description or s.name}
        if s.flows:
            op["tags"] = list(s.flows)
        params: list[dict[str, Any]] = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in _PARAM.findall(api.path)
        ]
        for q in api.query_params:
            param = {"name": str(q["name"]), "in": "query", "required": False, "schema": {"type": "string"}}
            if q.get("description"):
                param["description"] = str(q["description"])
            params.append(param)
        if params:
            op["parameters"] = params
        if api.body_schema is not None:
            op["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": _hoist(api.body_schema.json, components)}}}
        responses: dict[str, Any] = {}
        for status, schema in sorted(api.response_schema.items()):
            responses[str(status)] = {"description": f"{status} response",
                                      "content": {"application/json": {"schema": _hoist(schema.json, components)}}}
        if api.body_schema is not None:
            responses.setdefault("422", {"description": "the body fails its schema"})
        responses.setdefault("500", {"description": "the handler failed (see the trace id)"})
        if not any(k.startswith("2") for k in responses):
            responses["200"] = {"description": "success"}
        op["responses"] = responses
        paths.setdefault(api.path, {})[api.method.lower()] = op
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": title or project.root.name, "version": __version__},
        "paths": paths,
    }
    if components:
        doc["components"] = {"schemas": components}
    return doc
