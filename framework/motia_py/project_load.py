"""Loading a project for use: discover its step files and flows, then validate the graph.

What ``validate``, ``graph``, ``steps`` and ``openapi`` need, without the runtime (router, workers,
backends, asyncio) that :mod:`motia_py.runtime` brings; the runtime re-exports both functions.
"""

from __future__ import annotations

from .discovery import Project, discover
from .errors import GraphError
from .findings import Finding, Severity
from .settings import Settings


def load_project(settings: Settings, *, cycles: bool = False) -> tuple[Project, list[Finding]]:
    """Discover and validate a project; return it with every finding (errors included).

    The cycle findings (info only: they never fail a project) come with ``cycles=True``, as ``motia-py
    validate`` and ``dev`` show them; running a project does without them (and without networkx).
    """
    from .graph import validate

    project = discover(settings)
    return project, validate(project, cycles=cycles)


def require_valid(project: Project, findings: list[Finding]) -> None:
    """Raise GraphError (listing every error) when ``findings`` hold an error."""
    errors = [f for f in findings if f.severity is Severity.ERROR]
    if errors:
        lines = "\n".join("  " + f.render(project.root) for f in errors)
        raise GraphError(f"the project has {len(errors)} error(s):\n{lines}", list(errors))
