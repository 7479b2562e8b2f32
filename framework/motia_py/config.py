"""Step configs: what users write (a dict, Motia style, or a typed object) -> a frozen :class:`StepSpec`.

Keys may be camelCase (``virtualEmits``) or snake_case (``virtual_emits``). Unknown keys are errors
that suggest the nearest valid key. Keys that only matter to Motia's cloud are accepted and ignored.
"""

from __future__ import annotations

import enum
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pydantic
from pydantic.alias_generators import to_camel

from .cron import CronSchedule, parse_cron
from .errors import StepConfigError
from .schema import Schema, to_schema
from .suggest import did_you_mean, suggest


class StepType(str, enum.Enum):
    """The four kinds of step."""

    EVENT = "event"
    CRON = "cron"
    API = "api"
    NOOP = "noop"


class QueueType(str, enum.Enum):
    """``infrastructure.queue.type``: ``fifo`` orders delivery per ``messageGroupId``."""

    STANDARD = "standard"
    FIFO = "fifo"


class BackoffType(str, enum.Enum):
    """``infrastructure.queue.backoff.type``."""

    EXPONENTIAL = "exponential"
    FIXED = "fixed"


class CronOverlap(str, enum.Enum):
    """``infrastructure.cron.overlap``: what a tick does while the previous run still runs."""

    SKIP = "skip"
    ALLOW = "allow"


class CronMissed(str, enum.Enum):
    """``infrastructure.cron.missed``: what happens to ticks missed while no scheduler ran."""

    SKIP = "skip"
    RUN_ONCE = "run_once"


# ---------------------------------------------------------------------------------------------------
# Key vocabulary, in snake_case; camelCase is accepted everywhere.

_COMMON = {"type", "name", "description", "flows", "emits", "virtual_emits", "virtual_subscribes"}
_IGNORED = {"include_files"}  # Motia cloud only
_KEYS: dict[StepType, set[str]] = {
    StepType.EVENT: _COMMON | {"subscribes", "input", "infrastructure"},
    StepType.CRON: _COMMON | {"cron", "timezone", "infrastructure"},
    StepType.API: _COMMON | {"path", "method", "body_schema", "response_schema", "query_params", "middleware"},
    StepType.NOOP: _COMMON,
}
_INFRA_KEYS = {"handler", "queue", "cron"}
_HANDLER_KEYS = {"timeout"}
_HANDLER_IGNORED = {"ram", "cpu"}  # Motia cloud only
_QUEUE_KEYS = {"type", "max_retries", "visibility_timeout", "delay_seconds", "concurrency", "backoff", "dedup_window"}
_BACKOFF_KEYS = {"type", "delay", "max_delay", "jitter"}
_CRON_POLICY_KEYS = {"overlap", "missed"}
_EMIT_KEYS = {"topic", "label", "conditional", "schema"}
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")

_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def snake(key: str) -> str:
    """``virtualEmits`` -> ``virtual_emits`` (snake_case passes through)."""
    return _CAMEL.sub(r"_\1", key).lower()


def camel(key: str) -> str:
    """``virtual_emits`` -> ``virtualEmits``."""
    head, *rest = key.split("_")
    return head + "".join(p.title() for p in rest)


def _normalise_keys(raw: Mapping[str, Any], allowed: set[str], ignored: set[str], where: str) -> dict[str, Any]:
    """Snake-case the keys of ``raw`` and reject unknown ones, suggesting the nearest valid key."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise StepConfigError(f"config keys must be strings, got {key!r}", field=where or None)
        k = snake(key)
        path = f"{where}.{key}" if where else key
        if k in ignored:
            continue
        if k not in allowed:
            camel_style = key != key.lower()
            shown = {camel(a) if camel_style else a for a in allowed}
            best = suggest(key, shown) or suggest(k, allowed)
            if best is not None and not camel_style:
                best = best if best in allowed else snake(best)
            raise StepConfigError(
                f"unknown key '{key}'" + (f" in '{where}'" if where else ""),
                field=path,
                hint=f"did you mean '{best}'?" if best else f"valid keys: {', '.join(sorted(shown))}",
            )
        if k in out:
            raise StepConfigError(f"key '{key}' is given twice (camelCase and snake_case)", field=path)
        out[k] = value
    return out


# ---------------------------------------------------------------------------------------------------
# The frozen spec the runtime uses.


@dataclass(frozen=True, slots=True)
class EmitSpec:
    """One declared emit."""

    topic: str
    label: str | None = None
    conditional: bool = False
    schema: Schema | None = None


@dataclass(frozen=True, slots=True)
class BackoffSpec:
    """Retry delay policy: ``min(max_delay, delay * 2**(attempt-1))``, optionally with full jitter."""

    type: BackoffType = BackoffType.EXPONENTIAL
    delay_s: float = 1.0
    max_delay_s: float = 300.0
    jitter: bool = True


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """Delivery settings of one subscribing step."""

    type: QueueType = QueueType.STANDARD
    max_retries: int = 3
    visibility_timeout_s: float = 60.0
    delay_s: float = 0.0
    concurrency: int = 20
    backoff: BackoffSpec = field(default_factory=BackoffSpec)
    dedup_window_s: float | None = None  # idempotency keys of the step's topics are held this long

    @property
    def fifo(self) -> bool:
        """True when delivery is ordered per ``messageGroupId``."""
        return self.type is QueueType.FIFO


@dataclass(frozen=True, slots=True)
class CronPolicy:
    """What a cron step does on overlapping runs and on ticks missed while no worker ran."""

    overlap: CronOverlap = CronOverlap.SKIP
    missed: CronMissed = CronMissed.SKIP


@dataclass(frozen=True, slots=True)
class ApiSpec:
    """The HTTP side of an API step."""

    path: str
    method: str
    body_schema: Schema | None = None
    response_schema: Mapping[int, Schema] = field(default_factory=dict)
    query_params: tuple[Mapping[str, Any], ...] = ()
    middleware: tuple[Callable[..., Any], ...] = ()


@dataclass(frozen=True, slots=True, eq=False)  # identity equality: specs hold dicts and callables
class StepSpec:
    """Everything the runtime knows about one step, checked when it was discovered."""

    name: str
    type: StepType
    file: Path
    handler: Callable[..., Any] | None
    description: str = ""
    flows: tuple[str, ...] = ()
    emits: tuple[EmitSpec, ...] = ()
    virtual_emits: tuple[EmitSpec, ...] = ()
    virtual_subscribes: tuple[str, ...] = ()
    subscribes: tuple[str, ...] = ()
    input: Schema | None = None
    cron: CronSchedule | None = None
    api: ApiSpec | None = None
    timeout_s: float | None = 300.0
    queue: QueueSpec = field(default_factory=QueueSpec)
    cron_policy: CronPolicy = field(default_factory=CronPolicy)
    is_async: bool = True
    line: int | None = None

    @property
    def emit_topics(self) -> frozenset[str]:
        """Topics this step may emit at runtime."""
        return frozenset(e.topic for e in self.emits)

    def emit_spec(self, topic: str) -> EmitSpec | None:
        """The declared emit for ``topic``, if any."""
        for e in self.emits:
            if e.topic == topic:
                return e
        return None


# ---------------------------------------------------------------------------------------------------
# Typed config objects (the alternative to dicts). They share the dict path: to_dict() then build.


class _BaseConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(
        extra="forbid",
        populate_by_name=True,
        alias_generator=to_camel,
        arbitrary_types_allowed=True,
        frozen=True,
    )
    step_type: ClassVar[StepType] = StepType.EVENT

    name: str
    description: str = ""
    flows: list[str] = []
    emits: list[Any] = []
    virtual_emits: list[Any] = []
    virtual_subscribes: list[str] = []

    @pydantic.model_validator(mode="before")
    @classmethod
    def _check_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            allowed = _KEYS[cls.step_type] | _IGNORED
            _normalise_keys(data, allowed, set(), "")
            data = {snake(k): v for k, v in data.items() if snake(k) not in _IGNORED and k != "type"}
        return data

    @pydantic.model_validator(mode="wrap")
    @classmethod
    def _as_step_config_error(cls, data: Any, handler: pydantic.ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(data)
        except pydantic.ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(camel(str(p)) for p in err["loc"]) or None
            raise StepConfigError(f"{cls.__name__}: '{where}': {err['msg']}", field=where) from exc

    def to_dict(self) -> dict[str, Any]:
        """The config as a Motia-style dict (snake_case keys), with ``type`` set."""
        out = {k: getattr(self, k) for k in type(self).model_fields if k in self.model_fields_set}
        out["name"] = self.name
        out["type"] = self.step_type.value
        return out


class EventConfig(_BaseConfig):
    """Config of an event step: ``subscribes`` topics, optional ``input`` schema."""

    step_type: ClassVar[StepType] = StepType.EVENT
    subscribes: list[str]
    input: Any = None
    infrastructure: dict[str, Any] | None = None


class CronConfig(_BaseConfig):
    """Config of a cron step: ``cron`` expression (5 fields, or 6 with seconds first)."""

    step_type: ClassVar[StepType] = StepType.CRON
    cron: str
    timezone: str = "UTC"
    infrastructure: dict[str, Any] | None = None


class ApiConfig(_BaseConfig):
    """Config of an API step: ``path``, ``method`` and optional schemas and middleware."""

    step_type: ClassVar[StepType] = StepType.API
    path: str
    method: str = "GET"
    body_schema: Any = None
    response_schema: dict[Any, Any] | None = None
    query_params: list[Any] = []
    middleware: list[Any] = []


class NoopConfig(_BaseConfig):
    """Config of a noop step: graph-only edges (``virtualEmits``, ``virtualSubscribes``)."""

    step_type: ClassVar[StepType] = StepType.NOOP


TypedConfig = EventConfig | CronConfig | ApiConfig | NoopConfig


# ---------------------------------------------------------------------------------------------------
# Building a StepSpec.


def build_step(config: Any, handler: Any, file: Path, line: int | None = None) -> StepSpec:
    """Check ``config`` and ``handler`` and freeze them into a :class:`StepSpec`.

    Raises:
        StepConfigError: the first problem found, naming the field and giving a hint.
    """
    if isinstance(config, _BaseConfig):
        raw: Mapping[str, Any] = config.to_dict()
    elif isinstance(config, Mapping):
        raw = config
    else:
        raise StepConfigError(
            f"'config' must be a dict or a typed config (EventConfig, ...), not {type(config).__name__}",
            field="config",
        )
    raw_type = raw.get("type")
    if raw_type is None:
        raise StepConfigError("config has no 'type'", field="type", hint="one of event, cron, api, noop")
    try:
        step_type = StepType(raw_type)
    except ValueError:
        hint = did_you_mean(str(raw_type), [t.value for t in StepType]) or "one of event, cron, api, noop"
        raise StepConfigError(f"unknown step type '{raw_type}'", field="type", hint=hint) from None
    cfg = _normalise_keys(raw, _KEYS[step_type], _IGNORED, "")

    name = cfg.get("name")
    if not isinstance(name, str) or not name.strip():
        raise StepConfigError("config needs a non-empty 'name'", field="name")
    kw: dict[str, Any] = {
        "name": name,
        "type": step_type,
        "file": file,
        "line": line,
        "description": _str(cfg, "description"),
        "flows": _str_list(cfg, "flows"),
        "emits": _emits(cfg, "emits"),
        "virtual_emits": _emits(cfg, "virtual_emits"),
        "virtual_subscribes": _str_list(cfg, "virtual_subscribes"),
    }
    if step_type is StepType.EVENT:
        subs = _str_list(cfg, "subscribes")
        if not subs:
            raise StepConfigError("an event step needs 'subscribes' (a list of topics)", field="subscribes")
        kw["subscribes"] = subs
        kw["input"] = to_schema(cfg.get("input"), "input")
        kw.update(_infrastructure(cfg.get("infrastructure"), cron=False))
    elif step_type is StepType.CRON:
        tz = cfg.get("timezone", "UTC")
        if not isinstance(tz, str):
            raise StepConfigError("'timezone' must be a string such as 'UTC'", field="timezone")
        if "cron" not in cfg:
            raise StepConfigError("a cron step needs 'cron' (an expression)", field="cron",
                                  hint="'*/10 * * * * *' fires every 10 s")
        kw["cron"] = parse_cron(cfg["cron"], tz)
        kw.update(_infrastructure(cfg.get("infrastructure"), cron=True))
    elif step_type is StepType.API:
        kw["api"] = _api(cfg)
    else:
        if not kw["virtual_emits"] and not kw["virtual_subscribes"]:
            raise StepConfigError("a noop step needs 'virtualEmits' or 'virtualSubscribes'",
                                  field="virtualSubscribes")
    if step_type is not StepType.NOOP:
        kw["is_async"] = _check_handler(handler, step_type)
        kw["handler"] = handler
    else:
        kw["handler"] = None
    return StepSpec(**kw)


_ARITY = {StepType.EVENT: ("input", "ctx"), StepType.CRON: ("ctx",), StepType.API: ("req", "ctx")}


def _check_handler(handler: Any, step_type: StepType) -> bool:
    expected = _ARITY[step_type]
    form = f"handler({', '.join(expected)})"
    if handler is None:
        raise StepConfigError("the module has no 'handler'", field="handler", hint=f"define async def {form}")
    if not callable(handler):
        raise StepConfigError(f"'handler' is not callable (it is a {type(handler).__name__})", field="handler",
                              hint=f"define async def {form}")
    try:
        sig = inspect.signature(handler)
    except (TypeError, ValueError):
        return inspect.iscoroutinefunction(handler)
    params = list(sig.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    var = any(p.kind is p.VAR_POSITIONAL for p in params)
    required_kwonly = [p for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    if len(required) > len(expected) or required_kwonly or (len(positional) < len(expected) and not var):
        got = ", ".join(p.name for p in params)
        raise StepConfigError(
            f"{_article(step_type.value)} {step_type.value} step's handler takes ({', '.join(expected)}), "
            f"but it is handler({got})",
            field="handler",
            hint=f"define async def {form}",
        )
    fn = handler if inspect.isroutine(handler) else type(handler).__call__
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(fn)


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _str(cfg: Mapping[str, Any], key: str) -> str:
    value = cfg.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise StepConfigError(f"'{camel(key)}' must be a string", field=camel(key))
    return value


def _str_list(cfg: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = cfg.get(key) or []
    if isinstance(value, str):
        raise StepConfigError(f"'{camel(key)}' must be a list of strings, not a string", field=camel(key),
                              hint=f"write [{value!r}]")
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise StepConfigError(f"'{camel(key)}' must be a list of non-empty strings", field=camel(key))
    return tuple(value)


def _emits(cfg: Mapping[str, Any], key: str) -> tuple[EmitSpec, ...]:
    value = cfg.get(key) or []
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise StepConfigError(f"'{camel(key)}' must be a list", field=camel(key))
    out: list[EmitSpec] = []
    for i, item in enumerate(value):
        where = f"{camel(key)}[{i}]"
        if isinstance(item, str) and item:
            out.append(EmitSpec(topic=item))
            continue
        if not isinstance(item, Mapping):
            raise StepConfigError(f"'{where}' must be a topic string or {{topic, label?, conditional?, schema?}}",
                                  field=where)
        e = _normalise_keys(item, _EMIT_KEYS, set(), where)
        topic = e.get("topic")
        if not isinstance(topic, str) or not topic:
            raise StepConfigError(f"'{where}.topic' must be a non-empty string", field=f"{where}.topic")
        label = e.get("label")
        out.append(EmitSpec(topic=topic, label=str(label) if label is not None else None,
                            conditional=_bool(e.get("conditional", False), f"{where}.conditional"),
                            schema=to_schema(e.get("schema"), f"{where}.schema")))
    return tuple(out)


def _number(value: Any, where: str, *, minimum: float, integer: bool = False) -> Any:
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or value < minimum:
        kind = "an integer" if integer else "a number"
        raise StepConfigError(f"'{where}' must be {kind} >= {minimum:g}, got {value!r}", field=where)
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise StepConfigError(f"'{where}' must be true or false, got {value!r}", field=where)
    return value


def _values(kind: type[enum.Enum]) -> tuple[str, ...]:
    return tuple(str(m.value) for m in kind)


def _choice(value: Any, where: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        hint = did_you_mean(str(value), list(choices)) or f"one of {', '.join(choices)}"
        raise StepConfigError(f"'{where}' must be one of {', '.join(choices)}, got {value!r}", field=where,
                              hint=hint)
    return str(value)


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise StepConfigError(f"'{where}' must be a table/dict", field=where)
    return value


def _infrastructure(value: Any, *, cron: bool) -> dict[str, Any]:
    infra = _normalise_keys(_mapping(value, "infrastructure"),
                            _INFRA_KEYS if cron else _INFRA_KEYS - {"cron"}, set(), "infrastructure")
    out: dict[str, Any] = {}
    handler = _normalise_keys(_mapping(infra.get("handler"), "infrastructure.handler"), _HANDLER_KEYS,
                              _HANDLER_IGNORED, "infrastructure.handler")
    if "timeout" in handler:
        t = handler["timeout"]
        out["timeout_s"] = None if t is None else float(_number(t, "infrastructure.handler.timeout", minimum=0.001))
    q = _normalise_keys(_mapping(infra.get("queue"), "infrastructure.queue"), _QUEUE_KEYS, set(),
                        "infrastructure.queue")
    w = "infrastructure.queue"
    b = _normalise_keys(_mapping(q.get("backoff"), f"{w}.backoff"), _BACKOFF_KEYS, set(), f"{w}.backoff")
    backoff = BackoffSpec(
        type=BackoffType(_choice(b.get("type", "exponential"), f"{w}.backoff.type", _values(BackoffType))),
        delay_s=float(_number(b.get("delay", 1.0), f"{w}.backoff.delay", minimum=0)),
        max_delay_s=float(_number(b.get("max_delay", 300.0), f"{w}.backoff.maxDelay", minimum=0)),
        jitter=_bool(b.get("jitter", True), f"{w}.backoff.jitter"),
    )
    out["queue"] = QueueSpec(
        type=QueueType(_choice(q.get("type", "standard"), f"{w}.type", _values(QueueType))),
        max_retries=int(_number(q.get("max_retries", 3), f"{w}.maxRetries", minimum=0, integer=True)),
        visibility_timeout_s=float(_number(q.get("visibility_timeout", 60.0), f"{w}.visibilityTimeout",
                                           minimum=0.1)),
        delay_s=float(_number(q.get("delay_seconds", 0), f"{w}.delaySeconds", minimum=0)),
        concurrency=int(_number(q.get("concurrency", 20), f"{w}.concurrency", minimum=1, integer=True)),
        backoff=backoff,
        dedup_window_s=(None if q.get("dedup_window") is None
                        else float(_number(q["dedup_window"], f"{w}.dedupWindow", minimum=0.001))),
    )
    if cron:
        c = _normalise_keys(_mapping(infra.get("cron"), "infrastructure.cron"), _CRON_POLICY_KEYS, set(),
                            "infrastructure.cron")
        out["cron_policy"] = CronPolicy(
            overlap=CronOverlap(_choice(c.get("overlap", "skip"), "infrastructure.cron.overlap", _values(CronOverlap))),
            missed=CronMissed(_choice(c.get("missed", "skip"), "infrastructure.cron.missed", _values(CronMissed))),
        )
    return out


_COLON_PARAM = re.compile(r":([A-Za-z_][A-Za-z0-9_]*)")


def normalise_path(path: str) -> str:
    """``/jobs/:id`` -> ``/jobs/{id}`` (both spellings are accepted)."""
    return _COLON_PARAM.sub(r"{\1}", path)


def _api(cfg: Mapping[str, Any]) -> ApiSpec:
    path = cfg.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise StepConfigError("an api step needs 'path' starting with '/'", field="path", hint="e.g. '/jobs/:id'")
    method = cfg.get("method", "GET")
    if not isinstance(method, str):
        raise StepConfigError("'method' must be a string", field="method")
    method = _choice(method.upper(), "method", HTTP_METHODS)
    responses: dict[int, Schema] = {}
    for status, schema in _mapping(cfg.get("response_schema"), "responseSchema").items():
        try:
            code = int(status)
        except (TypeError, ValueError):
            raise StepConfigError(f"responseSchema key {status!r} is not an HTTP status",
                                  field="responseSchema") from None
        s = to_schema(schema, f"responseSchema.{status}")
        if s is not None:
            responses[code] = s
    qp = cfg.get("query_params") or []
    if not isinstance(qp, list | tuple):
        raise StepConfigError("'queryParams' must be a list", field="queryParams")
    params: list[Mapping[str, Any]] = []
    for i, p in enumerate(qp):
        if isinstance(p, str):
            params.append({"name": p})
        elif isinstance(p, Mapping) and isinstance(p.get("name"), str):
            params.append(dict(p))
        else:
            raise StepConfigError(f"'queryParams[{i}]' must be a name or {{name, description?}}",
                                  field=f"queryParams[{i}]")
    mw = cfg.get("middleware") or []
    if not isinstance(mw, list | tuple):
        raise StepConfigError("'middleware' must be a list of async functions (req, ctx, next)", field="middleware")
    for i, m in enumerate(mw):
        if not inspect.iscoroutinefunction(m):
            name = getattr(m, "__name__", repr(m))
            raise StepConfigError(f"middleware[{i}] ({name}) must be an async function (req, ctx, next)",
                                  field=f"middleware[{i}]", hint=f"define it as: async def {name}(req, ctx, next)")
    return ApiSpec(path=normalise_path(path), method=method, body_schema=to_schema(cfg.get("body_schema"),
                   "bodySchema"), response_schema=responses, query_params=tuple(params), middleware=tuple(mw))
