"""``motia-py status ID``, ``motia-py cancel ID`` and ``motia-py scheduled list``: job handles from the shell.

Exit codes: 0 found (``status``), cancelled or asked to stop (``cancel``); 1 an unknown, pruned or
ambiguous id, or (``cancel``) an event that had already finished, so nothing was cancelled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .cli_common import (
    EXIT_FAIL,
    backend_option,
    echo_json,
    handle_errors,
    iso_time,
    on_backend,
    project_option,
    settings_from,
)

if TYPE_CHECKING:
    from .backends.base import Backend, ScheduledDelivery
    from .handles import Cancellation, EventStatus, StepStatus

_COLOURS = {"succeeded": "green", "running": "cyan", "retrying": "yellow", "dead": "red", "cancelled": "magenta"}


def _state(value: str) -> str:
    return click.style(f"{value:<9}", fg=_COLOURS.get(value))


def _compact(value: Any, width: int = 100) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)
    return text if len(text) <= width else text[:width - 1] + "…"


def _step_line(name: str, s: StepStatus, width: int) -> str:
    parts = [f"  {name:<{width}}", _state(s.state.value), f"attempts={s.attempts}"]
    if s.due_at is not None and s.state.value == "scheduled":
        parts.append(f"due {iso_time(s.due_at)}")
    if s.finished_at is not None:
        parts.append(f"finished {iso_time(s.finished_at)}")
    if s.cancel_requested:
        parts.append("cancel requested")
    if s.progress:
        fraction = s.progress.get("fraction")
        shown = [f"{fraction:.0%}" if isinstance(fraction, int | float) else "", s.progress.get("message") or ""]
        extra = {k: v for k, v in s.progress.items() if k not in ("fraction", "message", "at")}
        parts.append("progress " + " ".join(p for p in (*shown, _compact(extra) if extra else "") if p))
    if s.error:
        parts.append(f"error {s.error}")
    if s.result is not None:
        parts.append(f"result {_compact(s.result)}")
    return "  ".join(parts)


def render_status(status: EventStatus) -> str:
    """The text ``motia-py status`` prints: the event, then one line per subscribing step."""
    head = (f"{status.event_id}  {status.topic}  {_state(status.state.value).rstrip()}  "
            f"(emitted {iso_time(status.emitted_at)}, trace {status.trace_id})")
    width = max((len(n) for n in status.steps), default=0)
    return "\n".join([head, *(_step_line(n, s, width) for n, s in sorted(status.steps.items()))])


@click.command("status")
@click.argument("event_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout.")
@backend_option
@project_option
@handle_errors
def status(event_id: str, as_json: bool, backend_url: str | None, project: Path) -> None:
    """Show an event's status per subscribing step: state, attempts, error, progress, result.

    ID is the event id `emit` printed, or any unique prefix of it (at least 6 characters).
    Example: motia-py status 3f2a0001
    """
    from .handles import event_status

    settings = settings_from(project, backend_url=backend_url)

    async def go(b: Backend) -> EventStatus:
        return await event_status(b, event_id)

    found = on_backend(settings, go)
    if as_json:
        echo_json(found.to_json())
    else:
        click.echo(render_status(found))


@click.command("cancel")
@click.argument("event_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="The event's status afterwards, as JSON on stdout.")
@backend_option
@project_option
@handle_errors
def cancel(event_id: str, as_json: bool, backend_url: str | None, project: Path) -> None:
    """Cancel an event: deliveries not started never run, running handlers are told to stop.

    Exit 1 (and nothing changes) when the event has already finished. Example: motia-py cancel 3f2a0001
    """
    from .handles import cancel_event

    settings = settings_from(project, backend_url=backend_url)

    async def go(b: Backend) -> Cancellation:
        return await cancel_event(b, event_id)

    done = on_backend(settings, go)
    if as_json:
        echo_json(done.status.to_json())
    if done.cancelled:
        click.echo(f"cancelled {done.status.event_id} at {', '.join(done.cancelled)} (never run)", err=True)
    if done.requested:
        click.echo(f"asked {', '.join(done.requested)} to stop {done.status.event_id} (running)", err=True)
    if not done.changed:
        click.echo(click.style("error: ", fg="red", bold=True) + f"event {done.status.event_id} has already "
                   f"finished ({done.status.state.value}); nothing was cancelled", err=True)
        raise SystemExit(EXIT_FAIL)


@click.group("scheduled")
def scheduled() -> None:
    """Events scheduled for later (emitted with a delay or `at`)."""


@scheduled.command("list")
@click.option("--topic", default=None, help="Only events of this topic.")
@click.option("--limit", default=100, show_default=True, help="At most this many deliveries.")
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout.")
@backend_option
@project_option
@handle_errors
def scheduled_list(topic: str | None, limit: int, as_json: bool, backend_url: str | None, project: Path) -> None:
    """List scheduled deliveries, the earliest due first: due time, event id, topic, step.

    Example: motia-py scheduled list --topic reminder.due
    """
    settings = settings_from(project, backend_url=backend_url)

    async def go(b: Backend) -> list[ScheduledDelivery]:
        return await b.scheduled_list(topic, limit)

    rows = on_backend(settings, go)
    if as_json:
        echo_json([{"event_id": r.event_id, "step": r.step, "topic": r.topic, "trace_id": r.trace_id,
                    "due_at": r.due_at, "emitted_at": r.emitted_at, "delivery_id": r.delivery_id} for r in rows])
        return
    if not rows:
        click.echo("no scheduled events" + (f" on '{topic}'" if topic else ""), err=True)
    for r in rows:
        click.echo(f"{iso_time(r.due_at)}  {r.event_id}  {r.topic}  {r.step}")
