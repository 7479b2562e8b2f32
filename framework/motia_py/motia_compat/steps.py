"""Step helpers of Motia 1.0: ``step(config, handler)``, ``multi_trigger_step(config)``, the trigger and step
guards (``is_queue_trigger``, ``get_api_triggers``, ...), ``generate_step_id`` and ``schema_to_json_schema``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from ..errors import MotiaError
from .types import (
    ApiTrigger,
    CronTrigger,
    FlowContext,
    QueueTrigger,
    StateTrigger,
    Step,
    StepConfig,
    StreamTrigger,
    _call_matched,
)

StepHandler = Callable[..., Any]


@dataclass
class StepDefinition:
    """A config with its handler; a step file may export one as ``config`` (its handler is used when the
    file has no ``handler``)."""

    config: StepConfig
    handler: StepHandler


class StepBuilder:
    """``step(config).handle(handler)``."""

    def __init__(self, config: StepConfig) -> None:
        self.config = config

    def handle(self, handler: StepHandler) -> StepDefinition:
        """The step with its handler."""
        return StepDefinition(config=self.config, handler=handler)


def _config(config: StepConfig | Mapping[str, Any]) -> StepConfig:
    return config if isinstance(config, StepConfig) else StepConfig.model_validate(config)


def step(config: StepConfig | Mapping[str, Any], handler: StepHandler | None = None) -> StepDefinition | StepBuilder:
    """``step(config, handler)`` -> a definition; ``step(config)`` -> a builder (``.handle(handler)``)."""
    cfg = _config(config)
    return StepDefinition(cfg, handler) if handler is not None else StepBuilder(cfg)


_KINDS = ("queue", "http", "cron", "state", "stream")


class MultiTriggerStepBuilder:
    """``multi_trigger_step(config).on_queue(f).on_http(g).handlers()`` (or ``.handlers({"queue": f, ...})``):
    one handler that calls the function for the trigger that fired (a cron function takes only ``ctx``)."""

    def __init__(self, config: StepConfig) -> None:
        self.config = config
        self._handlers: dict[str, StepHandler] = {}

    def _on(self, kind: str, handler: StepHandler) -> MultiTriggerStepBuilder:
        self._handlers[kind] = handler
        return self

    def on_queue(self, handler: StepHandler) -> MultiTriggerStepBuilder:
        """The function for queue triggers: ``(input, ctx)``."""
        return self._on("queue", handler)

    def on_http(self, handler: StepHandler) -> MultiTriggerStepBuilder:
        """The function for HTTP triggers: ``(request, ctx)``."""
        return self._on("http", handler)

    def on_cron(self, handler: StepHandler) -> MultiTriggerStepBuilder:
        """The function for cron triggers: ``(ctx)``."""
        return self._on("cron", handler)

    def on_state(self, handler: StepHandler) -> MultiTriggerStepBuilder:
        """The function for state triggers: ``(input, ctx)``."""
        return self._on("state", handler)

    def on_stream(self, handler: StepHandler) -> MultiTriggerStepBuilder:
        """The function for stream triggers: ``(input, ctx)``."""
        return self._on("stream", handler)

    def handlers(self, handlers: Mapping[str, StepHandler] | None = None) -> StepDefinition:
        """The step, with one handler dispatching on ``ctx.trigger.type``."""
        chosen = {**self._handlers, **(handlers or {})}
        unknown = sorted(set(chosen) - set(_KINDS))
        if unknown:
            raise MotiaError(f"multi_trigger_step: unknown trigger type(s) {unknown}; use {', '.join(_KINDS)}")

        async def unified_handler(input_data: Any, ctx: FlowContext[Any]) -> Any:
            fn = chosen.get(ctx.trigger.type)
            if fn is None:
                raise MotiaError(f"no handler for a {ctx.trigger.type} trigger (handlers: {', '.join(chosen)})")
            args = (ctx,) if ctx.trigger.type == "cron" else (input_data, ctx)
            return await _call_matched(fn, args)

        return StepDefinition(config=self.config, handler=unified_handler)


def multi_trigger_step(config: StepConfig | Mapping[str, Any]) -> MultiTriggerStepBuilder:
    """A builder for a step with several triggers (see :class:`MultiTriggerStepBuilder`)."""
    return MultiTriggerStepBuilder(_config(config))


_STEP_NAMESPACE = uuid.UUID("7f1c3ff2-9b00-4d0a-bdd7-efb8bca49d4f")  # Motia's, so that ids match its tools'


def generate_step_id(path: str) -> str:
    """A stable id for the step file at ``path`` (a UUID5 of the path, as Motia computes it)."""
    return str(uuid.uuid5(_STEP_NAMESPACE, path))


def schema_to_json_schema(schema: Any) -> dict[str, Any] | None:
    """A JSON schema dict from a pydantic model class or a JSON schema dict (None otherwise)."""
    if isinstance(schema, dict):
        return schema
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema.model_json_schema()
    return None


# Guards: of one trigger, and of a step (``Step(file_path=..., config=StepConfig(...))``).


def is_api_trigger(trigger: Any) -> bool:
    """An HTTP trigger."""
    return isinstance(trigger, ApiTrigger)


def is_queue_trigger(trigger: Any) -> bool:
    """A queue trigger."""
    return isinstance(trigger, QueueTrigger)


def is_cron_trigger(trigger: Any) -> bool:
    """A cron trigger."""
    return isinstance(trigger, CronTrigger)


def is_state_trigger(trigger: Any) -> bool:
    """A state trigger."""
    return isinstance(trigger, StateTrigger)


def is_stream_trigger(trigger: Any) -> bool:
    """A stream trigger."""
    return isinstance(trigger, StreamTrigger)


def get_api_triggers(step: Step) -> list[ApiTrigger]:
    """The step's HTTP triggers."""
    return [t for t in step.config.triggers if isinstance(t, ApiTrigger)]


def get_queue_triggers(step: Step) -> list[QueueTrigger]:
    """The step's queue triggers."""
    return [t for t in step.config.triggers if isinstance(t, QueueTrigger)]


def get_cron_triggers(step: Step) -> list[CronTrigger]:
    """The step's cron triggers."""
    return [t for t in step.config.triggers if isinstance(t, CronTrigger)]


def get_state_triggers(step: Step) -> list[StateTrigger]:
    """The step's state triggers."""
    return [t for t in step.config.triggers if isinstance(t, StateTrigger)]


def get_stream_triggers(step: Step) -> list[StreamTrigger]:
    """The step's stream triggers."""
    return [t for t in step.config.triggers if isinstance(t, StreamTrigger)]


def is_api_step(step: Step) -> bool:
    """The step has an HTTP trigger."""
    return bool(get_api_triggers(step))


def is_queue_step(step: Step) -> bool:
    """The step has a queue trigger."""
    return bool(get_queue_triggers(step))


def is_cron_step(step: Step) -> bool:
    """The step has a cron trigger."""
    return bool(get_cron_triggers(step))


def is_state_step(step: Step) -> bool:
    """The step has a state trigger."""
    return bool(get_state_triggers(step))


def is_stream_step(step: Step) -> bool:
    """The step has a stream trigger."""
    return bool(get_stream_triggers(step))
