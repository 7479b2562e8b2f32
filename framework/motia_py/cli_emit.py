"""``motia-py emit``: enqueue events as if they came from outside."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .cli_common import EXIT_USAGE, backend_option, fail, handle_errors, on_backend, project_option, settings_from
from .errors import MotiaError

if TYPE_CHECKING:
    from .backends.base import Backend


@click.command("emit")
@click.argument("topic")
@click.option("--data", default=None, help="The event data as JSON.")
@click.option("--file", "file", default=None, help="One event per JSON line of FILE ('-' = stdin).")
@click.option("--group", "group", default=None, help="messageGroupId (FIFO steps).")
@click.option("--delay", default=None, type=float, help="Seconds before delivery.")
@backend_option
@project_option
@handle_errors
def emit(topic: str, data: str | None, file: str | None, group: str | None, delay: float | None,
         backend_url: str | None, project: Path) -> None:
    """Enqueue an event on TOPIC as if it came from outside; print its trace id."""
    from .router import Router
    from .runtime import load_project, require_valid

    if (data is None) == (file is None):
        fail("give exactly one of --data JSON or --file F", EXIT_USAGE)
    settings = settings_from(project, backend_url=backend_url)
    router_project, findings = load_project(settings)
    require_valid(router_project, findings)  # a broken subscriber here would silently miss its events

    async def go(backend: Backend) -> None:
        router = Router(router_project, backend)
        router.check_external_topic(topic)
        payloads = [_parse_data(data)] if data is not None else json_lines(file or "-")
        for p in payloads:
            click.echo(await router.emit(topic, p, message_group_id=group, delay_s=delay or 0.0))

    on_backend(settings, go)


def _parse_data(data: str) -> Any:
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise MotiaError(f"--data is not JSON: {exc.msg}") from exc


def json_lines(file: Path | str) -> list[Any]:
    """Every JSON document of ``file``, one per non-blank line (``-`` reads stdin).

    Raises:
        MotiaError: the file cannot be read, or a line is not JSON (with its line number).
    """
    return list(_iter_json_lines(file))


def _iter_json_lines(file: Path | str) -> Iterator[Any]:
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
