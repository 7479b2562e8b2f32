"""Prometheus metrics of a running project, served at ``/metrics`` in the text exposition format.

Each app keeps its own :class:`prometheus_client.CollectorRegistry` (never the library's global one, so
two apps in one process, or a host application's own metrics, never collide). Run metrics are counted
by a run observer (a few dictionary lookups and lock-protected increments per run); queue gauges are read
from the backend's ``stats()`` when Prometheus scrapes, never on the hot path.

Access: ``motia-py dev`` serves ``/metrics`` to anyone who reaches the dev server (it binds 127.0.0.1 by
default). ``motia-py start`` serves it only with ``[server] metrics = true``, and then answers loopback
clients only, unless ``[server] metrics_token`` is set: every scrape must then carry
``Authorization: Bearer <token>`` (Prometheus' ``authorization`` scrape setting), from any address.
"""

from __future__ import annotations

import hmac
import ipaddress
import itertools
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .backends.base import QueueStats
from .config import QUEUED_TYPES
from .errors import BackendError
from .http import ApiApp
from .logs import framework_logger
from .runs import Outcome, RunRecord
from .runtime import Runtime
from .settings import Settings

PATH = "/metrics"
UNMATCHED = "<unmatched>"  # the route label of requests no API step answers (bounded label values)
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
QUEUE_STATES = ("ready", "delayed", "leased", "dead")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_NOT_RUN = frozenset({Outcome.SKIPPED, Outcome.DEFERRED})  # cron ticks that never called the handler


class _Histograms:
    """Bucket counts and sums per label set: a bisect and two additions per observation, no lock (every
    observation happens on the event loop's thread; scrapes copy before reading)."""

    __slots__ = ("bounds", "rows")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.rows: dict[tuple[str, ...], list[float]] = {}  # per bucket (and +Inf), then the sum

    def observe(self, labels: tuple[str, ...], amount: float) -> None:
        row = self.rows.get(labels)
        if row is None:
            row = self.rows[labels] = [0.0] * (len(self.bounds) + 2)
        row[bisect_left(self.bounds, amount)] += 1  # the first bound >= amount: Prometheus' "le"
        row[-1] += amount

    def family(self, name: str, doc: str, labels: list[str]) -> HistogramMetricFamily:
        out = HistogramMetricFamily(name, doc, labels=labels)
        names = [*(repr(float(b)) for b in self.bounds), "+Inf"]
        for values, row in sorted(list(self.rows.items())):
            cumulative = list(itertools.accumulate(row[:-1]))
            out.add_metric(list(values), list(zip(names, cumulative, strict=True)), row[-1])
        return out


def _counter(name: str, doc: str, labels: list[str], counts: Iterable[tuple[tuple[str, ...], int]]
             ) -> CounterMetricFamily:
    out = CounterMetricFamily(name, doc, labels=labels)
    for values, n in sorted(counts):
        out.add_metric(list(values), n)
    return out


class Metrics:
    """The metrics of one running project, in a registry of its own.

    Attach it to a runtime (and the HTTP app serving its API steps) with :meth:`attach`; read the text
    exposition with :meth:`render`. :func:`install_metrics` does both and serves ``/metrics``.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.runtime: Runtime | None = None
        self.app: ApiApp | None = None
        self._cells: dict[tuple[str, str, str], list[Any]] = {}
        self.durations = _Histograms(DURATION_BUCKETS)
        self.cron_lag = _Histograms(LAG_BUCKETS)
        self.http: dict[tuple[str, str, str], int] = {}
        self.stats: QueueStats | None = None  # the backend's counts at the last scrape (None: unreadable)
        self.steps: list[str] = []
        self.registry.register(self)
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...

    def attach(self, runtime: Runtime, app: ApiApp | None = None) -> None:
        """Count the runs of ``runtime`` (and the API requests ``app`` answers) from now on."""
        self.runtime = runtime
        runtime.router.observers.append(self.observe)
        if app is not None:
            self.app = app
            app.on_response = self.observe_http

    # -- the hot path ---------------------------------------------------------------------------------
    def observe(self, rec: RunRecord) -> None:
        """Count one finished run (a run observer; about 0.3 µs)."""
        # _value_, not .value: the property costs more than the rest of this method
        key = (rec.step, rec.kind._value_, rec.outcome._value_)
        cell = self._cells.get(key)
        if cell is None:
            cell = self._new_cell(key, rec.outcome)
        cell[0] += 1
        row = cell[1]
        if row is None:  # a cron tick that never called its handler
            return
        duration = rec.duration_s
        row[bisect_left(DURATION_BUCKETS, duration)] += 1
        row[-1] += duration
        if rec.scheduled_at is not None:
            self.cron_lag.observe((rec.step,), max(0.0, rec.started_at - rec.scheduled_at))

    def _new_cell(self, key: tuple[str, str, str], outcome: Outcome) -> list[Any]:
        """``[runs, the duration histogram row of (step, kind) or None]`` of one (step, kind, outcome)."""
        row = None
        if outcome not in _NOT_RUN:
            row = self.durations.rows.get(key[:2])
            if row is None:
                row = self.durations.rows[key[:2]] = [0.0] * (len(DURATION_BUCKETS) + 2)
        cell: list[Any] = [0, row]
        self._cells[key] = cell
        return cell

    def runs(self) -> dict[tuple[str, str, str], int]:
        """Runs counted so far per (step, kind, outcome)."""
        return {key: cell[0] for key, cell in list(self._cells.items())}

    def observe_http(self, method: str, path: str, status: int) -> None:
        """Count one API request by the route of the step that answered it (not the raw path)."""
        method = method.upper()
        spec = self.app.match(method, path)[0] if self.app is not None else None
        route = spec.api.path if spec is not None and spec.api is not None else UNMATCHED
        key = (method if method in _METHODS else "OTHER", route, str(status))
        self.http[key] = self.http.get(key, 0) + 1

    # -- scrapes --------------------------------------------------------------------------------------
    async def refresh(self) -> None:
        """Read the queue counts from the backend (``motia_backend_up`` 0 when it cannot be read).

        Per step, the backends report one number (ready + delayed + leased); the split by state and the
        dead-letter count are totals across every step.
        """
        runtime = self.runtime
        if runtime is None:
            return
        self.steps = sorted(s.name for s in runtime.project.steps if s.type in QUEUED_TYPES)
        try:
            self.stats = await runtime.backend.stats()
        except BackendError:
            self.stats = None

    async def render(self) -> bytes:
        """The current metrics in the Prometheus text format (refreshing the queue counts first)."""
        await self.refresh()
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        """Every motia metric (the registry calls this at each scrape)."""
        runs = self.runs()
        retries: dict[tuple[str, ...], int] = {}
        for (step, _, outcome), n in runs.items():
            if Outcome(outcome).retried:
                retries[(step,)] = retries.get((step,), 0) + n
        yield _counter("motia_runs", "Handler runs by step, kind (event, cron, api) and outcome",
                       ["step", "kind", "outcome"], list(runs.items()))
        yield self.durations.family("motia_handler_duration_seconds", "How long handler runs took",
                                    ["step", "kind"])
        yield _counter("motia_retries", "Failed runs whose event is delivered again after a backoff", ["step"],
                       list(retries.items()))
        yield self.cron_lag.family("motia_cron_lag_seconds", "From a cron tick's scheduled time to its run's start",
                                   ["step"])
        yield _counter("motia_http_requests", "API requests by method, route (the step's path) and status",
                       ["method", "route", "status"], list(self.http.items()))
        unrouted = self.runtime.router.unrouted if self.runtime is not None else {}
        yield _counter("motia_unrouted_events", "Events published to a topic no step subscribes to", ["topic"],
                       [((topic,), n) for topic, n in list(unrouted.items())])
        yield from self._queue_families()

    def _queue_families(self) -> Iterator[Metric]:
        stats = self.stats
        yield GaugeMetricFamily("motia_backend_up", "1 when the last scrape could read the backend's queue counts",
                                value=0 if stats is None else 1)
        depth = GaugeMetricFamily("motia_queue_depth", "Deliveries of a step that are ready, delayed or running",
                                  labels=["step"])
        states = GaugeMetricFamily("motia_queue_deliveries", "Deliveries across every step by state (ready, "
                                   "delayed, leased = running, dead = in the dead-letter queue)", labels=["state"])
        if stats is not None:
            for step in sorted(set(self.steps) | set(stats.per_step)):
                depth.add_metric([step], stats.per_step.get(step, 0))
            for state in QUEUE_STATES:
                states.add_metric([state], getattr(stats, state))
        yield depth
        yield states


def _is_local(request: Request) -> bool:
    host = request.client.host if request.client is not None else None
    if host is None:  # a Unix socket: only this machine can reach it
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost"
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


class MetricsEndpoint:
    """``GET /metrics``: the access rule (see the module docstring), then the exposition.

    Args:
        metrics: what to render.
        token: when set, every scrape must carry ``Authorization: Bearer <token>``.
        open_without_token: without a token, answer any client (dev) instead of loopback ones only.
    """

    def __init__(self, metrics: Metrics, *, token: str | None, open_without_token: bool) -> None:
        self.metrics = metrics
        self.token = token
        self.open_without_token = open_without_token

    def denied(self, request: Request) -> Response | None:
        """A 401/403 response when ``request`` may not read the metrics, else None."""
        if self.token is not None:
            auth = request.headers.get("authorization", "")
            given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
            if given and hmac.compare_digest(given.encode(), self.token.encode()):
                return None
            return JSONResponse({"error": "unauthorized", "message": "/metrics needs 'Authorization: Bearer <token>' "
                                 "([server] metrics_token)"}, status_code=401,
                                headers={"www-authenticate": 'Bearer realm="metrics"'})
        if self.open_without_token or _is_local(request):
            return None
        return JSONResponse({"error": "forbidden", "message": "/metrics answers clients on this machine only; set "
                             "[server] metrics_token (MOTIA_PY_METRICS_TOKEN) to scrape from elsewhere"},
                            status_code=403)

    async def __call__(self, request: Request) -> Response:
        """Answer one scrape."""
        refused = self.denied(request)
        if refused is not None:
            return refused
        return Response(await self.metrics.render(), media_type=CONTENT_TYPE_LATEST,
                        headers={"cache-control": "no-store"})


def install_metrics(app: ApiApp, runtime: Runtime, settings: Settings, *, dev: bool,
                    metrics: Metrics | None = None) -> Metrics | None:
    """Serve ``/metrics`` on ``app`` and count ``runtime``'s runs: always in dev, else with ``[server] metrics``.

    Args:
        app: the HTTP app serving the project's API steps.
        runtime: the runtime whose runs and queues are measured.
        settings: ``metrics`` and ``metrics_token``.
        dev: ``motia-py dev`` (on, and open to any client that reaches the server when no token is set).
        metrics: reuse this registry (an app restarted by its host's lifespan keeps its counts).

    Returns:
        The metrics, or None when they are off (or an API step of the project answers ``GET /metrics``).
    """
    if not (dev or settings.metrics):
        return None
    owner = app.match("GET", PATH)[0]
    if owner is not None:
        framework_logger().warning(f"/metrics is not served: API step '{owner.name}' answers GET {PATH}",
                                   step=owner.name)
        return None
    metrics = metrics or Metrics()
    metrics.attach(runtime, app)
    app.extra_routes[("GET", PATH)] = MetricsEndpoint(metrics, token=settings.metrics_token, open_without_token=dev)
    return metrics
