"""Optional OpenTelemetry export: one span per run, parented across emits by W3C trace context."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from motia_py.http import ApiApp
from motia_py.otel import Otel, detect
from motia_py.runtime import Runtime, backend_for, load_project
from motia_py.settings import load_settings

from .conftest import ProjectFactory

FILES = {
    "flows/f.toml": 'entry_topics = ["start"]\n',
    "steps/a.step.py": """
        config = {"type": "event", "name": "A", "subscribes": ["start"], "emits": ["mid"], "flows": ["f"]}
        async def handler(input, ctx):
            await ctx.emit("mid", input)
    """,
    "steps/b.step.py": """
        config = {"type": "event", "name": "B", "subscribes": ["mid"], "emits": [], "flows": ["f"],
                  "infrastructure": {"queue": {"maxRetries": 0}}}
        async def handler(input, ctx):
            if input.get("fail"):
                raise ValueError("boom")
    """,
    "steps/api.step.py": """
        config = {"type": "api", "name": "Api", "path": "/go", "method": "POST", "emits": ["start"],
                  "flows": ["f"]}
        async def handler(req, ctx):
            await ctx.emit("start", {})
            return {"status": 202, "body": {"trace": ctx.trace_id}}
    """,
}


@pytest.fixture
def exporter() -> tuple[InMemorySpanExporter, Otel]:
    exp = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    return exp, Otel(provider)


async def run(root: Path, otel: Otel, action: Any) -> Any:
    settings = load_settings(root, env={})
    project, _ = load_project(settings)
    runtime = Runtime(project, backend_for(settings), cron=False, poll_s=0.01, otel=otel)
    async with runtime:
        result = await action(runtime)
        await runtime.wait_idle(timeout_s=5)
    return result


def by_name(exp: InMemorySpanExporter) -> dict[str, Any]:
    return {s.name: s for s in exp.get_finished_spans()}


@pytest.mark.parametrize("backend", ["memory://", "sqlite:///.motia/o.db"])
async def test_each_run_is_a_span_parented_by_the_publisher(make_project: ProjectFactory, backend: str,
                                                            exporter: tuple[InMemorySpanExporter, Otel]) -> None:
    exp, otel = exporter
    root = make_project({**FILES, "motia_py.toml": f'[backend]\nurl = "{backend}"\n'})
    trace_id = await run(root, otel, lambda rt: rt.router.emit("start", {}))
    spans = by_name(exp)
    publish, a, b = spans["publish start"], spans["A process"], spans["B process"]
    assert {f"{s.context.trace_id:032x}" for s in (publish, a, b)} == {trace_id}  # our trace id is OTel's
    assert publish.parent is None and publish.kind is SpanKind.PRODUCER
    assert a.parent.span_id == publish.context.span_id and a.kind is SpanKind.CONSUMER
    assert b.parent.span_id == a.context.span_id  # through the backend: the envelope carried traceparent
    assert a.attributes["motia.outcome"] == "ok"


async def test_a_failed_run_has_an_error_status(make_project: ProjectFactory,
                                                exporter: tuple[InMemorySpanExporter, Otel]) -> None:
    exp, otel = exporter
    await run(make_project(FILES), otel, lambda rt: rt.router.emit("start", {"fail": True}))
    b = by_name(exp)["B process"]
    assert b.status.status_code is StatusCode.ERROR and b.attributes["motia.outcome"] == "dead"


async def test_an_api_request_continues_the_callers_trace(make_project: ProjectFactory,
                                                          exporter: tuple[InMemorySpanExporter, Otel]) -> None:
    exp, otel = exporter
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"

    async def call(rt: Runtime) -> Any:
        app = ApiApp(rt.router)
        return await app.handle("POST", "/go", headers={"traceparent": f"00-{caller_trace}-{caller_span}-01"},
                                raw_body=b"{}")

    response = await run(make_project(FILES), otel, call)
    assert response.status == 202 and response.body["trace"] == caller_trace
    spans = by_name(exp)
    server, a = spans["POST /go"], spans["A process"]
    assert server.kind is SpanKind.SERVER and f"{server.parent.span_id:016x}" == caller_span
    assert a.parent.span_id == server.context.span_id
    assert f"{a.context.trace_id:032x}" == caller_trace


async def test_a_callers_active_span_parents_an_external_emit(make_project: ProjectFactory,
                                                              exporter: tuple[InMemorySpanExporter, Otel]) -> None:
    exp, otel = exporter

    async def emit_in_span(rt: Runtime) -> str:
        with otel.tracer.start_as_current_span("django view") as view:
            event_id: str = await rt.router.emit("start", {})
            trace_id = f"{view.get_span_context().trace_id:032x}"
            handle = await rt.backend.handle_get(event_id)
            # the event joins the caller's trace with an id of its own (two emits in one view differ)
            assert handle is not None and handle.trace_id == trace_id and event_id != trace_id
            return trace_id

    await run(make_project(FILES), otel, emit_in_span)
    spans = by_name(exp)
    assert spans["publish start"].parent.span_id == spans["django view"].context.span_id


def test_detect_needs_a_configured_provider_unless_forced() -> None:
    assert detect("off") is None
    assert detect("auto") is None  # no provider configured in this process
    assert isinstance(detect("on"), Otel)
