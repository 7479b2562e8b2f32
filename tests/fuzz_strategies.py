"""Hypothesis strategies for the fuzz suites: hostile values, step configs, JSON schemas, TOML and JSON text.

Values mix what a careful user writes with what a hostile or careless one does: numbers past every
limit (``10**400``, ``inf``, ``nan``), text with NUL bytes, control characters and lone surrogates,
objects that are not data at all, schemas with dangling ``$ref``s, and nesting past every stack.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pydantic
from hypothesis import strategies as st

from motia_py.config import HTTP_METHODS


class Model(pydantic.BaseModel):
    """A well-formed model, for configs that should pass."""

    name: str
    count: int = 1


class HugeInt(int):
    """An int of 5,001 digits that hypothesis can print (``repr`` of the plain int raises ValueError)."""

    def __repr__(self) -> str:
        return "10**5000"


HUGE = HugeInt(10**5000)
NASTY_TEXT = ["", " ", "\x00", "a\x00b", "\ud800", "x\udfff", "\n", "line\r\nbreak", "\u202e", "é", "🙂",
              "${x}", "'; DROP TABLE x;--", "../../etc/passwd", "A" * 300, "%00", "{id}", ":id", "\t"]

texts = st.one_of(st.sampled_from(NASTY_TEXT),
                  st.text(st.characters(exclude_categories=()), max_size=12),  # lone surrogates included
                  st.text(max_size=8))
names = st.one_of(st.sampled_from(["job.created", "a", "Job", "job-processing", "x.y.z"]), texts)
ints = st.one_of(st.integers(-5, 100), st.integers(), st.sampled_from([2**31, 2**63, 10**400, HUGE, -(10**400)]))
floats = st.one_of(st.floats(), st.sampled_from([math.nan, math.inf, -math.inf, 1e308, 5e-324, 0.1]))
scalars = st.one_of(st.none(), st.booleans(), ints, floats, texts)
odd_objects = st.sampled_from([object(), pydantic.BaseModel, Model, int, b"bytes", {1, 2}, (1, 2), print, Ellipsis])


def values(depth: int = 3) -> st.SearchStrategy[Any]:
    """Any value a config could hold, nested up to ``depth`` containers (plus a very deep one now and then)."""
    base = st.one_of(scalars, odd_objects)
    nested = st.recursive(base, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                       st.dictionaries(texts, kids, max_size=3)),
                          max_leaves=6)
    return st.one_of(nested, st.builds(deep_list, st.integers(500, 3_000)))


class DeepList(list[Any]):
    """A list nested ``depth`` levels (its repr is short, for hypothesis' reports)."""

    depth = 0

    def __repr__(self) -> str:
        return f"deep_list({self.depth})"


def deep_list(depth: int) -> DeepList:
    """A list nested ``depth`` levels."""
    out: list[Any] = []
    for _ in range(depth - 1):
        out = [out]
    deep = DeepList([out])
    deep.depth = depth
    return deep


class DeepSchema(dict[str, Any]):
    """A JSON schema nested ``depth`` levels (short repr)."""

    depth = 0

    def __repr__(self) -> str:
        return f"deep_schema({self.depth})"


class CyclicSchema(dict[str, Any]):
    """A JSON schema that contains itself (short repr)."""

    def __repr__(self) -> str:
        return "cyclic_schema()"


def deep_schema(depth: int) -> DeepSchema:
    """A JSON schema nested ``depth`` levels."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth - 1):
        schema = {"type": "array", "items": schema}
    deep = DeepSchema(type="array", items=schema)
    deep.depth = depth
    return deep


def cyclic_schema() -> CyclicSchema:
    """A JSON schema that contains itself."""
    schema = CyclicSchema(type="object", properties={})
    schema["properties"]["self"] = schema
    return schema


REFS = ["#", "#/$defs/A", "#/$defs/Missing", "#/properties/x", "#/definitions/A", "other.json", "#anchor",
        "https://json-schema.org/draft/2020-12/schema", "http://127.0.0.1:1/x.json", "#/$defs/A/properties/z"]
TYPES = ["string", "integer", "number", "boolean", "array", "object", "null", "strng", 5]


def schemas() -> st.SearchStrategy[Any]:
    """JSON schemas: valid, invalid, dangling, self-referencing, deep, cyclic, or no schema at all."""
    leaf = st.one_of(
        st.fixed_dictionaries({"type": st.sampled_from(TYPES)}),
        st.fixed_dictionaries({"$ref": st.sampled_from(REFS)}),
        st.fixed_dictionaries({"type": st.just("string"), "pattern": st.sampled_from(["^a+$", "(", "[z-a]"])}),
        st.fixed_dictionaries({"type": st.just("integer"), "minimum": ints, "maximum": ints}),
        st.fixed_dictionaries({"enum": st.lists(scalars, max_size=3)}),
        st.fixed_dictionaries({"default": values(1)}),
    )
    tree = st.recursive(leaf, lambda kids: st.one_of(
        st.fixed_dictionaries({"type": st.just("object"), "properties": st.dictionaries(texts, kids, max_size=3)},
                              optional={"required": st.lists(texts, max_size=2),
                                        "$defs": st.fixed_dictionaries({"A": kids})}),
        st.fixed_dictionaries({"type": st.just("array"), "items": kids}),
        st.fixed_dictionaries({"anyOf": st.lists(kids, min_size=1, max_size=3)}),
    ), max_leaves=5)
    return st.one_of(tree, st.just(Model), st.just(pydantic.BaseModel), odd_objects, values(1),
                     st.builds(deep_schema, st.integers(90, 1_600)), st.builds(cyclic_schema))


def paths() -> st.SearchStrategy[Any]:
    """API paths: fine, with parameters (repeated ones too), and broken."""
    segment = st.one_of(st.sampled_from(["jobs", ":id", "{id}", ":jobId", "{x}", "a b", "?q", "#f", "é", "{1}"]),
                        texts)
    built = st.lists(segment, max_size=4).map(lambda parts: "/" + "/".join(parts))
    return st.one_of(built, scalars)


def query_params() -> st.SearchStrategy[Any]:
    """``queryParams`` entries: names, Motia's ``{name, description}``, and ours with schema/default/required."""
    entry = st.one_of(
        names,
        st.fixed_dictionaries({"name": names}, optional={
            "description": scalars, "schema": schemas(), "default": values(1), "required": scalars,
            "shema": scalars}),
        values(1),
    )
    return st.one_of(st.lists(entry, max_size=3), values(1))


def infrastructure() -> st.SearchStrategy[Any]:
    """``infrastructure`` tables with hostile numbers and vocabularies."""
    number = st.one_of(ints, floats, texts, st.none())
    queue = st.fixed_dictionaries({}, optional={
        "type": st.sampled_from(["standard", "fifo", "FIFO", 3]), "maxRetries": number,
        "visibilityTimeout": number, "delaySeconds": number, "concurrency": number,
        "max_retries": number, "backoff": st.fixed_dictionaries({}, optional={
            "type": st.sampled_from(["exponential", "fixed", "linear"]), "delay": number, "maxDelay": number,
            "jitter": scalars}),
    })
    table = st.fixed_dictionaries({}, optional={
        "handler": st.fixed_dictionaries({}, optional={"timeout": number, "ram": number}),
        "queue": queue, "cron": st.fixed_dictionaries({}, optional={"overlap": texts, "missed": texts}),
        "unknown": scalars,
    })
    return st.one_of(table, values(1))


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` about four times in five, else ``bad`` (so most configs get past their first field)."""
    return st.integers(0, 4).flatmap(lambda i: good if i else bad)


def configs() -> st.SearchStrategy[dict[str, Any]]:
    """Step configs (dicts) of every type, most of them close enough to valid to reach the deep checks."""
    good_names = st.sampled_from(["job.created", "a", "Job", "job-processing", "x.y.z", "t"])
    name = mostly(good_names, st.one_of(names, scalars))
    topics = mostly(st.lists(good_names, max_size=3), st.one_of(st.lists(names, max_size=3), scalars))
    emits = mostly(topics, st.lists(st.one_of(names, st.fixed_dictionaries(
        {"topic": names}, optional={"label": scalars, "conditional": scalars, "schema": schemas()})), max_size=2))
    schema = mostly(st.sampled_from([None, Model, {"type": "object"}]), schemas())
    common = {"description": mostly(st.just("d"), scalars), "flows": topics, "emits": emits,
              "virtualEmits": emits, "virtualSubscribes": topics, "includeFiles": values(1)}
    rare = {"unknownKey": scalars, "virtual_emits": emits}  # a key given twice, and an unknown one
    infra = mostly(st.fixed_dictionaries({}, optional={"queue": st.fixed_dictionaries(
        {}, optional={"maxRetries": st.integers(0, 10), "visibilityTimeout": st.floats(0.1, 100)})}),
        infrastructure())
    cron = mostly(st.sampled_from(["* * * * *", "*/10 * * * * *", "0 9 * * 1-5"]),
                  st.one_of(st.sampled_from(["0 0 31 2 *", "99999999999 * * * *", "* * *", "@daily",
                                             "1-999999999 * * * *", "*/0 * * * *"]), texts, scalars))
    zone = mostly(st.sampled_from(["UTC", "Europe/Paris"]),
                  st.one_of(st.sampled_from(["America", "Europe/", "A" * 300, "../etc/passwd", "UTC\x00"]),
                            texts, scalars))
    responses = mostly(st.dictionaries(st.sampled_from([200, "404", 201.0]), schemas(), max_size=2),
                       st.one_of(st.dictionaries(st.one_of(ints, floats, texts), schemas(), max_size=2), scalars))

    def step(kind: str, required: dict[str, Any], optional: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
        extra = st.fixed_dictionaries({}, optional=rare)
        optional = {k: v for k, v in {**common, **optional}.items() if k not in required}
        base = st.fixed_dictionaries({"type": st.just(kind), "name": name, **required}, optional=optional)
        return mostly(base, st.tuples(base, extra).map(lambda t: {**t[0], **t[1]}))

    return st.one_of(
        step("event", {"subscribes": topics}, {"input": schema, "infrastructure": infra}),
        step("cron", {"cron": cron}, {"timezone": zone, "infrastructure": infra}),
        step("api", {"path": mostly(st.sampled_from(["/jobs", "/jobs/:id", "/a/{b}/c"]), paths())},
             {"method": mostly(st.sampled_from([*HTTP_METHODS, "get"]), st.one_of(texts, scalars)),
              "bodySchema": schema, "responseSchema": responses, "queryParams": query_params(),
              "middleware": st.one_of(st.lists(odd_objects, max_size=2), scalars)}),
        step("noop", {"virtualSubscribes": topics}, {}),
        st.fixed_dictionaries({"type": st.one_of(scalars, odd_objects), "name": name}),
    )


def python_literal(value: Any) -> str:
    """``value`` as Python source (``float('nan')`` for NaN; objects become ``object()``)."""
    if isinstance(value, DeepList):
        return f"__import__('functools').reduce(lambda a, _: [a], range({value.depth}), [])"
    if isinstance(value, DeepSchema):
        return (f"__import__('functools').reduce(lambda s, _: {{'type': 'array', 'items': s}}, "
                f"range({value.depth}), {{'type': 'string'}})")
    if isinstance(value, CyclicSchema):
        return "(lambda d: (d['properties'].__setitem__('self', d), d)[1])({'type': 'object', 'properties': {}})"
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"
    if isinstance(value, bool | int | float | str | bytes) or value is None:
        return repr(value)
    if isinstance(value, list | tuple):
        inner = ", ".join(python_literal(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner},)"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{python_literal(k)}: {python_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, set | frozenset):
        return "{" + ", ".join(python_literal(v) for v in value) + "}" if value else "set()"
    if value is pydantic.BaseModel:
        return "__import__('pydantic').BaseModel"
    return "object()"


def toml_value(value: Any) -> str:
    """``value`` as TOML (hand-written: tomllib only reads)."""
    if isinstance(value, DeepList):
        return "[" * value.depth + "]" * value.depth
    if isinstance(value, DeepSchema | CyclicSchema):
        return '"?"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if abs(value) < 10**30 else "1" + "0" * 40
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return '"' + "".join(c if c.isprintable() and c not in '"\\' and not 0xD800 <= ord(c) <= 0xDFFF
                             else f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF and not 0xD800 <= ord(c) <= 0xDFFF
                             else "?" for c in value) + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_value(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    return '"?"'


SETTING_KEYS = {
    "project": ["steps_dir", "flows_dir", "step_dir"],
    "backend": ["url", "prefix", "max_payload_bytes"],
    "server": ["host", "port", "body_limit_bytes", "workbench_token", "allowed_hosts"],
    "worker": ["grace_period"],
    "traces": ["enabled", "max_age", "max_count", "otel"],
    "logging": ["format", "level"],
    "nope": ["x"],
}


def settings_files() -> st.SearchStrategy[str]:
    """``motia_py.toml`` texts: hostile values in real and misspelt keys, and text that is no TOML at all."""
    toml_scalars = st.one_of(st.booleans(), ints, floats, texts, st.just("memory://"), st.just("steps"))
    toml_values = st.one_of(toml_scalars, st.lists(toml_scalars, max_size=3),
                            st.builds(lambda n: "[" * n + "]" * n, st.integers(1, 3_000)).map(_Raw))
    section = st.sampled_from(sorted(SETTING_KEYS)).flatmap(
        lambda s: st.dictionaries(st.sampled_from(SETTING_KEYS[s]), toml_values, max_size=3).map(
            lambda d: f"[{s}]\n" + "".join(f"{k} = {v.text if isinstance(v, _Raw) else toml_value(v)}\n"
                                           for k, v in d.items())))
    return st.one_of(st.lists(section, max_size=4).map("\n".join), texts, st.just("[server\nport = 1"))


class _Raw:
    """TOML text written as is."""

    def __init__(self, text: str) -> None:
        self.text = text


def json_bodies() -> st.SearchStrategy[bytes]:
    """Request bodies: JSON, almost-JSON, and hostile JSON (deep, NaN, huge numbers, lone surrogates)."""
    json_values = st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                  st.text(max_size=10)),
        lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=5), kids, max_size=3)),
        max_leaves=8)
    hostile = st.sampled_from([
        b"[" * 5_000 + b"]" * 5_000, b'{"a":' * 120 + b"1" + b"}" * 120, b"[NaN]", b'{"x": Infinity}', b"[-1e999]",
        b'{"n": ' + b"9" * 5_000 + b"}", b'"\\ud800"', b'{"\\udc00": 1}', b'"\xed\xa0\x80"', b"\xff\xfe", b"{",
        b"\x00", b"nul", b'{"name": "a", "count": 1e400}', b"\xef\xbb\xbf{}", b'{"name": "ok", "count": 2}',
    ])
    return st.one_of(json_values.map(lambda v: json.dumps(v).encode()), hostile, st.binary(max_size=40))
