"""Validation findings about streams and state-triggered steps (part of ``motia-py validate``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from .config import StepType
from .discovery import Project
from .findings import Finding, Severity
from .stream_config import StreamSpec
from .suggest import did_you_mean


def realtime_findings(project: Project) -> Iterator[Finding]:
    """Duplicate stream names (errors) and state steps watching a namespace no flow uses (warnings)."""
    yield from _duplicate_streams(project)
    yield from _unknown_namespaces(project)


def _rel(project: Project, path: Path) -> str:
    try:
        return path.resolve().relative_to(project.root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _duplicate_streams(project: Project) -> Iterator[Finding]:
    by_name: dict[str, list[StreamSpec]] = defaultdict(list)
    for s in project.streams:
        by_name[s.name].append(s)
    for name, group in by_name.items():
        for dup in group[1:]:
            yield Finding("duplicate-stream", Severity.ERROR,
                          f"two streams are named '{name}': {_rel(project, group[0].file)} and "
                          f"{_rel(project, dup.file)}", file=dup.file, line=dup.line, field="name",
                          hint="stream names must be unique in a project; rename one of them")


def _unknown_namespaces(project: Project) -> Iterator[Finding]:
    used = {f.namespace for f in project.flows.values()} | {project.namespace_of(s) for s in project.steps}
    for s in project.steps:
        if s.type is not StepType.STATE or s.watch is None or s.watch.namespace is None:
            continue
        if s.origin is not None and s.origin.kind == "stream":  # watches a stream's items (motia1_checks)
            continue
        if s.watch.namespace not in used:
            yield Finding("unknown-namespace", Severity.WARNING,
                          f"watches state namespace '{s.watch.namespace}', which no flow or step uses",
                          file=s.file, step=s.name, line=s.line, field="watch.namespace",
                          hint=did_you_mean(s.watch.namespace, sorted(used)) or
                          f"namespaces in use: {', '.join(sorted(used)) or 'none'}")
