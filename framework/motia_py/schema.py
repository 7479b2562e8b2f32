"""Schemas for event input, emits and request bodies: a pydantic model class or a JSON-schema dict.

Both forms are wrapped in :class:`Schema`, which validates data, reports every bad field as
``{"loc": [...], "msg": "..."}`` and exposes a JSON schema for the graph and OpenAPI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pydantic

from .errors import InputValidationError, StepConfigError

if TYPE_CHECKING:
    import jsonschema  # imported when a JSON-schema dict is used: a project of pydantic models never loads it

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}


@dataclass(frozen=True, slots=True)
class Schema:
    """A validated schema: either ``model`` (a pydantic model class) or ``json`` alone."""

    json: dict[str, Any]
    model: type[pydantic.BaseModel] | None = None

    def validate(self, data: Any) -> Any:
        """Validate ``data``; return a model instance for a model schema, else ``data`` itself.

        Raises:
            InputValidationError: listing every bad field.
        """
        if self.model is not None:
            try:
                return self.model.model_validate(data)
            except pydantic.ValidationError as exc:
                fields: list[dict[str, object]] = [
                    {"loc": list(err["loc"]), "msg": err["msg"]} for err in exc.errors()
                ]
                raise InputValidationError(_summary(fields), fields) from exc
        import jsonschema

        validator = jsonschema.Draft202012Validator(self.json)
        errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
        if errors:
            fields = [{"loc": _loc(err), "msg": err.message} for err in errors]
            raise InputValidationError(_summary(fields), fields)
        return data


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


def to_schema(value: Any, field: str) -> Schema | None:
    """Turn what a user wrote as ``input``/``bodySchema``/an emit ``schema`` into a :class:`Schema`.

    Raises:
        StepConfigError: when the value is neither a pydantic model class nor a valid JSON schema.
    """
    if value is None:
        return None
    if isinstance(value, type) and issubclass(value, pydantic.BaseModel):
        return Schema(json=value.model_json_schema(), model=value)
    if isinstance(value, dict):
        import jsonschema

        try:
            jsonschema.Draft202012Validator.check_schema(value)
        except jsonschema.SchemaError as exc:
            raise StepConfigError(
                f"'{field}' is not a valid JSON schema: {exc.message}", field=field
            ) from exc
        return Schema(json=value)
    raise StepConfigError(
        f"'{field}' must be a pydantic model class or a JSON-schema dict, not {type(value).__name__}",
        field=field,
        hint="pass the class itself (Model), or Model.model_json_schema()",
    )


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
