"""``motia-py rules pull``: write or refresh the AI-assistant rule files (AGENTS.md, CLAUDE.md,
.cursor/rules/*.mdc) of a project."""

from __future__ import annotations

from pathlib import Path

import click

from .cli_common import handle_errors, project_option


@click.group("rules")
def rules() -> None:
    """AI-assistant rules: AGENTS.md, CLAUDE.md, .cursor/rules/*.mdc."""


@rules.command("pull")
@click.option("--force", is_flag=True, help="Also overwrite rule files you edited.")
@project_option
@handle_errors
def rules_pull(force: bool, project: Path) -> None:
    """Write or refresh the AI-assistant rule files; files you edited are kept unless --force.

    \b
    Example:
      motia-py rules pull --project myapp
    """
    from .rules import pull

    for line in pull(project, force=force).messages(project.resolve()):
        click.echo(line, err=True)
