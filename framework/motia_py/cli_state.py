"""``motia-py state get|list|set|delete``: read and change state on the configured backend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .cli_common import backend_option, echo_json, fail, handle_errors, on_backend, project_option, settings_from
from .errors import MotiaError

if TYPE_CHECKING:
    from .backends.base import Backend


@click.group("state")
def state() -> None:
    """Read and change state (values are JSON)."""


@state.command("get")
@click.argument("namespace")
@click.argument("group")
@click.argument("key")
@backend_option
@project_option
@handle_errors
def state_get(namespace: str, group: str, key: str, backend_url: str | None, project: Path) -> None:
    """Print the value at NAMESPACE GROUP KEY as JSON (exit 1 when absent)."""
    raw = on_backend(settings_from(project, backend_url=backend_url), lambda b: b.state_get(namespace, group, key))
    if raw is None:
        fail(f"no value at {namespace} / {group} / {key}")
    echo_json(json.loads(raw))


@state.command("list")
@click.argument("namespace")
@click.argument("group", required=False)
@backend_option
@project_option
@handle_errors
def state_list(namespace: str, group: str | None, backend_url: str | None, project: Path) -> None:
    """Print {key: value} of a GROUP, or {group: {key: value}} of a whole NAMESPACE."""

    async def items(b: Backend, g: str) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in (await b.state_items(namespace, g)).items()}

    async def go(b: Backend) -> dict[str, Any]:
        if group is not None:
            return await items(b, group)
        return {g: await items(b, g) for g in await b.state_groups(namespace)}

    echo_json(on_backend(settings_from(project, backend_url=backend_url), go))


@state.command("set")
@click.argument("namespace")
@click.argument("group")
@click.argument("key")
@click.argument("value")
@backend_option
@project_option
@handle_errors
def state_set(namespace: str, group: str, key: str, value: str, backend_url: str | None,
              project: Path) -> None:
    """Store VALUE (JSON) at NAMESPACE GROUP KEY."""
    from .state import dumps

    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise MotiaError(f"VALUE is not JSON: {exc.msg} (quote strings: '\"text\"')") from exc
    on_backend(settings_from(project, backend_url=backend_url),
               lambda b: b.state_set(namespace, group, key, dumps(parsed)))


@state.command("delete")
@click.argument("namespace")
@click.argument("group")
@click.argument("key")
@backend_option
@project_option
@handle_errors
def state_delete(namespace: str, group: str, key: str, backend_url: str | None, project: Path) -> None:
    """Delete NAMESPACE GROUP KEY (exit 1 when absent)."""
    if not on_backend(settings_from(project, backend_url=backend_url),
                      lambda b: b.state_delete(namespace, group, key)):
        fail(f"no value at {namespace} / {group} / {key}")
