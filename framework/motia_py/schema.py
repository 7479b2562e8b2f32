"""Schemas for event input, emits and request bodies: a pydantic model class or a JSON-schema dict.

Both forms are wrapped in :class:`Schema`, which validates data, reports every bad field as
``{"loc": [...], "msg": "..."}`` and exposes a JSON schema for the graph and OpenAPI.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from msgspec import Struct

from . import check_cache
from .errors import InputValidationError, StepConfigError

if TYPE_CHECKING:  # jsonschema and referencing are imported when a JSON-schema dict is used: a project of
    # pydantic models never loads them; pydantic is imported by step files whose schemas are models
    import jsonschema
    import pydantic
    import referencing._core

    _Resolver = referencing._core.Resolver[Any]  # not exported by referencing, but what .resolver() returns

MAX_SCHEMA_DEPTH = 100
"""How deeply a JSON schema may nest: deeper ones (or cyclic ones) are refused when discovered, since
validating with them would overflow the interpreter's stack."""
_DATA_KEYS = {"enum", "const", "default", "examples"}  # their values are data, not schemas

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}


class Schema(Struct, frozen=True):
    """A validated schema: either ``model`` (a pydantic model class) or ``json`` alone."""

    json: dict[str, Any]
    model: type[pydantic.BaseModel] | None = None

    def validate(self, data: Any) -> Any:
        """Validate ``data``; return a model instance for a model schema, else ``data`` itself.

        Raises:
            InputValidationError: listing every bad field.
        """
        if self.model is not None:
            import pydantic  # imported already: the model is one of its classes

            try:
                return self.model.model_validate(data)
            except pydantic.ValidationError as exc:
                fields: list[dict[str, object]] = [
                    {"loc": list(err["loc"]), "msg": err["msg"]} for err in exc.errors()
                ]
                raise InputValidationError(_summary(fields), fields) from exc
            except RecursionError as exc:
                raise _too_deep() from exc
        import jsonschema

        validator = jsonschema.Draft202012Validator(self.json)
        try:
            errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
        except RecursionError as exc:  # data nested as deep as a recursive schema lets it go
            raise _too_deep() from exc
        if errors:
            fields = [{"loc": _loc(err), "msg": err.message} for err in errors]
            raise InputValidationError(_summary(fields), fields)
        return data


def _too_deep() -> InputValidationError:
    fields: list[dict[str, object]] = [{"loc": [], "msg": "the data is nested too deeply to validate"}]
    return InputValidationError(_summary(fields), fields)


def _loc(err: jsonschema.ValidationError) -> list[object]:
    loc: list[object] = list(err.absolute_path)
    if err.validator == "required" and isinstance(err.instance, dict):
        # jsonschema reports a missing property at its parent; name the property itself.
        missing = [p for p in list(err.validator_value) if p not in err.instance]  # type: ignore[arg-type]
        named = [p for p in missing if err.message.startswith(repr(p))]
        if named or missing:
            loc.append((named or missing)[0])
    return loc


def _summary(fields: list[dict[str, object]]) -> str:
    parts = []
    for f in fields:
        loc = f["loc"]
        where = ".".join(str(p) for p in loc) if isinstance(loc, list) and loc else "(root)"
        parts.append(f"{where}: {f['msg']}")
    return "; ".join(parts)


def _is_model_class(value: Any) -> bool:
    """True for a pydantic model class (there is none while pydantic is not imported)."""
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(value, type) and issubclass(value, pydantic.BaseModel)


def to_schema(value: Any, field: str) -> Schema | None:
    """Turn what a user wrote as ``input``/``bodySchema``/an emit ``schema`` into a :class:`Schema`.

    Everything that would fail later is refused here: a model whose JSON schema cannot be built
    (``BaseModel`` itself), a schema that is not JSON (a ``set``, ``NaN``), nests deeper than
    :data:`MAX_SCHEMA_DEPTH` or contains itself, is not a valid JSON schema, or has a ``$ref`` that
    resolves to nothing.

    Raises:
        StepConfigError: naming ``field``.
    """
    if value is None:
        return None
    if _is_model_class(value):
        try:
            json_schema = value.model_json_schema()
        except Exception as exc:  # pydantic raises several kinds here (BaseModel itself, arbitrary types)
            raise StepConfigError(f"'{field}': cannot build the JSON schema of {value.__name__}: {exc}",
                                  field=field, hint="pass a pydantic model class whose fields are JSON types") from exc
        return Schema(json=json_schema, model=value)
    if isinstance(value, dict):
        _check_shape(value, field)
        key = check_cache.key_of(value)
        if not check_cache.passed("json-schema", key):  # checked by an earlier discovery: no jsonschema import
            _check_json_schema(value, field)
            check_cache.remember("json-schema", key)
        return Schema(json=value)
    raise StepConfigError(
        f"'{field}' must be a pydantic model class or a JSON-schema dict, not {type(value).__name__}",
        field=field,
        hint="pass the class itself (Model), or Model.model_json_schema()",
    )


def _check_json_schema(schema: dict[str, Any], field: str) -> None:
    """A valid JSON schema (by its metaschema) whose every ``$ref`` resolves and that can be used."""
    import jsonschema

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise StepConfigError(f"'{field}' is not a valid JSON schema: {exc.message}", field=field) from exc
    _check_refs(schema, field)
    _check_usable(schema, field)


def _check_shape(schema: dict[str, Any], field: str) -> None:
    """Refuse a schema that contains itself, nests too deeply, or holds what JSON cannot."""
    stack: list[tuple[Any, int, frozenset[int]]] = [(schema, 1, frozenset())]
    while stack:
        node, depth, above = stack.pop()
        if not isinstance(node, dict | list):
            continue
        if id(node) in above:
            raise StepConfigError(f"'{field}' contains itself (a cycle); use a \"$ref\" instead", field=field)
        if depth > MAX_SCHEMA_DEPTH:
            raise StepConfigError(f"'{field}' nests deeper than {MAX_SCHEMA_DEPTH} levels", field=field,
                                  hint="move shared parts to \"$defs\" and point at them with \"$ref\"")
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1, above | {id(node)}) for child in children)
    try:
        json.dumps(schema, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StepConfigError(f"'{field}' is not JSON: {exc}", field=field,
                              hint="a JSON schema holds only dicts, lists, strings, finite numbers, bools and None"
                              ) from exc


def _refs(node: Any, resolver: _Resolver) -> Iterator[tuple[str, _Resolver]]:
    import referencing.jsonschema

    if isinstance(node, list):
        for item in node:
            yield from _refs(item, resolver)
        return
    if not isinstance(node, dict):
        return
    if isinstance(node.get("$id"), str):
        resolver = resolver.in_subresource(referencing.jsonschema.DRAFT202012.create_resource(node))
    for key in ("$ref", "$dynamicRef"):
        if isinstance(node.get(key), str):
            yield node[key], resolver
    for key, child in node.items():
        if key not in _DATA_KEYS:
            yield from _refs(child, resolver)


def _check_refs(schema: dict[str, Any], field: str) -> None:
    """Resolve every ``$ref`` now: a dangling one would fail every request or event that reaches it."""
    import jsonschema_specifications
    import referencing.exceptions
    import referencing.jsonschema

    root = referencing.jsonschema.DRAFT202012.create_resource(schema)
    resolver = jsonschema_specifications.REGISTRY.resolver_with_root(root)
    for ref, where in _refs(schema, resolver):
        try:
            where.lookup(ref)
        except referencing.exceptions.Unresolvable as exc:
            raise StepConfigError(f"'{field}' has a $ref that points at nothing: {ref!r}", field=field,
                                  hint="refer to a part of the same schema, such as '#/$defs/Name'") from exc

def _check_usable(schema: dict[str, Any], field: str) -> None:
    """Validate a few small values: a schema whose ``$ref`` leads back to itself without descending into
    the data (``{"$ref": "#"}``) overflows the stack on any value, and is refused now."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    samples: tuple[Any, ...] = (None, {}, [], "", 0)
    for sample in samples:
        try:
            for _ in validator.iter_errors(sample):
                pass
        except RecursionError as exc:
            raise StepConfigError(f"'{field}' refers to itself without descending into the data, so no value "
                                  "can be checked against it", field=field) from exc


def incompatibilities(produced: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """Say how data described by ``produced`` would fail ``expected`` (both JSON schemas).

    Only what can be known for sure is reported: a property the consumer requires that the producer
    does not declare, or a property whose declared JSON types do not overlap.
    """
    problems: list[str] = []
    p_props = _properties(produced)
    e_props = _properties(expected)
    if p_props is None or e_props is None:
        return problems
    p_required = set(produced.get("required", []))
    for name in expected.get("required", []):
        if name not in p_props:
            problems.append(f"requires '{name}', which the emitter does not declare")
        elif name not in p_required and p_props[name] is not None:
            problems.append(f"requires '{name}', which the emitter declares optional")
    for name, e_schema in e_props.items():
        p_schema = p_props.get(name)
        if p_schema is None or e_schema is None:
            continue
        p_types, e_types = _types(p_schema), _types(e_schema)
        if p_types and e_types and not _types_overlap(p_types, e_types):
            problems.append(
                f"'{name}' is {'/'.join(sorted(p_types))} from the emitter "
                f"but {'/'.join(sorted(e_types))} for the subscriber"
            )
    return problems


def _properties(schema: dict[str, Any]) -> dict[str, Any] | None:
    props = schema.get("properties")
    return props if isinstance(props, dict) else None


def _types(schema: Any) -> set[str]:
    if not isinstance(schema, dict):
        return set()
    t = schema.get("type")
    if isinstance(t, str):
        return {t}
    if isinstance(t, list):
        return {x for x in t if isinstance(x, str)}
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            out: set[str] = set()
            for sub in schema[key]:
                sub_types = _types(sub)
                if not sub_types:
                    return set()  # an untyped branch accepts anything
                out |= sub_types
            return out
    return set()


def _types_overlap(a: set[str], b: set[str]) -> bool:
    if a & b:
        return True
    return ("integer" in a and "number" in b) or ("number" in a and "integer" in b)
