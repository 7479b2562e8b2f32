"""The frozen :class:`StepSpec` the runtime uses, and the closed vocabularies of step configs.

:mod:`motia_py.config` builds these from what users write; nothing here reads a config.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from msgspec import Struct, field

from .cron import CronSchedule
from .flow_control import FlowSpec
from .query import QueryParam
from .schema import Schema
from .state_watch import StateWatch


class StepType(str, enum.Enum):
    """The kinds of step (``state``: runs when watched state changes, see :mod:`.state_watch`)."""

    EVENT = "event"
    CRON = "cron"
    API = "api"
    NOOP = "noop"
    STATE = "state"


QUEUED_TYPES = (StepType.EVENT, StepType.CRON, StepType.STATE)
"""The step types that consume a queue (workers claim their deliveries)."""


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


class EmitSpec(Struct, frozen=True):
    """One declared emit."""

    topic: str
    label: str | None = None
    conditional: bool = False
    schema: Schema | None = None


class BackoffSpec(Struct, frozen=True):
    """Retry delay policy: ``min(max_delay, delay * 2**(attempt-1))``, optionally with full jitter."""

    type: BackoffType = BackoffType.EXPONENTIAL
    delay_s: float = 1.0
    max_delay_s: float = 300.0
    jitter: bool = True


class QueueSpec(Struct, frozen=True):
    """Delivery settings of one subscribing step."""

    type: QueueType = QueueType.STANDARD
    max_retries: int = 3
    visibility_timeout_s: float = 60.0
    delay_s: float = 0.0
    concurrency: int = 20
    backoff: BackoffSpec = field(default_factory=BackoffSpec)
    dedup_window_s: float | None = None  # idempotency keys of the step's topics are held this long
    flow: FlowSpec = field(default_factory=FlowSpec)  # fleet-wide limits and default priority (flow_control)

    @property
    def fifo(self) -> bool:
        """True when delivery is ordered per ``messageGroupId``."""
        return self.type is QueueType.FIFO


class CronPolicy(Struct, frozen=True):
    """What a cron step does on overlapping runs and on ticks missed while no worker ran."""

    overlap: CronOverlap = CronOverlap.SKIP
    missed: CronMissed = CronMissed.SKIP


class ApiSpec(Struct, frozen=True):
    """The HTTP side of an API step."""

    path: str
    method: str
    body_schema: Schema | None = None
    response_schema: Mapping[int, Schema] = field(default_factory=dict)
    query_params: tuple[QueryParam, ...] = ()
    middleware: tuple[Callable[..., Any], ...] = ()
    raw_body: bool = False  # Motia 1.0: a body whose content type is not JSON reaches the handler unparsed


class TriggerOrigin(Struct, frozen=True):
    """Where a step of the Motia 1.0 format came from: one trigger of a step file's ``triggers``.

    A 1.0 step with several triggers becomes one :class:`StepSpec` per trigger, all calling the same
    handler; each is named ``<step>#<kind>`` (``#<kind><n>`` when the step has several of that kind),
    and a step with a single trigger keeps its own name.
    """

    step: str  # the step's own name (config["name"])
    kind: str  # "queue" | "http" | "cron" | "state" | "stream"
    index: int  # position in the step's triggers
    count: int  # how many triggers the step has


class StepSpec(Struct, frozen=True, eq=False):  # identity equality: specs hold dicts and callables
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
    watch: StateWatch | None = None  # state steps only
    timeout_s: float | None = 300.0
    queue: QueueSpec = field(default_factory=QueueSpec)
    cron_policy: CronPolicy = field(default_factory=CronPolicy)
    is_async: bool = True
    line: int | None = None
    transactional: bool | None = None  # None: the project's default ([project] transactional)
    origin: TriggerOrigin | None = None  # set for steps of the Motia 1.0 format (``triggers``)

    @property
    def display_name(self) -> str:
        """The name users gave the step (a Motia 1.0 step's own name, without its trigger suffix)."""
        return self.origin.step if self.origin is not None else self.name

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
