"""Query parameters of API steps: declared in ``queryParams``, coerced and checked on every request.

An entry is a name (``"verbose"``) or ``{name, description?, schema?, default?, required?}`` (Motia
writes ``{name, description}``). With a ``schema`` (a JSON schema of one value, such as
``{"type": "integer", "minimum": 1}``), the query string's text is converted to the schema's type
(``integer``, ``number``, ``boolean``, ``string``, or an ``array`` of those from a repeated parameter),
then checked against the schema; a failure answers 422 naming ``["query", name]``. ``default`` is
used when the parameter is absent; ``required: true`` makes an absent parameter a 422.
Parameters that are not declared, or declared without a schema, reach the handler as strings.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from msgspec import Struct

from .errors import InputValidationError
from .schema import Schema

_INTEGER = re.compile(r"[+-]?[0-9]{1,4000}")
_NUMBER = re.compile(r"[+-]?(?:[0-9]{1,400}(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?")
_TRUE, _FALSE = ("true", "1"), ("false", "0")
_MISSING = object()


class QueryParam(Struct, frozen=True):
    """One declared query parameter.

    Attributes:
        name: the parameter's name in the query string.
        description: documentation (OpenAPI).
        schema: the JSON schema of its value; ``None`` leaves the value a string, unchecked.
        default: the value when the parameter is absent (checked against ``schema`` at discovery);
            ``None`` with ``has_default`` False means no default.
        required: an absent parameter (without default) answers 422.
    """

    name: str
    description: str = ""
    schema: Schema | None = None
    default: Any = None
    has_default: bool = False
    required: bool = False

    def openapi(self) -> dict[str, Any]:
        """This parameter as an OpenAPI ``parameters`` entry."""
        schema: dict[str, Any] = dict(self.schema.json) if self.schema is not None else {"type": "string"}
        if self.has_default:
            schema["default"] = self.default
        out: dict[str, Any] = {"name": self.name, "in": "query", "required": self.required, "schema": schema}
        if self.description:
            out["description"] = self.description
        return out

    def parse(self, raw: str | Sequence[str] | None) -> Any:
        """The handler's value for ``raw`` (a string, a list for a repeated parameter, or ``None``).

        Raises:
            ValueError: the value cannot be converted or fails the schema (the message says why).
        """
        if raw is None:
            if self.has_default:
                return self.default
            if self.required:
                raise ValueError("Field required")
            return _MISSING
        if self.schema is None:
            return raw
        value = coerce(raw, self.schema.json)
        try:
            return self.schema.validate(value)
        except InputValidationError as exc:
            raise ValueError("; ".join(str(f["msg"]) for f in exc.fields)) from exc


def parse_query(params: Sequence[QueryParam], query: Mapping[str, Any]) -> dict[str, Any]:
    """Apply the declared ``params`` to a request's ``query``; undeclared parameters pass unchanged.

    Raises:
        InputValidationError: listing every bad parameter at ``loc: ["query", name]``.
    """
    out = dict(query)
    fields: list[dict[str, object]] = []
    for p in params:
        try:
            value = p.parse(query.get(p.name))
        except ValueError as exc:
            fields.append({"loc": ["query", p.name], "msg": str(exc)})
            continue
        if value is not _MISSING:
            out[p.name] = value
    if fields:
        raise InputValidationError("; ".join(f"query.{f['loc'][1]}: {f['msg']}" for f in fields), fields)  # type: ignore[index]
    return out


def _types(schema: Mapping[str, Any]) -> list[str]:
    t = schema.get("type")
    if isinstance(t, str):
        return [t]
    if isinstance(t, list):
        return [x for x in t if isinstance(x, str)]
    return []


def coerce(raw: str | Sequence[str], schema: Mapping[str, Any]) -> Any:
    """Convert query-string text to the JSON type ``schema`` names (the schema then checks the value).

    Raises:
        ValueError: ``raw`` cannot be read as that type.
    """
    types = _types(schema)
    if "array" in types:
        items = schema.get("items")
        item_schema = items if isinstance(items, Mapping) else {}
        return [_scalar(v, _types(item_schema)) for v in ([raw] if isinstance(raw, str) else raw)]
    if not isinstance(raw, str):
        raise ValueError(f"expected one value, got {len(raw)}")
    return _scalar(raw, types)


def _scalar(raw: str, types: list[str]) -> Any:
    if not types or "string" in types:
        return raw
    for t in types:
        if t == "integer" and _INTEGER.fullmatch(raw):
            return int(raw)
        if t == "number" and _NUMBER.fullmatch(raw):
            value = float(raw)
            if math.isfinite(value):
                return int(raw) if _INTEGER.fullmatch(raw) else value
        if t == "boolean" and raw.lower() in _TRUE + _FALSE:
            return raw.lower() in _TRUE
        if t == "null" and raw in ("", "null"):
            return None
    wanted = " or ".join("a number" if t == "number" else f"an {t}" if t == "integer" else f"a {t}"
                         for t in types)
    shown = raw if len(raw) <= 40 else raw[:37] + "..."
    raise ValueError(f"must be {wanted}, got {shown!r}")
