"""The HTTP side of an API step's config: ``path``, ``method``, schemas, ``queryParams``, ``middleware``.

Everything a route needs at serving time is checked here, when the step is discovered: a path that
could not be routed (a parameter named twice) or a schema that could not be used (a dangling
``$ref``) is a validation error, never a crash of ``start``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from typing import Any

from . import check_cache
from .config_keys import (
    HTTP_METHODS,
    QUERY_PARAM_KEYS,
    boolean,
    check_name,
    choice,
    mapping,
    normalise_keys,
    shown,
    text,
)
from .errors import InputValidationError, StepConfigError
from .query import QueryParam
from .schema import Schema, to_schema
from .spec import ApiSpec

_COLON_PARAM = re.compile(r":([A-Za-z_][A-Za-z0-9_]*)")
_BRACE_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_QUERY_TYPES = {"string", "integer", "number", "boolean", "null"}


def normalise_path(path: str) -> str:
    """``/jobs/:id`` -> ``/jobs/{id}`` (both spellings are accepted)."""
    return _COLON_PARAM.sub(r"{\1}", path)


def path_params(path: str) -> list[str]:
    """The parameter names of a normalised path, in order."""
    return _BRACE_PARAM.findall(path)


def _path(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise StepConfigError("an api step needs 'path' starting with '/'", field="path", hint="e.g. '/jobs/:id'")
    if re.search(r"[\x00-\x20\x7f?#]", value) or not value.isascii():
        raise StepConfigError(f"'path' must be printable ASCII without spaces, '?' or '#', got {shown(value)}",
                              field="path", hint="declare query parameters in 'queryParams'")
    path = normalise_path(value)
    seen: set[str] = set()
    for name in path_params(path):
        if name in seen:
            raise StepConfigError(f"path parameter '{name}' appears twice in '{value}'", field="path",
                                  hint="give each parameter its own name, e.g. /a/:id/b/:bId")
        seen.add(name)
    return path


def _responses(value: Any) -> dict[int, Schema]:
    responses: dict[int, Schema] = {}
    for status, schema in mapping(value, "responseSchema").items():
        code = _status(status)
        if code is None or not 100 <= code <= 599:
            raise StepConfigError(f"responseSchema key {shown(status)} is not an HTTP status (100-599)",
                                  field="responseSchema")
        s = to_schema(schema, f"responseSchema.{code}")
        if s is not None:
            responses[code] = s
    return responses


def _status(key: Any) -> int | None:
    if isinstance(key, int) and not isinstance(key, bool):
        return key
    if isinstance(key, float) and key.is_integer():  # is_integer() is False for inf and nan
        return int(key)
    if isinstance(key, str) and key.isascii() and key.isdigit() and len(key) == 3:
        return int(key)
    return None


def _query_param(i: int, p: Any) -> QueryParam:
    where = f"queryParams[{i}]"
    if isinstance(p, str):
        return QueryParam(name=check_name(p, where))
    if not isinstance(p, Mapping):
        raise StepConfigError(f"'{where}' must be a name or {{name, description?, schema?, default?, required?}}",
                              field=where)
    q = normalise_keys(p, QUERY_PARAM_KEYS, set(), where)
    name = check_name(q.get("name"), f"{where}.name")
    schema = to_schema(q.get("schema"), f"{where}.schema")
    if schema is not None and schema.model is not None:
        raise StepConfigError(f"'{where}.schema' must be a JSON-schema dict such as {{'type': 'integer'}}",
                              field=f"{where}.schema")
    if schema is not None:
        types = _types(schema.json)
        scalar = types - {"array"}
        if not types <= _QUERY_TYPES | {"array"}:
            raise StepConfigError(f"'{where}.schema' must describe a string, integer, number, boolean or an array "
                                  f"of those (a query string holds text), not {', '.join(sorted(types))}",
                                  field=f"{where}.schema")
        if "array" in types and (scalar or not _types(_items(schema.json)) <= _QUERY_TYPES):
            raise StepConfigError(f"'{where}.schema' of type array must have scalar 'items'",
                                  field=f"{where}.schema")
    param = QueryParam(name=name, description=text(q, "description"), schema=schema,
                       default=q.get("default"), has_default="default" in q,
                       required=boolean(q.get("required", False), f"{where}.required"))
    if param.has_default and schema is not None:
        key = check_cache.key_of([schema.json, param.default])
        if not check_cache.passed("json-default", key):  # checked by an earlier discovery: no jsonschema import
            try:
                schema.validate(param.default)
            except InputValidationError as exc:
                raise StepConfigError(f"'{where}.default' fails its schema: {exc}", field=f"{where}.default") from exc
            check_cache.remember("json-default", key)
    if param.has_default and param.required:
        raise StepConfigError(f"'{where}' is required and has a default; give one or the other",
                              field=f"{where}.required")
    return param


def _types(schema: Mapping[str, Any]) -> set[str]:
    t = schema.get("type")
    if isinstance(t, str):
        return {t}
    if isinstance(t, list):
        return {x for x in t if isinstance(x, str)}
    return set()


def _items(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    items = schema.get("items")
    return items if isinstance(items, Mapping) else {}


def _query_params(value: Any) -> tuple[QueryParam, ...]:
    qp = value or []
    if not isinstance(qp, list | tuple):
        raise StepConfigError("'queryParams' must be a list", field="queryParams")
    params = [_query_param(i, p) for i, p in enumerate(qp)]
    names = [p.name for p in params]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise StepConfigError(f"query parameter '{name}' is declared twice", field=f"queryParams[{i}]")
    return tuple(params)


def _middleware(value: Any) -> tuple[Any, ...]:
    mw = value or []
    if not isinstance(mw, list | tuple):
        raise StepConfigError("'middleware' must be a list of async functions (req, ctx, next)", field="middleware")
    for i, m in enumerate(mw):
        if not inspect.iscoroutinefunction(m):
            name = getattr(m, "__name__", None)
            name = name if isinstance(name, str) and name.isidentifier() else "mw"
            raise StepConfigError(f"middleware[{i}] ({name}) must be an async function (req, ctx, next)",
                                  field=f"middleware[{i}]", hint=f"define it as: async def {name}(req, ctx, next)")
    return tuple(mw)


def parse_api(cfg: Mapping[str, Any]) -> ApiSpec:
    """The :class:`ApiSpec` of an API step's (snake-cased) config.

    Raises:
        StepConfigError: naming the field at fault.
    """
    path = _path(cfg.get("path"))
    method = cfg.get("method", "GET")
    if not isinstance(method, str):
        raise StepConfigError("'method' must be a string", field="method")
    method = choice(method.upper(), "method", HTTP_METHODS)
    return ApiSpec(path=path, method=method, body_schema=to_schema(cfg.get("body_schema"), "bodySchema"),
                   response_schema=_responses(cfg.get("response_schema")),
                   query_params=_query_params(cfg.get("query_params")), middleware=_middleware(cfg.get("middleware")))
