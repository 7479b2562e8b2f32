"""Running a project: ``start`` (the production worker) and ``dev`` (hot reload)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from .cli_common import backend_option, handle_errors, project_option, require_project, settings_from
from .loops import run_on


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


@click.command("start")
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
    require_project(settings)
    configure_logging(settings.log_format, settings.log_level)
    code = run_on(settings.event_loop, run(settings, StartOptions(workers=workers, http=not no_http, cron=not no_cron)))
    exit_now_if_threads_linger(code)
    sys.exit(code)


@click.command("dev")
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
    require_project(settings)
    from .workbench import check_dev_exposure

    check_dev_exposure(settings)  # before anything starts: a dev server on the network needs a token
    configure_logging("text" if settings.log_format == "auto" else settings.log_format, settings.log_level)
    code = run_on(settings.event_loop, run_dev(settings))
    exit_now_if_threads_linger(code)
    sys.exit(code)
