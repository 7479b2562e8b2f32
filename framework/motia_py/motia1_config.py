"""Step configs in Motia 1.0's format (``triggers``, ``enqueues``) -> frozen :class:`StepSpec` objects.

A 1.0 step has no ``type``: its triggers say how it runs (``queue``, ``http``, ``cron``, ``state``,
``stream``). Each trigger becomes one spec of the kind motia-py already runs (an event, API, cron or
state step; a stream trigger is a state step watching the stream's items), all calling the step's
handler through an adapter (:mod:`.motia1_run`); a step with one
trigger keeps its name, a step with several gets ``<name>#<kind>`` per trigger (``#<kind><n>`` when it
has several of one kind). :func:`build_steps` tells the two formats apart and explains a config that is
in neither.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from msgspec import structs

from .api_config import parse_api
from .config import build_step
from .config_keys import (
    EMIT_KEYS,
    boolean,
    camel,
    check_name,
    choice,
    count,
    duration,
    normalise_keys,
    shown,
    snake,
    str_list,
    text,
)
from .cron import parse_cron
from .errors import StepConfigError, StepFormatError
from .schema import to_schema
from .spec import BackoffSpec, BackoffType, EmitSpec, QueueSpec, QueueType, StepSpec, StepType, TriggerOrigin
from .state_watch import StateWatch
from .stream_config import NAMESPACE_PREFIX
from .suggest import did_you_mean, suggest

STEP_KEYS = {"name", "triggers", "enqueues", "virtual_enqueues", "virtual_subscribes", "description", "flows",
             "include_files"}
IGNORED_KEYS = {"include_files"}  # Motia's cloud bundling only
TRIGGER_KEYS: dict[str, set[str]] = {
    "queue": {"type", "topic", "condition", "input", "config"},
    "http": {"type", "method", "path", "condition", "middleware", "body_schema", "response_schema", "query_params"},
    "cron": {"type", "expression", "condition"},
    "state": {"type", "condition"},
    "stream": {"type", "stream_name", "group_id", "item_id", "condition"},
}
QUEUE_CONFIG_KEYS = {"type", "max_retries", "visibility_timeout", "delay_seconds", "concurrency", "backoff_type",
                     "backoff_delay_ms"}
_V0_HINTS = {
    "type": "a Motia 1.0 step gets its kind from 'triggers'; remove 'type'",
    "subscribes": "in Motia 1.0 a step listens with queue('topic') in 'triggers'",
    "emits": "Motia 1.0 calls it 'enqueues'",
    "virtual_emits": "Motia 1.0 calls it 'virtualEnqueues'",
    "cron": "in Motia 1.0: cron('0 */5 * * * *') in 'triggers'",
    "path": "in Motia 1.0: http('GET', '/path') in 'triggers'",
    "method": "in Motia 1.0: http('GET', '/path') in 'triggers'",
    "body_schema": "in Motia 1.0: http('POST', '/path', body_schema=...) in 'triggers'",
    "response_schema": "in Motia 1.0: http(..., response_schema={200: ...}) in 'triggers'",
    "query_params": "in Motia 1.0: http(..., query_params=[...]) in 'triggers'",
    "middleware": "in Motia 1.0: http(..., middleware=[...]) in 'triggers'",
    "input": "in Motia 1.0: queue('topic', input=...) in 'triggers'",
    "infrastructure": "in Motia 1.0: queue('topic', config={'maxRetries': ...}) in 'triggers'",
}
_V0_ONLY = {"subscribes", "emits", "virtual_emits", "cron", "path", "method", "body_schema", "input",
            "infrastructure"}


def _fields(obj: Any) -> dict[str, Any]:
    """A config object (a pydantic model of Motia's SDK or of motia-py's) as a dict of its fields."""
    names = getattr(type(obj), "model_fields", None)
    if isinstance(names, Mapping):
        return {n: getattr(obj, n) for n in names}
    return dict(vars(obj))


def _as_mapping(value: Any) -> Any:
    """A config model as a dict of its fields; anything else as it is."""
    return _fields(value) if isinstance(getattr(type(value), "model_fields", None), Mapping) else value


def unwrap(config: Any, handler: Any) -> tuple[Any, Any]:
    """``config`` as a dict when it is a 1.0 config object (``StepConfig``, ``step(...)``'s definition),
    and the handler (a definition's own when the module has none)."""
    inner = getattr(config, "config", None)
    if inner is not None and callable(getattr(config, "handler", None)) and hasattr(inner, "triggers"):
        return _fields(inner), handler if handler is not None else config.handler
    if not isinstance(config, Mapping) and hasattr(config, "triggers") and hasattr(config, "name"):
        return _fields(config), handler
    return config, handler


def config_format(raw: Mapping[str, Any]) -> str:
    """``"1.0"`` (``triggers``) or ``"0.x"`` (``type``).

    Raises:
        StepFormatError: both, or neither (saying which format the keys look like, with a hint).
    """
    keys = {snake(k) for k in raw if isinstance(k, str)}
    if "triggers" in keys and "type" in keys:
        raise StepFormatError("the config has both 'type' (Motia 0.x) and 'triggers' (Motia 1.0)", field="type",
                              hint=_V0_HINTS["type"])
    if "triggers" in keys:
        return "1.0"
    if "type" in keys:
        return "0.x"
    near = next((k for k in raw if isinstance(k, str) and suggest(snake(k), ["triggers"])), None)
    if near is not None:
        raise StepFormatError(f"the config has no 'triggers' (Motia 1.0) and no 'type' (Motia 0.x); it has "
                              f"{near!r}", field=near, hint="did you mean 'triggers'?")
    if keys & {"enqueues", "virtual_enqueues"}:
        raise StepFormatError("the config looks like Motia 1.0 ('enqueues') but has no 'triggers'", field="triggers",
                              hint="add 'triggers': [queue('topic')], [http('GET', '/path')] or [cron('0 * * * * *')]")
    old = sorted(keys & _V0_ONLY)
    if old:
        kind = ("event" if "subscribes" in keys else "cron" if "cron" in keys else "api" if "path" in keys
                else "event")
        raise StepFormatError(f"the config looks like Motia 0.x ({', '.join(old)}) but has no 'type'", field="type",
                              hint=f"add 'type': '{kind}' (Motia 0.x), or write it with 'triggers' (Motia 1.0)")
    raise StepFormatError("the config has neither 'type' (Motia 0.x) nor 'triggers' (Motia 1.0)", field="triggers",
                          hint="Motia 1.0: 'triggers': [http('GET', '/path')]; Motia 0.x: 'type': 'api' with "
                               "'path' and 'method'")


def build_steps(config: Any, handler: Any, file: Path, line: int | None = None) -> tuple[StepSpec, ...]:
    """The specs of one step file: one for a Motia 0.x config, one per trigger for a 1.0 config.

    Raises:
        StepConfigError: the first problem found, naming the field and giving a hint.
    """
    config, handler = unwrap(config, handler)
    if isinstance(config, Mapping) and config_format(config) == "1.0":
        return build_v1_steps(config, handler, file, line)
    return (build_step(config, handler, file, line),)


def _key_of(key: str, where: str) -> StepConfigError:
    k = snake(key)
    hint = _V0_HINTS.get(k) or did_you_mean(camel(k) if key != key.lower() else k,
                                            [camel(x) if key != key.lower() else x for x in STEP_KEYS])
    return StepConfigError(f"unknown key {shown(key)}" + (f" in '{where}'" if where else ""), field=key,
                           hint=hint or f"valid keys: {', '.join(sorted(camel(x) for x in STEP_KEYS))}")


def _step_keys(raw: Mapping[str, Any]) -> dict[str, Any]:
    for key in raw:
        if isinstance(key, str) and snake(key) not in STEP_KEYS:
            raise _key_of(key, "")
    return normalise_keys(raw, STEP_KEYS, IGNORED_KEYS, "")


def _enqueues(cfg: Mapping[str, Any], key: str) -> tuple[EmitSpec, ...]:
    value = cfg.get(key) or []
    where = camel(key)
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise StepConfigError(f"'{where}' must be a list of topics", field=where, hint=f"write [{shown(value)}]")
    out: list[EmitSpec] = []
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        if isinstance(item, str):
            out.append(EmitSpec(topic=check_name(item, at)))
            continue
        raw = _as_mapping(item)
        if not isinstance(raw, Mapping):
            raise StepConfigError(f"'{at}' must be a topic or {{topic, label?, conditional?}}", field=at)
        e = normalise_keys(raw, EMIT_KEYS, set(), at)
        out.append(EmitSpec(topic=check_name(e.get("topic"), f"{at}.topic"), label=text(e, "label") or None,
                            conditional=boolean(e.get("conditional", False), f"{at}.conditional")))
    return tuple(out)


def _arity(fn: Callable[..., Any], what: str, most: int, form: str, field: str | None = None) -> int:
    """How many positional arguments ``fn`` takes (at most ``most``); more required is an error."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return most
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    kwonly = [p for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    if len(required) > most or kwonly:
        got = ", ".join(p.name for p in params)
        raise StepConfigError(f"{what} takes ({form}), but it is {what}({got})", field=field or what,
                              hint=f"define def {what}({form})")
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return most
    return min(len(positional), most)


def _callable(value: Any, where: str, form: str, most: int) -> Callable[..., Any] | None:
    if value is None:
        return None
    if not callable(value):
        raise StepConfigError(f"'{where}' must be a function ({form}), not {type(value).__name__}", field=where)
    _arity(value, where.rsplit(".", 1)[-1].split("[")[0], most, form, field=where)
    return value  # type: ignore[no-any-return]


def _trigger(value: Any, i: int) -> tuple[str, dict[str, Any]]:
    where = f"triggers[{i}]"
    raw = _as_mapping(value)
    if not isinstance(raw, Mapping):
        raise StepConfigError(f"'{where}' must be a trigger such as queue('topic') or {{'type': 'queue', ...}}, "
                              f"not {type(value).__name__}", field=where)
    kind = raw.get("type")
    if kind == "api":
        kind = "http"
    if kind not in TRIGGER_KEYS:
        near = did_you_mean(kind, TRIGGER_KEYS) if isinstance(kind, str) else None
        raise StepConfigError(f"'{where}.type' must be one of {', '.join(TRIGGER_KEYS)}, got {shown(kind)}",
                              field=f"{where}.type", hint=near or "e.g. {'type': 'queue', 'topic': 'order.created'}")
    return kind, normalise_keys({k: v for k, v in raw.items() if v is not None or k == "type"}, TRIGGER_KEYS[kind],
                                set(), where)


def _queue_spec(value: Any, where: str) -> QueueSpec:
    if value is None:
        return QueueSpec()
    raw = _as_mapping(value)
    if not isinstance(raw, Mapping):
        raise StepConfigError(f"'{where}' must be a QueueConfig or a dict", field=where)
    q = normalise_keys({k: v for k, v in raw.items() if v is not None}, QUEUE_CONFIG_KEYS, set(), where)
    base = QueueSpec()
    backoff = base.backoff
    if "backoff_type" in q or "backoff_delay_ms" in q:
        kind = BackoffType(choice(q.get("backoff_type", "exponential"), f"{where}.backoffType",
                                  tuple(b.value for b in BackoffType)))
        delay = duration(q["backoff_delay_ms"], f"{where}.backoffDelayMs", minimum=0) / 1000.0 \
            if "backoff_delay_ms" in q else backoff.delay_s
        backoff = BackoffSpec(type=kind, delay_s=delay, max_delay_s=max(backoff.max_delay_s, delay),
                              jitter=backoff.jitter)
    return QueueSpec(
        type=QueueType(choice(q.get("type", "standard"), f"{where}.type", tuple(t.value for t in QueueType))),
        max_retries=count(q.get("max_retries", base.max_retries), f"{where}.maxRetries", minimum=0),
        visibility_timeout_s=duration(q.get("visibility_timeout", base.visibility_timeout_s),
                                      f"{where}.visibilityTimeout", minimum=0.001),
        delay_s=duration(q.get("delay_seconds", 0), f"{where}.delaySeconds", minimum=0),
        concurrency=count(q.get("concurrency", base.concurrency), f"{where}.concurrency", minimum=1),
        backoff=backoff)


def _json_schema(value: Any, where: str) -> dict[str, Any] | None:
    """A request or response schema as JSON schema: a pydantic model is checked through its JSON schema,
    so the handler gets the plain JSON it would get from Motia."""
    schema = to_schema(value, where)
    return None if schema is None else schema.json


def _names(base: str, kinds: list[str]) -> list[str]:
    if len(kinds) == 1:
        return [base]
    counts, seen, out = Counter(kinds), Counter[str](), []
    for kind in kinds:
        seen[kind] += 1
        out.append(f"{base}#{kind}{seen[kind] if counts[kind] > 1 else ''}")
    return out


def _prefixed(exc: StepConfigError, where: str) -> StepConfigError:
    field = f"{where}.{exc.field}" if exc.field else where
    return type(exc)(f"'{where}': {exc}", field=field, hint=exc.hint)


def _handler(handler: Any) -> tuple[Callable[..., Any], int]:
    if handler is None:
        raise StepConfigError("the module has no 'handler'", field="handler", hint="define def handler(input, ctx)")
    if not callable(handler):
        raise StepConfigError(f"'handler' is not callable (it is a {type(handler).__name__})", field="handler",
                              hint="define def handler(input, ctx)")
    return handler, _arity(handler, "handler", 2, "input, ctx")


def _http(t: Mapping[str, Any], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(spec fields, plan fields) of an HTTP trigger."""
    responses = t.get("response_schema")
    query = [_as_mapping(q) for q in t.get("query_params") or []]
    try:
        if isinstance(responses, Mapping):
            responses = {k: _json_schema(v, f"responseSchema.{k}") for k, v in responses.items()}
        api = parse_api({"path": t.get("path"), "method": t.get("method", "GET"), "query_params": query,
                         "body_schema": _json_schema(t.get("body_schema"), "bodySchema"),
                         "response_schema": responses})
    except StepConfigError as exc:
        raise _prefixed(exc, where) from exc
    middleware = t.get("middleware") or []
    if not isinstance(middleware, list | tuple):
        raise StepConfigError(f"'{where}.middleware' must be a list of functions (request, ctx, next)",
                              field=f"{where}.middleware")
    mws = tuple(_callable(m, f"{where}.middleware[{j}]", "request, ctx, next", 3) for j, m in enumerate(middleware))
    spec = {"type": StepType.API, "api": structs.replace(api, raw_body=True)}
    return spec, {"method": api.method, "path": t.get("path"), "middleware": mws}


def _trigger_fields(kind: str, t: Mapping[str, Any], i: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(spec fields, plan fields) of trigger ``i``."""
    where = f"triggers[{i}]"
    if kind == "queue":
        topic = check_name(t.get("topic"), f"{where}.topic")
        return ({"type": StepType.EVENT, "subscribes": (topic,), "input": to_schema(t.get("input"), f"{where}.input"),
                 "queue": _queue_spec(t.get("config"), f"{where}.config")}, {"topic": topic})
    if kind == "http":
        return _http(t, where)
    if kind == "cron":
        expression: Any = t.get("expression")
        try:
            schedule = parse_cron(expression, "UTC")
        except StepConfigError as exc:
            raise _prefixed(exc, where) from exc
        return {"type": StepType.CRON, "cron": schedule}, {"expression": schedule.expression}
    if kind == "state":  # the state of the step's own namespace (its first flow's), as ctx.state writes it
        return {"type": StepType.STATE, "watch": StateWatch()}, {}
    name = check_name(t.get("stream_name"), f"{where}.streamName")
    group = t.get("group_id")
    if group is not None:
        group = check_name(group, f"{where}.groupId")
    item = t.get("item_id")
    if item is not None:
        item = check_name(item, f"{where}.itemId")
    return ({"type": StepType.STATE, "watch": StateWatch(namespace=NAMESPACE_PREFIX + name, group=group)},
            {"stream_name": name, "item_id": item})


def build_v1_steps(raw: Mapping[str, Any], handler: Any, file: Path, line: int | None = None
                   ) -> tuple[StepSpec, ...]:
    """One spec per trigger of a Motia 1.0 config (see the module docstring).

    Raises:
        StepConfigError: the first problem found, naming the field (``triggers[1].topic``) and giving a hint.
    """
    cfg = _step_keys(raw)
    name = check_name(cfg.get("name"), "name")
    triggers = cfg.get("triggers")
    if isinstance(triggers, Mapping) or not isinstance(triggers, list | tuple) or not triggers:
        raise StepConfigError("'triggers' must be a non-empty list", field="triggers",
                              hint="e.g. 'triggers': [http('GET', '/hello')]")
    parsed = [_trigger(t, i) for i, t in enumerate(triggers)]
    fn, arity = _handler(handler)
    emits = _enqueues(cfg, "enqueues")
    common: dict[str, Any] = {"file": file, "line": line, "description": text(cfg, "description"),
                              "flows": str_list(cfg, "flows"), "emits": emits, "is_async": True}
    topics = frozenset(e.topic for e in emits)
    from .motia1_http import adapter as http_adapter  # the 1.0 run-time (and the SDK's types): 1.0 steps only
    from .motia1_run import TriggerPlan, adapter

    specs = []
    for i, ((kind, t), spec_name) in enumerate(zip(parsed, _names(name, [k for k, _ in parsed]), strict=True)):
        fields, plan_fields = _trigger_fields(kind, t, i)
        condition = _callable(t.get("condition"), f"triggers[{i}].condition", "input, ctx", 2)
        plan = TriggerPlan(step=spec_name, kind=kind, index=i, handler=fn, arity=arity, enqueues=topics,
                           condition=condition, **plan_fields)
        kw = {**common, **fields, "name": spec_name, "origin": TriggerOrigin(name, kind, i, len(parsed)),
              "handler": http_adapter(plan) if kind == "http" else adapter(plan)}
        if i == 0:  # graph-only edges belong to the step, drawn once
            kw["virtual_emits"] = _enqueues(cfg, "virtual_enqueues")
            kw["virtual_subscribes"] = str_list(cfg, "virtual_subscribes")
        specs.append(StepSpec(**kw))
    return tuple(specs)
