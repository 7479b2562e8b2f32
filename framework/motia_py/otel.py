"""Optional OpenTelemetry export: each handler run is a span, and the trace follows every emit.

Enabled when ``opentelemetry`` is installed and a tracer provider is configured (by your code, or by
``opentelemetry-instrument motia-py start``), unless ``[traces] otel = false``. The W3C trace context
travels with every event (``Envelope.traceparent``), so a run's span is the child of the span that
published its event, across processes and backends, and motia-py's trace id *is* the OpenTelemetry
trace id. A caller's active span (a Django view publishing through :class:`motia_py.Client`) or an
incoming ``traceparent`` header (API steps) becomes the parent of everything that follows.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from ._version import __version__
from .backends.base import new_id

_KIND = {"consumer": "CONSUMER", "producer": "PRODUCER", "server": "SERVER", "internal": "INTERNAL"}


class Otel:
    """Spans for runs and publishes, on a given tracer provider (the global one by default)."""

    enabled = True

    def __init__(self, provider: Any = None) -> None:
        import secrets  # here, not at import: a worker without OpenTelemetry skips hmac and hashlib

        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._randbits = secrets.randbits
        self._trace = trace
        self._propagator = TraceContextTextMapPropagator()
        self.tracer = (provider or trace.get_tracer_provider()).get_tracer("motia_py", __version__)

    def _parent(self, traceparent: str | None, trace_id: str | None) -> Any:
        """The context to start a span in: the publisher's span, else the caller's, else ``trace_id``."""
        trace = self._trace
        if traceparent:
            return self._propagator.extract({"traceparent": traceparent})
        if trace_id and len(trace_id) == 32 and not trace.get_current_span().get_span_context().is_valid:
            # an event from a publisher without OpenTelemetry: keep its trace id under a remote parent
            with contextlib.suppress(ValueError):
                ctx = trace.SpanContext(trace_id=int(trace_id, 16), span_id=self._randbits(64) or 1,
                                        is_remote=True, trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))
                return trace.set_span_in_context(trace.NonRecordingSpan(ctx))
        return None  # the current context: a caller's active span, or a new trace

    @contextlib.contextmanager
    def span(self, name: str, kind: str, *, traceparent: str | None = None, trace_id: str | None = None,
             attributes: Mapping[str, Any] | None = None) -> Iterator[tuple[str, str, Any]]:
        """Run a block in a span; yields ``(trace_id_hex, traceparent, span)``.

        Exceptions are recorded on the span (status error) and re-raised.
        """
        kind_enum = getattr(self._trace.SpanKind, _KIND[kind])
        with self.tracer.start_as_current_span(name, context=self._parent(traceparent, trace_id), kind=kind_enum,
                                               attributes=dict(attributes or {}),
                                               record_exception=True, set_status_on_exception=True) as span:
            sc = span.get_span_context()
            carrier: dict[str, str] = {}
            self._propagator.inject(carrier)
            yield f"{sc.trace_id:032x}", carrier.get("traceparent", ""), span

    def in_span(self) -> bool:
        """Whether a span is active here (a publish then joins its trace instead of starting one)."""
        return bool(self._trace.get_current_span().get_span_context().is_valid)

    def mark_failed(self, span: Any, error: str) -> None:
        """Set an error status on ``span`` (for failures handled without an exception escaping)."""
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, error))

    @contextlib.contextmanager
    def delivery(self, step: str, topic: str, attempt: int, traceparent: str | None, trace_id: str
                 ) -> Iterator[DeliverySpan]:
        """The consumer span of one delivery; report its outcome with :meth:`DeliverySpan.finish`."""
        with self.span(f"{step} process", "consumer", traceparent=traceparent, trace_id=trace_id,
                       attributes={"motia.step": step, "motia.attempt": attempt,
                                   "messaging.destination.name": topic}) as (_, tp, span):
            yield DeliverySpan(self, span, tp)


class DeliverySpan:
    """The span of one delivery: ``traceparent`` for the events it emits, ``finish`` for its outcome."""

    __slots__ = ("_otel", "_span", "traceparent")

    def __init__(self, otel: Otel | None, span: Any, traceparent: str | None) -> None:
        self._otel = otel
        self._span = span
        self.traceparent = traceparent

    def finish(self, outcome: str, failed: bool) -> None:
        """Record how the run ended on the span (an error status when ``failed``)."""
        if self._otel is not None:
            self._span.set_attribute("motia.outcome", str.__str__(outcome))
            if failed:
                self._otel.mark_failed(self._span, str.__str__(outcome))

    def __enter__(self) -> DeliverySpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class _NoSpan:
    """What :meth:`NoOtel.span` yields as the span: accepts attributes and drops them."""

    __slots__ = ()

    def set_attribute(self, key: str, value: Any) -> None:
        """Drop the attribute."""


_NO_SPAN = _NoSpan()


class _NoSpanScope:
    __slots__ = ("_value",)

    def __init__(self, trace_id: str) -> None:
        self._value = (trace_id, None, _NO_SPAN)

    def __enter__(self) -> tuple[str, None, _NoSpan]:
        return self._value

    def __exit__(self, *exc: object) -> None:
        return None


class NoOtel:
    """OpenTelemetry switched off: the same calls as :class:`Otel`, doing nothing (a class-based context
    manager, so the hot path pays a few attribute lookups, not a generator)."""

    enabled = False

    def span(self, name: str, kind: str, *, traceparent: str | None = None, trace_id: str | None = None,
             attributes: Mapping[str, Any] | None = None) -> _NoSpanScope:
        """Yield ``(trace_id or a new id, None, a span that ignores attributes)``."""
        return _NoSpanScope(trace_id or new_id())

    def in_span(self) -> bool:
        """Never: without OpenTelemetry every publish from outside starts its own trace."""
        return False

    def mark_failed(self, span: Any, error: str) -> None:
        """Nothing to mark."""

    def delivery(self, step: str, topic: str, attempt: int, traceparent: str | None, trace_id: str
                 ) -> DeliverySpan:
        """A shared no-op delivery span (no allocation on the hot path)."""
        return _NO_DELIVERY_SPAN


_NO_DELIVERY_SPAN = DeliverySpan(None, None, None)
NO_OTEL = NoOtel()

Spans = Otel | NoOtel
"""What the runtime traces with: the real exporter or the no-op."""


def detect(setting: str = "auto") -> Otel | None:
    """An :class:`Otel` when enabled: ``on``; or ``auto`` with a configured provider. None otherwise."""
    if setting in ("off", "false", "0", "no"):
        return None
    if setting == "auto" and "opentelemetry" not in sys.modules and not os.environ.get("OTEL_PYTHON_TRACER_PROVIDER"):
        return None  # nothing in this process set a provider up: no need to load opentelemetry to ask
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    provider = trace.get_tracer_provider()
    configured = not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)
    if setting == "auto" and not configured:
        return None
    return Otel()
