"""``motia-py trace ID`` and ``motia-py trace list``: recorded handler runs, as trees and summaries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .cli_common import (
    backend_option,
    echo_json,
    fail,
    handle_errors,
    iso_time,
    on_backend,
    project_option,
    settings_from,
)

if TYPE_CHECKING:
    from .backends.base import Backend
    from .settings import Settings

_STATUS_COLOURS = {"ok": "green", "retried": "yellow", "failed": "red"}


@click.command("trace")
@click.argument("target", metavar="ID|list")
@click.option("--step", default=None, help="list: only traces that ran this step.")
@click.option("--status", type=click.Choice(["ok", "retried", "failed"]), default=None,
              help="list: only traces with this status.")
@click.option("--limit", default=20, show_default=True, help="list: how many traces.")
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout.")
@backend_option
@project_option
@handle_errors
def trace(target: str, step: str | None, status: str | None, limit: int, as_json: bool,
          backend_url: str | None, project: Path) -> None:
    """Show one trace as a tree (which event caused which step run), or `trace list` recent traces.

    ID may be any unique prefix of a trace id (at least 6 characters), such as the short id of a log line.
    """
    settings = settings_from(project, backend_url=backend_url)
    if target == "list":
        _list_traces(settings, step, status, limit, as_json)
    else:
        _show_trace(settings, target, as_json)


def _list_traces(settings: Settings, step: str | None, status: str | None, limit: int, as_json: bool) -> None:
    from .tracing import summarize

    async def go(b: Backend) -> list[dict[str, Any]]:
        out = []
        for tid in await b.traces_recent(max(limit * 10, 200)):
            summary = summarize(tid, [json.loads(r) for r in await b.traces_get(tid)])
            if (step is None or step in summary["steps"]) and (status is None or summary["status"] == status):
                out.append(summary)
            if len(out) >= limit:
                break
        return out

    rows = on_backend(settings, go)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no traces recorded", err=True)
    for r in rows:
        coloured = click.style(r["status"], fg=_STATUS_COLOURS[r["status"]])
        click.echo(f"{r['trace_id']}  {iso_time(r['started_at'])}  {coloured:<7}  "
                   f"{r['entry']}  {r['runs']} run(s) {r['duration_ms']:.1f} ms  {', '.join(r['steps'])}")


def _show_trace(settings: Settings, ref: str, as_json: bool) -> None:
    from .tracing import build_tree, find_trace, render_tree, summarize

    async def go(b: Backend) -> tuple[str, list[dict[str, Any]]]:
        return await find_trace(b, ref, settings.traces_max_count)

    trace_id, runs = on_backend(settings, go)
    if not runs:
        fail(f"no trace '{ref}' (traces are kept {settings.traces_max_age_s:g} s, "
             f"at most {settings.traces_max_count})")
    if as_json:
        echo_json({"trace_id": trace_id, "summary": summarize(trace_id, runs), "tree": build_tree(runs)})
        return
    click.echo(render_tree(runs))
