"""The Workbench page in headless Chromium: loading state, hiding cron runs, the State view's first
namespace, and edge labels that stay clear of each other. The browser machinery and the server
fixtures are those of ``test_workbench.py``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from motia_py.http import start_server
from motia_py.runtime import Runtime, backend_for, load_project
from motia_py.settings import load_settings
from motia_py.tracing import TraceSettings
from motia_py.workbench import install_workbench
from tests import test_workbench
from tests.conftest import ProjectFactory
from tests.test_workbench import FILES, REPO, Browser, Serve, _get_json

# the fixtures of test_workbench.py: a server with the Workbench, and a headless Chromium
serve, chromium, browser = test_workbench.serve, test_workbench.chromium, test_workbench.browser

TICK = """
config = {"type": "cron", "name": "Tick", "cron": "0 0 1 1 *", "emits": [], "flows": ["beat"]}

async def handler(ctx):
    ctx.logger.info("tick")
"""
# namespace "alpha" (empty) sorts before "shop" (where Consumer stores jobs)
PAGE_FILES = {**FILES, "steps/tick.step.py": TICK, "flows/beat.toml": 'state_namespace = "alpha"\n'}


async def eventually(fetch: Callable[[], Awaitable[Any]], ok: Callable[[Any], bool], timeout: float = 5.0) -> Any:
    """Poll ``fetch`` (an HTTP read of another task's work) until ``ok`` holds for its result, or fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; last value: {value!r}")
        await asyncio.sleep(0.05)


class Page:
    """Async helpers over a :class:`Browser` (whose calls block, so they run in a thread)."""

    def __init__(self, browser: Browser) -> None:
        self.b = browser

    async def call(self, method: str, **params: Any) -> Any:
        """One CDP command in the page's session."""
        return await asyncio.to_thread(self.b.call, method, session=self.b.session, **params)

    async def js(self, expr: str) -> Any:
        """Evaluate ``expr`` in the page."""
        return await asyncio.to_thread(self.b.js, expr)

    async def until(self, expr: str, what: str, timeout: float = 8.0) -> Any:
        """Poll ``expr`` until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.js(expr)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what} ({expr}); page errors: {self.b.page_errors()}")
            await asyncio.sleep(0.05)

    async def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element."""
        box = await self.until(f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
            if (!e) return null; e.scrollIntoView({{block: "center"}}); const r = e.getBoundingClientRect();
            return r.width ? {{x: r.x + r.width / 2, y: r.y + r.height / 2}} : null; }})()""", selector)
        for kind in ("mousePressed", "mouseReleased"):
            await self.call("Input.dispatchMouseEvent", type=kind, x=box["x"], y=box["y"], button="left", clickCount=1)

    async def trace_ids(self) -> list[str]:
        """The trace ids in the sidebar list, top to bottom."""
        return list(await self.js("[...document.querySelectorAll('#traces-list [data-trace-id]')]"
                                  ".map(e => e.dataset.traceId)"))


# -- the API behind the switch ------------------------------------------------------------------------

async def test_traces_leave_out_cron_ticks_when_asked(serve: Serve, make_project: ProjectFactory) -> None:
    wb = await serve(make_project(PAGE_FILES))
    tick = await wb.rt.router.fire_cron("Tick", datetime.now(UTC))
    event = (await wb.client.post("/__workbench/api/emit", json={"topic": "job.created",
                                                                  "data": {"name": "a"}})).json()["traceId"]
    every = await eventually(lambda: _get_json(wb, "/__workbench/api/traces"), lambda ts: len(ts) == 2)
    assert {t["trace_id"]: t["entry"] for t in every} == {tick: "cron:Tick", event: "job.created"}
    assert [t["trace_id"] for t in await _get_json(wb, "/__workbench/api/traces?cron=hide")] == [event]


# -- the page -------------------------------------------------------------------------------------------

@pytest.mark.timeout(300)  # a first run may apt-get install chromium
async def test_the_page_loads_hides_cron_runs_and_opens_state_with_data(
        browser: Browser, serve: Serve, make_project: ProjectFactory) -> None:
    wb = await serve(make_project(PAGE_FILES))
    page = Page(browser)
    # hold the first request for traces: until it answers, the list says it is loading
    await page.call("Fetch.enable", patterns=[{"urlPattern": "*/__workbench/api/traces*"}])
    await page.call("Page.navigate", url=f"{wb.base}/__workbench")
    paused = await asyncio.to_thread(browser.wait_event, "Fetch.requestPaused")
    assert await page.js("document.querySelector('#traces-list').textContent") == "Loading traces…"
    assert await page.js("document.querySelector('#traces-list').getAttribute('aria-busy')") == "true"
    await page.call("Fetch.continueRequest", requestId=paused["params"]["requestId"])
    await page.call("Fetch.disable")
    await page.until("document.querySelector('#traces-list').textContent === 'No traces yet. Emit an event.'",
                     "the empty list after loading")

    tick = await wb.rt.router.fire_cron("Tick", datetime.now(UTC))
    event = (await wb.client.post("/__workbench/api/emit", json={"topic": "job.created",
                                                                  "data": {"name": "b"}})).json()["traceId"]
    await page.until("document.querySelectorAll('#traces-list [data-trace-id]').length === 2", "both traces, live")
    await page.click("label.switch")
    assert await page.js("document.querySelector('#trace-hide-cron').checked") is True
    await page.until(f"!document.querySelector('[data-trace-id=\"{tick}\"]')", "the cron run hidden")
    assert await page.trace_ids() == [event]

    # the choice is remembered, and the list loaded afterwards leaves cron runs out
    await page.call("Page.reload")
    await page.until(f"!!document.querySelector('#traces-list [data-trace-id=\"{event}\"]')", "the list after reload")
    assert await page.js("document.querySelector('#trace-hide-cron').checked") is True
    assert await page.trace_ids() == [event]
    await page.click("label.switch")
    await page.until(f"!!document.querySelector('[data-trace-id=\"{tick}\"]')", "the cron run back")

    # the State view opens on "shop", which has data, not on "alpha", which comes first but is empty
    assert await page.js("[...document.querySelectorAll('#state-namespace option')].map(o => o.value)") \
        == ["alpha", "shop"]
    await page.click("#tab-state")
    await page.until("!!document.querySelector('#state-view [data-group=\"jobs\"] [data-key=\"b\"]')", "shop's jobs")
    assert await page.js("document.querySelector('#state-namespace').value") == "shop"
    # a namespace the user picks stays picked
    await page.js("(() => { const s = document.querySelector('#state-namespace'); s.value = 'alpha';"
                  " s.dispatchEvent(new Event('change')); })()")
    await page.until("document.querySelector('#state-view').textContent.includes(\"Nothing stored in 'alpha'\")",
                     "the empty namespace")
    await page.click("#tab-flows")
    await page.click("#tab-state")
    await page.until("document.querySelector('#state-view').textContent.includes(\"Nothing stored in 'alpha'\")",
                     "the user's namespace again")
    assert await page.js("document.querySelector('#state-namespace').value") == "alpha"
    assert browser.page_errors() == []


# Every label box (the rects of one edge together) against every other and every node, and its centre
# against its own edge's path, in the SVG's coordinates.
_LABEL_REPORT = """(() => {
  const svg = document.querySelector('#flow-graph svg'), boxes = new Map(), problems = [];
  for (const r of svg.querySelectorAll('rect.elabel-bg')) {
    const [x, y, w, h] = ['x', 'y', 'width', 'height'].map(a => +r.getAttribute(a)), b = boxes.get(r.dataset.edge);
    boxes.set(r.dataset.edge, b ? { x: Math.min(b.x, x), y: Math.min(b.y, y), r: Math.max(b.r, x + w),
      b: Math.max(b.b, y + h) } : { x, y, r: x + w, b: y + h });
  }
  const nodes = [...svg.querySelectorAll('.node')].map(n => { const m = n.transform.baseVal[0].matrix,
    box = n.querySelector('rect.box'); return { id: n.dataset.step, x: m.e, y: m.f, r: m.e + box.width.baseVal.value,
    b: m.f + box.height.baseVal.value }; });
  const hit = (a, b) => a.x < b.r && b.x < a.r && a.y < b.b && b.y < a.b;
  const list = [...boxes.entries()];
  list.forEach(([id, a], i) => {
    list.slice(i + 1).forEach(([other, b]) => { if (hit(a, b)) problems.push(`labels of edges ${id} and ${other}`); });
    nodes.forEach(n => { if (hit(a, n)) problems.push(`label of edge ${id} on step ${n.id}`); });
    const path = svg.querySelector(`path.edge[data-edge="${id}"]`), len = path.getTotalLength();
    const cx = (a.x + a.r) / 2, cy = (a.y + a.b) / 2;
    let best = Infinity;
    for (let k = 0; k <= 400; k++) { const p = path.getPointAtLength(len * k / 400);
      best = Math.min(best, Math.hypot(p.x - cx, p.y - cy)); }
    if (best > 1.5) problems.push(`label of edge ${id} is ${best.toFixed(1)} px off its edge`);
  });
  return { labels: boxes.size, problems };
})()"""


@pytest.mark.timeout(300)
async def test_edge_labels_of_the_example_graph_stay_clear_in_every_view(browser: Browser) -> None:
    settings = load_settings(REPO, flags={"backend_url": "memory://"}, env={})
    project, _ = load_project(settings)
    flows = sorted({f for s in project.steps for f in s.flows})
    async with Runtime(project, backend_for(settings), cron=False, poll_s=0.05,
                       traces=TraceSettings(flush_interval_s=0.05)) as rt:
        server = await start_server(rt.router, settings, dev=True, port=0)
        install_workbench(server.app, rt, settings, dev=True)
        try:
            page = Page(browser)
            await page.call("Page.navigate", url=f"http://127.0.0.1:{server.port}/__workbench")
            await page.until("!!document.querySelector('#flow-graph svg [data-step=\"JobProcessor\"]')", "the graph")
            for flow in ["", *flows]:
                # redraw the view and wait for it: the old svg element is replaced
                await page.js(f"""(() => {{ document.querySelector('#flow-graph svg').dataset.old = '1';
                    const s = document.querySelector('#flow-select'); s.value = {json.dumps(flow)};
                    s.dispatchEvent(new Event('change')); }})()""")
                await page.until("!document.querySelector('#flow-graph svg[data-old]')", f"the {flow or 'whole'} graph")
                report = await page.js(_LABEL_REPORT)
                assert report["problems"] == [], flow or "all flows"
                if not flow:
                    assert report["labels"] >= 8  # the example's step-to-step edges, each labelled
            assert browser.page_errors() == []
        finally:
            await server.stop()

