"""Which steps are transactional (their ``transactional`` key, else the project's ``[project]
transactional`` default), and the validation finding for a backend that cannot commit them atomically.
"""

from __future__ import annotations

from collections.abc import Iterator

from .backends.registry import BUILTIN
from .config import StepSpec, StepType
from .discovery import Project
from .errors import MotiaError
from .findings import Finding, Severity

_RUN_TYPES = (StepType.EVENT, StepType.CRON, StepType.API, StepType.STATE)


def is_transactional(project: Project, spec: StepSpec) -> bool:
    """True when ``spec``'s runs commit their state writes and emits with their acknowledgement."""
    if spec.type not in _RUN_TYPES:
        return False
    return spec.transactional if spec.transactional is not None else project.settings.transactional


def transactional_steps(project: Project) -> frozenset[str]:
    """The names of the project's transactional steps."""
    return frozenset(s.name for s in project.steps if is_transactional(project, s))


def unsupported_transactions(project: Project) -> Iterator[Finding]:
    """``transactional-unsupported`` (an error) for each transactional step when the project's backend has
    no atomic transactional commit (a plug-in without ``complete_tx``).

    The backend object is built, not opened; one that cannot be built is reported by whatever opens it.
    """
    steps = [s for s in project.steps if is_transactional(project, s)]
    if not steps:
        return
    url = project.settings.backend_url
    if url.split(":", 1)[0] in BUILTIN:
        return  # every built-in backend commits atomically (tests/test_imports.py checks): none is built
    from .backends.compose import atomic_transactions
    from .backends.registry import BackendOptions, create_backend

    try:
        backend = create_backend(url, BackendOptions(root=project.root, prefix=project.settings.redis_prefix))
    except MotiaError:
        return
    if atomic_transactions(backend):
        return
    scheme = url.split(":", 1)[0]
    for s in steps:
        yield Finding("transactional-unsupported", Severity.ERROR,
                      f"step '{s.name}' is transactional, but the {scheme}:// backend cannot commit state writes "
                      "and emits together with the acknowledgement",
                      file=s.file, step=s.name, line=s.line, field="transactional",
                      hint="run it on memory://, sqlite:// or redis://, or set \"transactional\": False")
