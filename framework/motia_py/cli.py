"""The ``motia-py`` command line (thin: parse arguments, call the library, map errors to exit codes).

Exit codes: 0 success; 1 a problem was found or an operation failed (validation errors, a missing
key, an unknown topic); 2 the project cannot be read (no such directory, unparsable ``motia_py.toml``)
or the command line is wrong; 3 the backend cannot be reached; 130 interrupted.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .errors import BackendUnavailableError, GraphError, MotiaError, ProjectError
from .settings import Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_FAIL, EXIT_PROJECT, EXIT_BACKEND = 0, 1, 2, 3


def project_option(fn: F) -> F:
    """``--project DIR`` (default ``.``), accepted after the subcommand's name and arguments."""
    return click.option("--project", "project", default=".", show_default=True, metavar="DIR",
                        type=click.Path(file_okay=False, path_type=Path),
                        help="The project directory.")(fn)


def backend_option(fn: F) -> F:
    """``--backend URL`` overriding ``[backend] url``."""
    return click.option("--backend", "backend_url", default=None, metavar="URL",
                        help="Backend URL (overrides MOTIA_PY_BACKEND_URL and motia_py.toml).")(fn)


def settings_from(project: Path, **flags: Any) -> Settings:
    """Resolve settings once: flag > environment > file > default."""
    return load_settings(project, flags=flags)


def fail(message: str, code: int = EXIT_FAIL) -> None:
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
        except BackendUnavailableError as exc:
            fail(f"backend unavailable: {exc}", EXIT_BACKEND)
        except GraphError as exc:
            fail(str(exc), EXIT_FAIL)
        except MotiaError as exc:
            fail(str(exc), EXIT_FAIL)
        except KeyboardInterrupt:
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def echo_json(value: Any) -> None:
    """Machine-readable output: one JSON document on stdout."""
    click.echo(json.dumps(value, indent=2, default=str, ensure_ascii=False))


def exit_now_if_threads_linger(code: int) -> None:
    """After a graceful stop, do not let a plain ``def`` handler stuck in its thread keep the process
    alive (Python joins worker threads at exit): its event was handed back and runs again elsewhere."""
    from .executor import sync_handlers_running

    stuck = sync_handlers_running()
    if stuck:
        click.echo(f"warning: {stuck} plain def handler(s) still running after the grace period; "
                   "exiting without them (their events go back to the queue)", err=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_async(coro: Any) -> Any:
    """Run a coroutine to completion on a fresh event loop."""
    return asyncio.run(coro)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="motia-py", prog_name="motia-py")
def cli() -> None:
    """motia-py: event-driven Python backends from small step files."""


# -- project inspection (never opens the backend) --------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.option("--strict", is_flag=True, help="Warnings fail too (info never does).")
@project_option
@handle_errors
def validate(as_json: bool, strict: bool, project: Path) -> None:
    """Check every step file and the topic graph; print every problem with file, step and hint."""
    from .findings import Severity
    from .graph import exit_code
    from .runtime import load_project

    proj, findings = load_project(settings_from(project))
    counts = {s: sum(1 for f in findings if f.severity is s) for s in Severity}
    code = exit_code(findings, strict)
    if as_json:
        echo_json({"ok": code == 0, "strict": strict, "steps": len(proj.steps),
                   "errors": counts[Severity.ERROR], "warnings": counts[Severity.WARNING],
                   "info": counts[Severity.INFO], "findings": [f.to_json(proj.root) for f in findings]})
    else:
        colours = {Severity.ERROR: "red", Severity.WARNING: "yellow", Severity.INFO: "blue"}
        for f in findings:
            click.echo(click.style(f.render(proj.root), fg=colours[f.severity]), err=False)
        summary = (f"{len(proj.steps)} step(s): {counts[Severity.ERROR]} error(s), "
                   f"{counts[Severity.WARNING]} warning(s), {counts[Severity.INFO]} info")
        click.echo(click.style(summary, fg="green" if code == 0 else "red", bold=True))
    sys.exit(code)


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["mermaid", "dot", "json"]), default="mermaid",
              show_default=True)
@click.option("--flow", default=None, help="Only the steps of this flow.")
@project_option
@handle_errors
def graph(fmt: str, flow: str | None, project: Path) -> None:
    """Export the flow graph as Mermaid, DOT or JSON."""
    from . import graph as g
    from .discovery import discover

    proj = discover(settings_from(project))
    if fmt == "json":
        echo_json(g.to_json(proj, flow))
    elif fmt == "dot":
        click.echo(g.to_dot(proj, flow))
    else:
        click.echo(g.to_mermaid(proj, flow))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@project_option
@handle_errors
def steps(as_json: bool, project: Path) -> None:
    """List steps with their triggers, emits and flows."""
    from .discovery import discover

    proj = discover(settings_from(project))
    rows = []
    for s in proj.steps:
        trigger = (", ".join(s.subscribes) if s.subscribes else s.cron.expression if s.cron
                   else f"{s.api.method} {s.api.path}" if s.api else ", ".join(s.virtual_subscribes))
        rows.append({"name": s.name, "type": s.type.value, "trigger": trigger,
                     "emits": [e.topic for e in s.emits], "flows": list(s.flows),
                     "file": str(s.file.relative_to(proj.root)) if s.file.is_relative_to(proj.root) else str(s.file)})
    if as_json:
        echo_json({"steps": rows, "problems": [p.to_json(proj.root) for p in proj.problems]})
        return
    if not rows:
        click.echo("no steps found", err=True)
    width = max((len(r["name"]) for r in rows), default=4)
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {r['type']:<5}  {r['trigger']}"
                   + (f"  -> {', '.join(r['emits'])}" if r["emits"] else "")
                   + (f"  [{', '.join(r['flows'])}]" if r["flows"] else ""))
    for p in proj.problems:
        click.echo(p.render(proj.root), err=True)


@cli.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Write into a non-empty directory.")
@handle_errors
def create(directory: Path, force: bool) -> None:
    """Scaffold a new project in DIRECTORY (settings, an event, a cron and an API step, a test)."""
    from .scaffold import next_commands, scaffold

    written = scaffold(directory, force=force)
    for path in written:
        click.echo(f"  created {path}", err=True)
    click.echo("\nset it up in a fresh virtualenv and run its test:\n"
               + "\n".join(f"  {c}" for c in next_commands(directory)), err=True)


@cli.command()
@project_option
@handle_errors
def openapi(project: Path) -> None:
    """Print the OpenAPI 3.1 document of the project's API steps."""
    from .discovery import discover
    from .openapi import openapi_document

    echo_json(openapi_document(discover(settings_from(project))))


# -- running ---------------------------------------------------------------------------------------


@cli.command()
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 256),
              help="Worker processes (1 = in this process).")
@click.option("--no-http", is_flag=True, help="Do not serve API steps.")
@click.option("--no-cron", is_flag=True, help="Do not fire cron steps.")
@click.option("--host", default=None, help="HTTP host (default 127.0.0.1).")
@click.option("--port", default=None, type=int, help="HTTP port (default 3000).")
@backend_option
@project_option
@handle_errors
def start(workers: int, no_http: bool, no_cron: bool, host: str | None, port: int | None,
          backend_url: str | None, project: Path) -> None:
    """Run the production worker: consume every step's queue, fire cron, serve HTTP."""
    from .logs import configure_logging
    from .serve import StartOptions, run

    settings = settings_from(project, backend_url=backend_url, host=host, port=port)
    configure_logging(settings.log_format, settings.log_level)
    code = run_async(run(settings, StartOptions(workers=workers, http=not no_http, cron=not no_cron)))
    exit_now_if_threads_linger(code)
    sys.exit(code)


@cli.command()
@click.option("--host", default=None, help="HTTP host (default 127.0.0.1).")
@click.option("--port", default=None, type=int, help="HTTP port (default 3000).")
@backend_option
@project_option
@handle_errors
def dev(host: str | None, port: int | None, backend_url: str | None, project: Path) -> None:
    """Run everything with hot reload: save a step file and the running system has it."""
    from .dev import run_dev
    from .logs import configure_logging

    settings = settings_from(project, backend_url=backend_url, host=host, port=port)
    configure_logging("text" if settings.log_format == "auto" else settings.log_format, settings.log_level)
    code = run_async(run_dev(settings))
    exit_now_if_threads_linger(code)
    sys.exit(code)


def _register_operator_commands() -> None:
    from .cli_ops import register

    register(cli)


_register_operator_commands()


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``motia-py`` and ``python -m motia_py``."""
    cli.main(args=argv, prog_name="motia-py")
