"""Step configs: what users write (a dict, Motia style, or a typed object) -> a frozen :class:`StepSpec`.

Keys may be camelCase (``virtualEmits``) or snake_case (``virtual_emits``). Unknown keys are errors
that suggest the nearest valid key. Keys that only matter to Motia's cloud are accepted and ignored.

The frozen specs live in :mod:`motia_py.spec`, the key vocabulary and field parsers in
:mod:`motia_py.config_keys`, the API side in :mod:`motia_py.api_config`; every name is re-exported
here, so ``from motia_py.config import StepSpec, QueueSpec, ...`` keeps working.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .api_config import normalise_path, parse_api
from .config_keys import (
    BACKOFF_KEYS,
    CRON_POLICY_KEYS,
    EMIT_KEYS,
    HANDLER_IGNORED,
    HANDLER_KEYS,
    HTTP_METHODS,
    IGNORED,
    INFRA_KEYS,
    KEYS,
    QUEUE_KEYS,
    boolean,
    camel,
    check_name,
    choice,
    count,
    duration,
    mapping,
    normalise_keys,
    shown,
    snake,
    str_list,
    text,
    values,
)
from .cron import parse_cron
from .errors import StepConfigError
from .flow_config import parse_flow
from .query import QueryParam
from .schema import to_schema
from .spec import (
    QUEUED_TYPES,
    ApiSpec,
    BackoffSpec,
    BackoffType,
    CronMissed,
    CronOverlap,
    CronPolicy,
    EmitSpec,
    QueueSpec,
    QueueType,
    StepSpec,
    StepType,
)
from .state_watch import WATCH_KEYS, parse_watch
from .suggest import did_you_mean

if TYPE_CHECKING:
    from .typed_config import ApiConfig, CronConfig, EventConfig, NoopConfig, TypedConfig

__all__ = [
    "HTTP_METHODS",
    "QUEUED_TYPES",
    "ApiConfig",
    "ApiSpec",
    "BackoffSpec",
    "BackoffType",
    "CronConfig",
    "CronMissed",
    "CronOverlap",
    "CronPolicy",
    "EmitSpec",
    "EventConfig",
    "NoopConfig",
    "QueryParam",
    "QueueSpec",
    "QueueType",
    "StepSpec",
    "StepType",
    "TypedConfig",
    "build_step",
    "camel",
    "normalise_path",
    "snake",
]


_TYPED = frozenset({"ApiConfig", "CronConfig", "EventConfig", "NoopConfig", "TypedConfig"})


def __getattr__(name: str) -> Any:
    """The typed configs live in :mod:`motia_py.typed_config` (pydantic), imported on first use."""
    if name not in _TYPED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import typed_config

    return getattr(typed_config, name)


def _is_typed(config: Any) -> bool:
    """True for an ``EventConfig``, ``CronConfig``, ... (only possible once :mod:`.typed_config` is loaded)."""
    typed = sys.modules.get(f"{__package__}.typed_config")
    return typed is not None and isinstance(config, typed._BaseConfig)


# ---------------------------------------------------------------------------------------------------
# Building a StepSpec.


def build_step(config: Any, handler: Any, file: Path, line: int | None = None) -> StepSpec:
    """Check ``config`` and ``handler`` and freeze them into a :class:`StepSpec`.

    Raises:
        StepConfigError: the first problem found, naming the field and giving a hint.
    """
    if _is_typed(config):
        raw: Mapping[str, Any] = config.to_dict()
    elif isinstance(config, Mapping):
        raw = config
    else:
        raise StepConfigError(
            f"'config' must be a dict or a typed config (EventConfig, ...), not {type(config).__name__}",
            field="config",
        )
    step_type = _step_type(raw.get("type"))
    cfg = normalise_keys(raw, KEYS[step_type], IGNORED, "")
    kw: dict[str, Any] = {
        "name": check_name(cfg.get("name"), "name"),
        "type": step_type,
        "file": file,
        "line": line,
        "description": text(cfg, "description"),
        "flows": str_list(cfg, "flows"),
        "emits": _emits(cfg, "emits"),
        "virtual_emits": _emits(cfg, "virtual_emits"),
        "virtual_subscribes": str_list(cfg, "virtual_subscribes"),
    }
    if step_type is StepType.EVENT:
        subs = str_list(cfg, "subscribes")
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
        kw["api"] = parse_api(cfg)
    elif step_type is StepType.STATE:
        watch = normalise_keys(mapping(cfg.get("watch"), "watch"), set(WATCH_KEYS), set(), "watch")
        kw["watch"] = parse_watch(watch, cfg.get("condition"))
        kw.update(_infrastructure(cfg.get("infrastructure"), cron=False))
    elif not kw["virtual_emits"] and not kw["virtual_subscribes"]:
        raise StepConfigError("a noop step needs 'virtualEmits' or 'virtualSubscribes'", field="virtualSubscribes")
    if step_type is not StepType.NOOP:
        kw.update(_transactional(cfg))
        kw["is_async"] = _check_handler(handler, step_type)
        kw["handler"] = handler
    else:
        kw["handler"] = None
    return StepSpec(**kw)


def _transactional(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``transactional``: commit the run's state writes and emits with its acknowledgement (absent: the
    project's default)."""
    if cfg.get("transactional") is None:
        return {}
    return {"transactional": boolean(cfg["transactional"], "transactional")}


def _step_type(raw_type: Any) -> StepType:
    if raw_type is None:
        raise StepConfigError("config has no 'type'", field="type", hint="one of event, cron, api, noop, state")
    try:
        return StepType(raw_type)
    except (ValueError, TypeError):
        near = did_you_mean(raw_type, [t.value for t in StepType]) if isinstance(raw_type, str) else None
        raise StepConfigError(f"unknown step type {shown(raw_type)}", field="type",
                              hint=near or "one of event, cron, api, noop, state") from None


_ARITY = {StepType.EVENT: ("input", "ctx"), StepType.CRON: ("ctx",), StepType.API: ("req", "ctx"),
          StepType.STATE: ("input", "ctx")}


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


def _emits(cfg: Mapping[str, Any], key: str) -> tuple[EmitSpec, ...]:
    value = cfg.get(key) or []
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise StepConfigError(f"'{camel(key)}' must be a list", field=camel(key))
    out: list[EmitSpec] = []
    for i, item in enumerate(value):
        where = f"{camel(key)}[{i}]"
        if isinstance(item, str) and item:
            out.append(EmitSpec(topic=check_name(item, where)))
            continue
        if not isinstance(item, Mapping):
            raise StepConfigError(f"'{where}' must be a topic string or {{topic, label?, conditional?, schema?}}",
                                  field=where)
        e = normalise_keys(item, EMIT_KEYS, set(), where)
        topic = check_name(e.get("topic"), f"{where}.topic")
        label = e.get("label")
        if label is not None and not isinstance(label, str):
            raise StepConfigError(f"'{where}.label' must be a string", field=f"{where}.label")
        out.append(EmitSpec(topic=topic, label=text(e, "label") or None,
                            conditional=boolean(e.get("conditional", False), f"{where}.conditional"),
                            schema=to_schema(e.get("schema"), f"{where}.schema")))
    return tuple(out)


def _infrastructure(value: Any, *, cron: bool) -> dict[str, Any]:
    infra = normalise_keys(mapping(value, "infrastructure"), INFRA_KEYS if cron else INFRA_KEYS - {"cron"}, set(),
                           "infrastructure")
    out: dict[str, Any] = {}
    handler = normalise_keys(mapping(infra.get("handler"), "infrastructure.handler"), HANDLER_KEYS,
                             HANDLER_IGNORED, "infrastructure.handler")
    if "timeout" in handler:
        t = handler["timeout"]
        out["timeout_s"] = None if t is None else duration(t, "infrastructure.handler.timeout", minimum=0.001)
    w = "infrastructure.queue"
    q = normalise_keys(mapping(infra.get("queue"), w), QUEUE_KEYS, set(), w)
    b = normalise_keys(mapping(q.get("backoff"), f"{w}.backoff"), BACKOFF_KEYS, set(), f"{w}.backoff")
    backoff = BackoffSpec(
        type=BackoffType(choice(b.get("type", "exponential"), f"{w}.backoff.type", values(BackoffType))),
        delay_s=duration(b.get("delay", 1.0), f"{w}.backoff.delay", minimum=0),
        max_delay_s=duration(b.get("max_delay", 300.0), f"{w}.backoff.maxDelay", minimum=0),
        jitter=boolean(b.get("jitter", True), f"{w}.backoff.jitter"),
    )
    out["queue"] = QueueSpec(
        type=QueueType(choice(q.get("type", "standard"), f"{w}.type", values(QueueType))),
        max_retries=count(q.get("max_retries", 3), f"{w}.maxRetries", minimum=0),
        visibility_timeout_s=duration(q.get("visibility_timeout", 60.0), f"{w}.visibilityTimeout", minimum=0.1),
        delay_s=duration(q.get("delay_seconds", 0), f"{w}.delaySeconds", minimum=0),
        concurrency=count(q.get("concurrency", 20), f"{w}.concurrency", minimum=1),
        backoff=backoff,
        dedup_window_s=(None if q.get("dedup_window") is None
                        else duration(q["dedup_window"], f"{w}.dedupWindow", minimum=0.001)),
        flow=parse_flow(q, w),
    )
    if cron:
        c = normalise_keys(mapping(infra.get("cron"), "infrastructure.cron"), CRON_POLICY_KEYS, set(),
                           "infrastructure.cron")
        out["cron_policy"] = CronPolicy(
            overlap=CronOverlap(choice(c.get("overlap", "skip"), "infrastructure.cron.overlap", values(CronOverlap))),
            missed=CronMissed(choice(c.get("missed", "skip"), "infrastructure.cron.missed", values(CronMissed))),
        )
    return out
