"""``motia-py cron list|run``: cron steps, their schedules and last runs, and firing one by hand."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .cli_common import backend_option, echo_json, fail, handle_errors, on_backend, project_option, settings_from
from .meta_keys import cron_last
from .suggest import did_you_mean

if TYPE_CHECKING:
    from .backends.base import Backend


@click.group("cron")
def cron() -> None:
    """Cron steps: list them, or fire one now."""


@cron.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array on stdout.")
@backend_option
@project_option
@handle_errors
def cron_list(as_json: bool, backend_url: str | None, project: Path) -> None:
    """Each cron step: expression in words, next fire time, last run and its outcome."""
    from .cron import describe, next_fire
    from .discovery import discover

    settings = settings_from(project, backend_url=backend_url)
    proj = discover(settings)
    crons = [(s, s.cron) for s in proj.steps if s.cron is not None]

    async def go(b: Backend) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        rows = []
        for s, schedule in crons:
            raw = await b.meta_get(cron_last(s.name))
            rows.append({"name": s.name, "cron": schedule.expression, "timezone": schedule.timezone,
                         "every": describe(schedule), "next": next_fire(schedule, now).isoformat(),
                         "overlap": s.cron_policy.overlap.value, "missed": s.cron_policy.missed.value,
                         "last_run": json.loads(raw) if raw else None})
        return rows

    rows = on_backend(settings, go)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no cron steps", err=True)
    for r in rows:
        last = r["last_run"]
        last_s = f"last {last['scheduled_at']} {last['outcome']}" if last else "never ran"
        click.echo(f"{r['name']}  '{r['cron']}' ({r['every']})  next {r['next']}  {last_s}")


@cron.command("run")
@click.argument("name")
@backend_option
@project_option
@handle_errors
def cron_run(name: str, backend_url: str | None, project: Path) -> None:
    """Fire cron step NAME now, through its queue (a running worker handles it); print the trace id."""
    from .discovery import discover
    from .router import Router

    settings = settings_from(project, backend_url=backend_url)
    proj = discover(settings)
    spec = proj.step(name)
    if spec is None or spec.cron is None:
        crons = [s.name for s in proj.steps if s.cron is not None]
        hint = did_you_mean(name, crons)
        fail(f"no cron step '{name}'" + (f"; {hint}" if hint else f" (cron steps: {', '.join(crons) or 'none'})"))

    async def go(b: Backend) -> str:
        return await Router(proj, b).fire_cron(name, datetime.now(UTC))

    click.echo(on_backend(settings, go))
