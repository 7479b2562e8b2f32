"""``motia-py emit``: enqueue events as if they came from outside."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .cli_common import EXIT_USAGE, backend_option, fail, handle_errors, on_backend, project_option, settings_from
from .errors import InputValidationError, MotiaError
from .handle_codec import delay_until

if TYPE_CHECKING:
    from .backends.base import Backend
    from .discovery import Project


@click.command("emit")
@click.argument("topic")
@click.option("--data", default=None, help="The event data as JSON.")
@click.option("--file", "file", default=None, help="One event per JSON line of FILE ('-' = stdin).")
@click.option("--group", "group", default=None, help="messageGroupId (FIFO steps).")
@click.option("--delay", default=None, type=float, help="Seconds before delivery.")
@click.option("--at", "at", default=None, metavar="TIME",
              help="Deliver at this ISO 8601 time, with its offset (2030-01-01T09:00:00+00:00).")
@click.option("--key", default=None, help="Idempotency key: an event of TOPIC already emitted with it in the dedup "
                                          "window is not emitted again (its id is printed).")
@click.option("--dedup-window", "dedup_window", default=None, type=float, metavar="S",
              help="Seconds the key is held (default: the subscribers' dedupWindow, or 24 h).")
@click.option("--priority", default=None, type=click.IntRange(-1000, 1000),
              help="Claimed before lower priorities (-1000 to 1000; default: each step's own).")
@click.option("--no-check", "no_check", is_flag=True,
              help="Enqueue data that fails a subscriber's input schema (it will be dead-lettered).")
@backend_option
@project_option
@handle_errors
def emit(topic: str, data: str | None, file: str | None, group: str | None, delay: float | None, at: str | None,
         key: str | None, dedup_window: float | None, priority: int | None, no_check: bool, backend_url: str | None,
         project: Path) -> None:
    """Enqueue an event on TOPIC as if it came from outside; print its event id (also its trace id).

    The data must pass the input schema of every step subscribed to TOPIC (else exit 1, naming the step
    and the field), unless --no-check.

    \b
    Examples:
      motia-py emit job.enqueued --data '{"jobId": "j1"}' --key j1
      motia-py emit job.enqueued --file jobs.jsonl
    """
    from .router import Router
    from .runtime import load_project, require_valid

    if (data is None) == (file is None):
        fail("give exactly one of --data JSON or --file F", EXIT_USAGE)
    if file is not None and (key is not None or dedup_window is not None):
        fail("--key and --dedup-window go with --data (one event), not --file", EXIT_USAGE)
    when = _parse_at(at) if at is not None else None
    if when is not None and delay is not None:
        fail("give --delay or --at, not both", EXIT_USAGE)
    settings = settings_from(project, backend_url=backend_url)
    router_project, findings = load_project(settings)
    require_valid(router_project, findings)  # a broken subscriber here would silently miss its events

    async def go(backend: Backend) -> None:
        router = Router(router_project, backend)
        router.check_external_topic(topic)
        if data is not None:
            value = _parse_data(data)
            if not no_check:
                _check_input(router_project, topic, value, "--data")
            click.echo(await router.emit(topic, value, message_group_id=group, delay_s=delay or 0.0,
                                         at=when, key=key, dedup_window_s=dedup_window, priority=priority))
            return
        progress = _Progress(enabled=sys.stderr.isatty())
        due_in = delay_until(when, time.time()) if when is not None else delay or 0.0
        for batch in _batches(_iter_json_lines(file or "-"), EMIT_BATCH):  # constant memory, in file order
            if not no_check:
                for n, value in enumerate(batch, progress.count + 1):
                    _check_input(router_project, topic, value, f"event {n}")
            ids = await router.emit_many(topic, batch, message_group_id=group, delay_s=due_in, check=False,
                                         priority=priority)
            click.echo("\n".join(ids))
            progress.add(len(ids))
        progress.done()

    on_backend(settings, go)


def _check_input(project: Project, topic: str, value: Any, what: str) -> None:
    """Refuse data that a subscriber's input schema rejects (it could only be dead-lettered).

    Raises:
        InputValidationError: naming the step and each bad field.
    """
    for spec in project.steps:
        if topic in spec.subscribes and spec.input is not None:
            try:
                spec.input.validate(value)
            except InputValidationError as exc:
                fields = "; ".join(f"{_where(f.get('loc'))}: {f.get('msg')}" for f in exc.fields) or str(exc)
                raise InputValidationError(f"{what} fails the input of step '{spec.name}': {fields} "
                                           "(--no-check enqueues it anyway)", exc.fields) from exc


def _where(loc: object) -> str:
    return ".".join(str(p) for p in loc) or "(root)" if isinstance(loc, list | tuple) else "(root)"


EMIT_BATCH = 1000
"""Events per transaction for ``emit --file``."""


def _batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Progress:
    """``emitted N events (R/s)`` on one updating stderr line, on a terminal only."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.count = 0
        self.started = time.monotonic()
        self._shown = self.started

    def add(self, n: int) -> None:
        self.count += n
        now = time.monotonic()
        if self.enabled and now - self._shown >= 0.25:
            self._shown = now
            rate = self.count / max(now - self.started, 1e-9)
            click.echo(f"\remitted {self.count:,} events ({rate:,.0f}/s)", err=True, nl=False)

    def done(self) -> None:
        if self.enabled and self.count:
            click.echo(f"\remitted {self.count:,} events", err=True)


def _parse_at(value: str) -> datetime:
    """``--at``: an ISO 8601 time with its UTC offset (``Z`` accepted); a usage error otherwise."""
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        fail(f"--at {value!r} is not an ISO 8601 time such as 2030-01-01T09:00:00+00:00", EXIT_USAGE)
    if when.tzinfo is None:
        fail(f"--at {value!r} has no UTC offset: write it as {value}+00:00 (or your offset)", EXIT_USAGE)
    return when


def _parse_data(data: str) -> Any:
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise MotiaError(f"--data is not JSON: {exc.msg}") from exc


def _iter_json_lines(file: Path | str) -> Iterator[Any]:
    """Every JSON document of ``file``, one per non-blank line (``-`` reads stdin), read lazily.

    Raises:
        MotiaError: the file cannot be read, or a line is not JSON (with its line number).
    """
    try:
        stream = sys.stdin if str(file) == "-" else open(file, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise MotiaError(f"cannot read {file}: {exc.strerror or exc}") from exc
    try:
        for n, line in enumerate(stream, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise MotiaError(f"{file}:{n}: not JSON: {exc.msg}") from exc
    finally:
        if stream is not sys.stdin:
            stream.close()
