"""An OpenAPI 3.1 document built from the project's API steps."""

from __future__ import annotations

import re
from typing import Any

from ._version import __version__
from .config import StepType
from .discovery import Project

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _hoist(schema: dict[str, Any], components: dict[str, Any], owner: str) -> dict[str, Any]:
    """Move ``$defs`` (pydantic) and ``definitions`` (draft-07) into ``components.schemas`` and point
    refs there. A different definition under a name already taken is renamed ``<Owner>_<Name>``."""
    schema = dict(schema)
    defs = {**(schema.pop("definitions", None) or {}), **(schema.pop("$defs", None) or {})}
    identity = {n: n for n in defs}
    names: dict[str, str] = {}
    for name, sub in defs.items():
        final, n = name, 2
        while final in components and components[final] != _rewrite(sub, identity):
            final = f"{owner}_{name}" if n == 2 else f"{owner}_{name}_{n}"
            n += 1
        names[name] = final
    for name, sub in defs.items():
        components[names[name]] = _rewrite(sub, names)
    out: dict[str, Any] = _rewrite(schema, names)
    return out


def _rewrite(node: Any, names: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and v.startswith(("#/$defs/", "#/definitions/")):
                name = v.split("/", 2)[2]
                out[k] = "#/components/schemas/" + names.get(name, name)
            else:
                out[k] = _rewrite(v, names)
        return out
    if isinstance(node, list):
        return [_rewrite(v, names) for v in node]
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
        params.extend({**q, "schema": _hoist(q["schema"], components, s.name)}
                      for q in (p.openapi() for p in api.query_params))
        if params:
            op["parameters"] = params
        if api.body_schema is not None:
            op["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": _hoist(api.body_schema.json, components, s.name)}}}
        responses: dict[str, Any] = {}
        for status, schema in sorted(api.response_schema.items()):
            content = {"application/json": {"schema": _hoist(schema.json, components, s.name)}}
            responses[str(status)] = {"description": f"{status} response", "content": content}
        if api.body_schema is not None:
            responses.setdefault("400", {"description": "the body is not JSON (see docs/api.md)"})
        if api.body_schema is not None or any(q.schema is not None or q.required for q in api.query_params):
            responses.setdefault("422", {"description": "the body or a query parameter fails its schema"})
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
