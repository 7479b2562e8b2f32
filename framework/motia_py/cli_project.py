"""Project inspection: ``validate``, ``steps``, ``graph``, ``openapi`` (they never open the backend), and
``create`` (scaffold a new project)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .cli_common import echo_json, handle_errors, project_option, require_project, settings_from


@click.command("validate")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.option("--strict", is_flag=True, help="Warnings fail too (info never does).")
@project_option
@handle_errors
def validate(as_json: bool, strict: bool, project: Path) -> None:
    """Check every step file and the topic graph; print every problem with file, step and hint.

    \b
    Example:
      motia-py validate --strict --project myapp
    """
    from .findings import Severity
    from .graph import exit_code
    from .project_load import load_project

    settings = settings_from(project)
    require_project(settings)
    proj, findings = load_project(settings, cycles=True)
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


@click.command("graph")
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


@click.command("steps")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@project_option
@handle_errors
def steps(as_json: bool, project: Path) -> None:
    """List steps with their triggers, emits and flows."""
    from .discovery import discover
    from .motia1_checks import watch_label

    proj = discover(settings_from(project))
    rows: list[dict[str, Any]] = []
    for s in proj.steps:
        trigger = (", ".join(s.subscribes) if s.subscribes else s.cron.expression if s.cron
                   else f"{s.api.method} {s.api.path}" if s.api else watch_label(s.watch) if s.watch
                   else ", ".join(s.virtual_subscribes))
        rows.append({"name": s.name, "type": s.origin.kind if s.origin else s.type.value, "trigger": trigger,
                     "step": s.display_name, "format": "1.0" if s.origin else "0.x",
                     "emits": [e.topic for e in s.emits], "flows": list(s.flows),
                     "file": str(s.file.relative_to(proj.root)) if s.file.is_relative_to(proj.root) else str(s.file)})
    if as_json:
        echo_json({"steps": rows, "problems": [p.to_json(proj.root) for p in proj.problems]})
        return
    if not rows:
        click.echo("no steps found", err=True)
    width = max((len(r["name"]) for r in rows), default=4)
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {r['type']:<6}  {r['trigger']}"
                   + (f"  -> {', '.join(r['emits'])}" if r["emits"] else "")
                   + (f"  [{', '.join(r['flows'])}]" if r["flows"] else ""))
    for p in proj.problems:
        click.echo(p.render(proj.root), err=True)


@click.command("create")
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


@click.command("openapi")
@project_option
@handle_errors
def openapi(project: Path) -> None:
    """Print the OpenAPI 3.1 document of the project's API steps."""
    from .discovery import discover
    from .openapi import openapi_document

    echo_json(openapi_document(discover(settings_from(project))))
