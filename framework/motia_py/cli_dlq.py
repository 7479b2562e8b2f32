"""``motia-py dlq list|show|replay|purge``: the dead letters on the configured backend."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .cli_common import (
    EXIT_USAGE,
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


@click.group("dlq")
def dlq() -> None:
    """Dead letters: list, show, replay, purge."""


@dlq.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array on stdout.")
@click.option("--limit", default=100, show_default=True)
@backend_option
@project_option
@handle_errors
def dlq_list(as_json: bool, limit: int, backend_url: str | None, project: Path) -> None:
    """List dead letters, newest first."""
    dead = on_backend(settings_from(project, backend_url=backend_url), lambda b: b.dlq_list(limit))
    if as_json:
        echo_json([d.to_json() for d in dead])
        return
    if not dead:
        click.echo("the dead-letter queue is empty", err=True)
    for d in dead:
        click.echo(f"{d.id}  {iso_time(d.failed_at)}  {d.step}  {d.envelope.topic}  attempts={d.attempts}  {d.error}")


@dlq.command("show")
@click.argument("dead_id")
@backend_option
@project_option
@handle_errors
def dlq_show(dead_id: str, backend_url: str | None, project: Path) -> None:
    """Print one dead letter as JSON, traceback included."""
    d = on_backend(settings_from(project, backend_url=backend_url), lambda b: b.dlq_get(dead_id))
    if d is None:
        fail(f"no dead letter '{dead_id}'")
    doc = d.to_json()
    for key in ("failed_at", "first_attempt_at", "emitted_at"):  # the ISO form `dlq list` prints
        doc[key] = iso_time(doc[key])
    echo_json(doc)


@dlq.command("replay")
@click.argument("dead_id", required=False)
@click.option("--all", "all_", is_flag=True, help="Replay every dead letter.")
@backend_option
@project_option
@handle_errors
def dlq_replay(dead_id: str | None, all_: bool, backend_url: str | None, project: Path) -> None:
    """Put a dead letter (or --all) back on its queue with fresh attempts."""
    done = _each_dead_letter(project, backend_url, dead_id, all_, lambda b, i: b.dlq_replay(i))
    click.echo(f"replayed {done} dead letter(s)", err=True)
    if dead_id and not done:
        fail(f"no dead letter '{dead_id}'")


@dlq.command("purge")
@click.argument("dead_id", required=False)
@click.option("--all", "all_", is_flag=True, help="Delete every dead letter.")
@backend_option
@project_option
@handle_errors
def dlq_purge(dead_id: str | None, all_: bool, backend_url: str | None, project: Path) -> None:
    """Delete a dead letter (or --all)."""
    done = _each_dead_letter(project, backend_url, dead_id, all_, lambda b, i: b.dlq_purge(i))
    click.echo(f"purged {done} dead letter(s)", err=True)
    if dead_id and not done:
        fail(f"no dead letter '{dead_id}'")


def _each_dead_letter(project: Path, backend_url: str | None, dead_id: str | None, all_: bool,
                      action: Callable[[Backend, str], Awaitable[bool]]) -> int:
    """Apply ``action`` to the dead letter ``dead_id``, or to every one with ``all_``; return how many it
    found (exit 2 unless exactly one of the two is given)."""
    if (dead_id is None) == (not all_):
        fail("give a dead-letter ID or --all", EXIT_USAGE)

    async def go(b: Backend) -> int:
        ids = [d.id for d in await b.dlq_list(1_000_000)] if all_ else [dead_id] if dead_id else []
        done = 0
        for i in ids:
            done += bool(await action(b, i))
        return done

    return on_backend(settings_from(project, backend_url=backend_url), go)
