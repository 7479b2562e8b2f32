"""The ``motia-py`` command line (thin: parse arguments, call the library, map errors to exit codes).

This module only assembles the command group. The commands live in one module per noun (``cli_project``,
``cli_run``, ``cli_emit``, ``cli_handles``, ``cli_state``, ``cli_dlq``, ``cli_cron``, ``cli_trace``,
``cli_queue``, ``cli_rules``), what they share in ``cli_common`` (exit codes included); imports flow downward
only, and nothing imports this module.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import click

COMMANDS = {
    "validate": "cli_project", "graph": "cli_project", "steps": "cli_project", "create": "cli_project",
    "openapi": "cli_project", "start": "cli_run", "dev": "cli_run", "emit": "cli_emit", "status": "cli_handles",
    "cancel": "cli_handles", "scheduled": "cli_handles", "state": "cli_state", "trace": "cli_trace",
    "cron": "cli_cron", "dlq": "cli_dlq", "queue": "cli_queue", "rules": "cli_rules",
}
"""Each command and the module that defines it (under the same name): a command's module, and what it
imports, is loaded when that command runs (or ``--help`` lists it), so ``motia-py start`` never loads
``emit``'s or ``cron``'s."""


class LazyGroup(click.Group):
    """A command group whose commands are imported on first use (the same names, help and errors)."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command ``cmd_name``, importing its module the first time."""
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module = importlib.import_module(f".{COMMANDS[cmd_name]}", __package__)
            self.add_command(getattr(module, cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command's name, sorted (as a plain group lists them)."""
        return sorted(set(self.commands) | set(COMMANDS))

    def resolve_command(self, ctx: click.Context,
                        args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        """Resolve as a plain group does; an unknown name first loads every command, so that the error
        suggests the nearest ones."""
        if args and args[0] not in COMMANDS:
            for name in COMMANDS:
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``motia-py`` and ``python -m motia_py``."""
    cli.main(args=argv, prog_name="motia-py")
