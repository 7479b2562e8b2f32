"""Which package ``import motia`` gives step files: motia-py's built-in Motia 1.0 SDK
(:mod:`motia_py.motia_compat`) or an installed ``motia`` (Motia's own SDK).

The rule, set by ``[project] motia_sdk`` in ``motia_py.toml`` (or ``MOTIA_PY_MOTIA_SDK``):

- ``builtin``: before step files are imported, the built-in SDK is registered in ``sys.modules`` as
  ``motia`` (with its submodules ``motia.types``, ``motia.triggers``, ...), for the rest of the process.
  Every ``import motia`` in that process gets it, step files, their helpers and any other code alike;
  an installed ``motia`` is not imported.
- ``installed``: nothing is registered; ``import motia`` finds the installed package as usual. Its
  ``enqueue``, ``stateManager``, ``Stream`` and ``logger`` talk to Motia's engine (iii), which motia-py
  does not run, so steps that call them fail; ``motia-py validate`` warns.
- ``auto`` (the default): ``installed`` when a ``motia`` package is installed (outside the project),
  else ``builtin``. A project that runs under motia-py only needs nothing installed.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
import types
from pathlib import Path

from . import motia_compat
from .errors import StepConfigError
from .findings import Finding, Severity
from .motia_compat import helpers, steps, triggers, types_stream
from .motia_compat import types as sdk_types
from .stream_config import StreamSpec, build_stream

MODULES: dict[str, types.ModuleType] = {
    "motia": motia_compat,
    "motia.types": sdk_types,
    "motia.triggers": triggers,
    "motia.types_stream": types_stream,
    "motia.step": steps,
    "motia.multi_trigger": steps,
    "motia.guards": steps,
    "motia.schema_utils": steps,
    "motia.loader": steps,
    "motia.streams": helpers,
}
"""The names the built-in SDK answers to, as Motia's SDK lays out its modules."""


def _outside(root: Path) -> list[str]:
    """``sys.path`` without the project root (a project folder named ``motia/`` is not an installed SDK)."""
    out = []
    for entry in sys.path:
        try:
            if Path(entry or os.getcwd()).resolve() != root:
                out.append(entry)
        except (OSError, ValueError):
            continue
    return out


def installed_sdk(root: Path) -> str | None:
    """Where an installed ``motia`` package is (outside the project ``root``), or None."""
    try:
        spec = importlib.machinery.PathFinder.find_spec("motia", _outside(root))
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    return spec.origin or (list(spec.submodule_search_locations or []) or ["motia"])[0]


def resolve(mode: str, root: Path) -> str:
    """``builtin`` or ``installed`` for the setting ``mode`` (``auto`` looks for an installed package)."""
    if mode == "auto":
        return "installed" if installed_sdk(root) is not None else "builtin"
    return mode


def prepare(mode: str, root: Path) -> str:
    """Make ``import motia`` give what ``mode`` says (see the module docstring); return the resolved mode."""
    resolved = resolve(mode, root)
    for name, module in MODULES.items():
        if resolved == "builtin":
            sys.modules[name] = module
        elif sys.modules.get(name) is module:
            del sys.modules[name]
    helpers.DECLARED_STREAMS.clear()
    return resolved


def declared_streams(defined: set[str], problems: list[Finding]) -> tuple[StreamSpec, ...]:
    """The streams step files declared with ``Stream("name")`` (Motia 1.0 declares streams where they are
    used) that no stream file defines: each without a schema, or with its ``StreamConfig``'s. A broken
    ``StreamConfig`` adds its finding to ``problems``."""
    out = []
    for name, (config, file, line) in helpers.DECLARED_STREAMS.items():
        if name in defined:
            continue
        try:
            out.append(build_stream(dict(config) if config is not None else {"name": name}, Path(file), line))
        except StepConfigError as exc:
            problems.append(Finding("invalid-stream", Severity.ERROR, str(exc), file=Path(file), line=line,
                                    field=exc.field, hint=exc.hint, step=name))
    return tuple(out)
