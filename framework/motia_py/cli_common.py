"""What every ``motia-py`` command shares: the ``--project`` and ``--backend`` options, settings loading,
the mapping of framework errors to exit codes, output helpers and the backend session.

The command modules (``cli_project``, ``cli_run``, ``cli_emit``, ``cli_state``, ``cli_dlq``, ``cli_cron``,
``cli_trace``) import this module; ``cli`` imports them; nothing imports ``cli``.

Exit codes: 0 success; 1 a problem was found or an operation failed (validation errors, a missing
key, an unknown topic); 2 the project cannot be read (no such directory, unparsable ``motia_py.toml``)
or the command line is wrong; 3 the backend cannot be reached; 130 interrupted.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from .errors import BackendUnavailableError, MotiaError, ProjectError, UnknownBackendError
from .settings import Settings, load_settings

if TYPE_CHECKING:
    from .backends.base import Backend

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

EXIT_OK, EXIT_FAIL, EXIT_PROJECT, EXIT_BACKEND = 0, 1, 2, 3
EXIT_USAGE = EXIT_PROJECT  # the command line is wrong: click's own usage errors exit 2 too
EXIT_INTERRUPTED = 130


def _from_root(name: str, fallback: Any) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A callback that, when the subcommand's option is not given, takes the value given before the
    subcommand (``motia-py --project DIR validate``), else ``fallback``."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None:
            return value
        root = ctx.find_root()
        given = root.params.get(name) if root is not ctx else None
        return given if given is not None else fallback

    return callback


def project_option(fn: F) -> F:
    """``--project DIR`` (default ``.``), accepted after the subcommand's name and arguments, or before
    the subcommand (``motia-py --project DIR validate``)."""
    return click.option("--project", "project", default=None, metavar="DIR",
                        type=click.Path(file_okay=False, path_type=Path), callback=_from_root("project", Path(".")),
                        help="The project directory (default: .).")(fn)


def backend_option(fn: F) -> F:
    """``--backend URL`` overriding ``[backend] url`` (also accepted before the subcommand)."""
    return click.option("--backend", "backend_url", default=None, metavar="URL",
                        callback=_from_root("backend_url", None),
                        help="Backend URL (overrides MOTIA_PY_BACKEND_URL and motia_py.toml).")(fn)


def require_project(settings: Settings) -> None:
    """Refuse a directory that is not a motia-py project (no ``motia_py.toml`` and no steps directory):
    reporting 0 steps there would hide a wrong ``--project``.

    Raises:
        ProjectError: neither exists.
    """
    if (settings.root / "motia_py.toml").exists() or settings.steps_dir.is_dir():
        return
    raise ProjectError(f"{settings.root} is not a motia-py project: it has no motia_py.toml and no "
                       f"{settings.steps_dir.name}/ directory (run it from your project, pass --project DIR, "
                       "or create one with 'motia-py create DIR')")


def settings_from(project: Path, **flags: Any) -> Settings:
    """Resolve settings once: flag > environment > file > default."""
    return load_settings(project, flags=flags)


def fail(message: str, code: int = EXIT_FAIL) -> NoReturn:
    """Print ``error: message`` to stderr and exit with ``code``."""
    click.echo(click.style("error: ", fg="red", bold=True) + message, err=True)
    sys.exit(code)


def handle_errors(fn: F) -> F:
    """Map the framework's errors to messages on stderr and stable exit codes."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ProjectError as exc:
            fail(str(exc), EXIT_PROJECT)
        except UnknownBackendError as exc:  # a settings problem (a URL scheme no backend serves), not an outage
            fail(str(exc), EXIT_PROJECT)
        except BackendUnavailableError as exc:
            fail(f"backend unavailable: {exc}", EXIT_BACKEND)
        except MotiaError as exc:
            fail(str(exc), EXIT_FAIL)
        except KeyboardInterrupt:
            sys.exit(EXIT_INTERRUPTED)

    return wrapper  # type: ignore[return-value]


def echo_json(value: Any) -> None:
    """Machine-readable output: one JSON document on stdout."""
    click.echo(json.dumps(value, indent=2, default=str, ensure_ascii=False))


def iso_time(ts: float | None) -> str | None:
    """An epoch timestamp as ISO 8601 in UTC (``None`` stays ``None``)."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a fresh event loop."""
    import asyncio  # not at import: the commands that run nothing asynchronous (validate, graph) skip it

    return asyncio.run(coro)


async def with_backend(settings: Settings, fn: Callable[[Backend], Awaitable[T]]) -> T:
    """Open the configured backend, run ``fn`` on it, and close it whatever happens.

    Raises:
        BackendUnavailableError: the backend cannot be reached.
    """
    from .runtime import backend_for

    backend = backend_for(settings)
    await backend.open()
    try:
        return await fn(backend)
    finally:
        await backend.close()


def on_backend(settings: Settings, fn: Callable[[Backend], Awaitable[T]]) -> T:
    """:func:`with_backend` on a fresh event loop: what an operator command runs."""
    return run_async(with_backend(settings, fn))
