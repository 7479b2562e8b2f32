"""The ``motia-py`` command line (thin: parse arguments, call the library, map errors to exit codes).

This module only assembles the command group. The commands live in one module per noun (``cli_project``,
``cli_run``, ``cli_emit``, ``cli_handles``, ``cli_state``, ``cli_dlq``, ``cli_cron``, ``cli_trace``,
``cli_queue``, ``cli_rules``), what they share in ``cli_common`` (exit codes included); imports flow downward
only, and nothing imports this module.
"""

from __future__ import annotations

from pathlib import Path

import click

from .cli_cron import cron
from .cli_dlq import dlq
from .cli_emit import emit
from .cli_handles import cancel, scheduled, status
from .cli_project import create, graph, openapi, steps, validate
from .cli_queue import queue
from .cli_rules import rules
from .cli_run import dev, start
from .cli_state import state
from .cli_trace import trace


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="motia-py", prog_name="motia-py")
@click.option("--project", "project", default=None, metavar="DIR", type=click.Path(file_okay=False, path_type=Path),
              help="The project directory for the subcommand (default: .).")
@click.option("--backend", "backend_url", default=None, metavar="URL", help="Backend URL for the subcommand.")
def cli(project: Path | None, backend_url: str | None) -> None:
    """motia-py: event-driven Python backends from small step files.

    \b
    Examples:
      motia-py validate
      motia-py --project myapp dev
      motia-py emit job.enqueued --data '{"type": "email"}'
    Shell completion: eval "$(_MOTIA_PY_COMPLETE=bash_source motia-py)" (zsh_source, fish_source).
    """


for _command in (validate, graph, steps, create, openapi, start, dev, emit, status, cancel, scheduled, state, trace,
                 cron, dlq, queue, rules):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``motia-py`` and ``python -m motia_py``."""
    cli.main(args=argv, prog_name="motia-py")
