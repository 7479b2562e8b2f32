"""motia-py's own implementation of Motia 1.0's Python SDK (``from motia import ...`` in step files).

Step files written for Motia 1.0 import ``motia``; motia-py serves them this package under that name
(see :mod:`motia_py.motia_sdk` for when, and ``[project] motia_sdk`` in ``motia_py.toml``), so they run
without Motia's engine. The names are those of the SDK: trigger builders (``http``, ``queue``, ``cron``,
``state``, ``stream``), the run's helpers (``enqueue``, ``logger``, ``stateManager``, ``Stream``), the
types step files annotate with (``FlowContext``, ``ApiRequest``, ``ApiResponse``, ``StateTriggerInput``,
...), the step builders and guards. What belongs to Motia's engine client (``get_instance``,
``init_iii``, ``Motia``) exists so that imports work, and says so when called.
"""

from __future__ import annotations

from typing import Any, NoReturn

from ..errors import MotiaError
from .helpers import StateManager, Stream, enqueue, logger, state_manager, stateManager
from .steps import (
    MultiTriggerStepBuilder,
    StepBuilder,
    StepDefinition,
    generate_step_id,
    get_api_triggers,
    get_cron_triggers,
    get_queue_triggers,
    get_state_triggers,
    get_stream_triggers,
    is_api_step,
    is_api_trigger,
    is_cron_step,
    is_cron_trigger,
    is_queue_step,
    is_queue_trigger,
    is_state_step,
    is_state_trigger,
    is_stream_step,
    is_stream_trigger,
    multi_trigger_step,
    schema_to_json_schema,
    step,
)
from .triggers import api, cron, http, queue, state, stream
from .types import (
    ApiMiddleware,
    ApiRequest,
    ApiResponse,
    ApiRouteMethod,
    ApiTrigger,
    CronTrigger,
    Enqueue,
    Enqueuer,
    FlowContext,
    HandlerConfig,
    MotiaHttpArgs,
    MotiaHttpRequest,
    MotiaHttpResponse,
    QueryParam,
    QueueConfig,
    QueueTrigger,
    StateTrigger,
    StateTriggerInput,
    Step,
    StepConfig,
    StreamEvent,
    StreamTrigger,
    StreamTriggerInput,
    TriggerCondition,
    TriggerConfig,
    TriggerInfo,
    TriggerInput,
)
from .types_stream import StreamAuthInput, StreamAuthResult, StreamConfig, StreamSubscription

__version__ = "1.0.0+motia-py"
ChannelReader: Any = None
ChannelWriter: Any = None


def _engine_only(name: str) -> NoReturn:
    raise MotiaError(f"motia.{name} belongs to Motia's engine client (iii); motia-py runs the steps itself, "
                     "without the engine, so there is nothing to connect to")


def get_instance() -> NoReturn:
    """Motia's engine client: not available under motia-py (raises)."""
    _engine_only("get_instance()")


def init_iii(otel_config: dict[str, Any] | None = None) -> NoReturn:
    """Motia's engine client: not available under motia-py (raises)."""
    _engine_only("init_iii()")


def setup_step_endpoint(iii: Any) -> NoReturn:
    """Motia's engine endpoint: not available under motia-py (raises)."""
    _engine_only("setup_step_endpoint()")


class Motia:
    """Motia's runtime (registers steps with the engine): motia-py discovers and runs steps itself."""

    def __init__(self) -> None:
        _engine_only("Motia()")


__all__ = [
    "ApiMiddleware",
    "ApiRequest",
    "ApiResponse",
    "ApiRouteMethod",
    "ApiTrigger",
    "ChannelReader",
    "ChannelWriter",
    "CronTrigger",
    "Enqueue",
    "Enqueuer",
    "FlowContext",
    "HandlerConfig",
    "Motia",
    "MotiaHttpArgs",
    "MotiaHttpRequest",
    "MotiaHttpResponse",
    "MultiTriggerStepBuilder",
    "QueryParam",
    "QueueConfig",
    "QueueTrigger",
    "StateManager",
    "StateTrigger",
    "StateTriggerInput",
    "Step",
    "StepBuilder",
    "StepConfig",
    "StepDefinition",
    "Stream",
    "StreamAuthInput",
    "StreamAuthResult",
    "StreamConfig",
    "StreamEvent",
    "StreamSubscription",
    "StreamTrigger",
    "StreamTriggerInput",
    "TriggerCondition",
    "TriggerConfig",
    "TriggerInfo",
    "TriggerInput",
    "api",
    "cron",
    "enqueue",
    "generate_step_id",
    "get_api_triggers",
    "get_cron_triggers",
    "get_instance",
    "get_queue_triggers",
    "get_state_triggers",
    "get_stream_triggers",
    "http",
    "init_iii",
    "is_api_step",
    "is_api_trigger",
    "is_cron_step",
    "is_cron_trigger",
    "is_queue_step",
    "is_queue_trigger",
    "is_state_step",
    "is_state_trigger",
    "is_stream_step",
    "is_stream_trigger",
    "logger",
    "multi_trigger_step",
    "queue",
    "schema_to_json_schema",
    "setup_step_endpoint",
    "state",
    "stateManager",
    "state_manager",
    "step",
    "stream",
]
