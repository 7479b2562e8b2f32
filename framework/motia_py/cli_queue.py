"""``motia-py queue``: each step's queue depth on the configured backend (ready, scheduled, running,
dead, how long the oldest ready event has waited, and how many ready events wait for a flow-control limit,
per limit)."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .cli_common import backend_option, echo_json, handle_errors, project_option, run_async, settings_from
from .errors import MotiaError

if TYPE_CHECKING:
    from .backends.base import Backend, FlowControl, StepQueueStats

_COLUMNS = ("step", "ready", "scheduled", "running", "dead", "oldest ready", "held by")


def queue_rows(per_step: dict[str, StepQueueStats], now: float, steps: list[str] | None = None
               ) -> list[dict[str, Any]]:
    """One row per step (the project's steps, then any other step the backend still holds)."""
    names = list(steps or [])
    names += sorted(set(per_step) - set(names))
    rows = []
    for name in names:
        s = per_step.get(name)
        oldest = None if s is None or s.oldest_ready_at is None else max(0.0, now - s.oldest_ready_at)
        rows.append({"step": name, "ready": s.ready if s else 0, "scheduled": s.delayed if s else 0,
                     "running": s.leased if s else 0, "dead": s.dead if s else 0,
                     "oldest_ready_age_s": None if oldest is None else round(oldest, 3),
                     "held_by": dict(s.throttled) if s else {}})
    return rows


def render_table(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned text table."""
    cells = [[str(r["step"]), str(r["ready"]), str(r["scheduled"]), str(r["running"]), str(r["dead"]),
              "-" if r["oldest_ready_age_s"] is None else _age(r["oldest_ready_age_s"]),
              " ".join(f"{n} {limit}" for limit, n in r["held_by"].items()) or "-"] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(_COLUMNS)]
    line = "  ".join(h.upper().ljust(w) if i == 0 else h.upper().rjust(w) for i, (h, w) in
                     enumerate(zip(_COLUMNS, widths, strict=True)))
    out = [line]
    for c in cells:
        out.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(c, widths,
                                                                                                  strict=True))))
    return "\n".join(out)


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _project_steps(project: Path, backend_url: str | None) -> tuple[list[str], dict[str, FlowControl]]:
    """The project's event and cron steps and the flow control of those that have one, when the project
    can be discovered (else none)."""
    from .discovery import discover

    try:
        found = discover(settings_from(project, backend_url=backend_url))
    except MotiaError:  # the queue view must work even for a project that no longer loads
        return [], {}
    steps = [s for s in found.steps if s.type.value in ("event", "cron")]
    return [s.name for s in steps], {s.name: c for s in steps if (c := s.queue.flow.control) is not None}


@click.command("queue")
@click.option("--json", "as_json", is_flag=True, help="One JSON array on stdout.")
@click.option("--watch", is_flag=True, help="Refresh until Ctrl-C.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between refreshes with --watch.")
@backend_option
@project_option
@handle_errors
def queue(as_json: bool, watch: bool, interval: float, backend_url: str | None, project: Path) -> None:
    """Show each step's queue: ready, scheduled, running (leased) and dead events, the age of the oldest
    ready one, and how many ready ones are held back by a flow-control limit (rateLimit, globalConcurrency,
    concurrencyKey).

    \b
    Example:
      motia-py queue --watch
    """
    from .runtime import backend_for

    settings = settings_from(project, backend_url=backend_url)
    names, controls = _project_steps(project, backend_url)

    async def go() -> None:
        backend: Backend = backend_for(settings)
        await backend.open()
        try:
            while True:
                rows = queue_rows(await backend.step_stats(controls), time.time(), names)
                if as_json:
                    echo_json(rows)
                else:
                    if watch and sys.stdout.isatty():
                        click.clear()
                    click.echo(render_table(rows))
                if not watch:
                    return
                await asyncio.sleep(interval)
        finally:
            await backend.close()

    run_async(go())
