"""Which package ``import motia`` gives step files: motia-py's built-in Motia 1.0 SDK
(:mod:`motia_py.motia_compat`) or an installed ``motia`` (Motia's own SDK).

The rule, set by ``[project] motia_sdk`` in ``motia_py.toml`` (or ``MOTIA_PY_MOTIA_SDK``):

- ``builtin``: before step files are imported, the built-in SDK is registered as ``motia`` (with its
  submodules ``motia.types``, ``motia.triggers``, ...), for the rest of the process: a finder first on
  ``sys.meta_path`` puts it in ``sys.modules`` under those names on the first ``import motia``. Every
  ``import motia`` in that process gets it, step files, their helpers and any other code alike; an
  installed ``motia`` is not imported.
- ``installed``: nothing is registered; ``import motia`` finds the installed package as usual. Its
  ``enqueue``, ``stateManager``, ``Stream`` and ``logger`` talk to Motia's engine (iii), which motia-py
  does not run, so steps that call them fail; ``motia-py validate`` warns.
- ``auto`` (the default): ``installed`` when a ``motia`` package is installed (outside the project),
  else ``builtin``. A project that runs under motia-py only needs nothing installed.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import StepConfigError
from .findings import Finding, Severity
from .stream_config import StreamSpec, build_stream

if TYPE_CHECKING:
    from importlib.abc import Loader
else:
    Loader = object  # importlib.abc would import importlib.resources and tempfile at start-up

_COMPAT = f"{__package__}.motia_compat"
MODULES: dict[str, str] = {
    "motia": _COMPAT,
    "motia.types": f"{_COMPAT}.types",
    "motia.triggers": f"{_COMPAT}.triggers",
    "motia.types_stream": f"{_COMPAT}.types_stream",
    "motia.step": f"{_COMPAT}.steps",
    "motia.multi_trigger": f"{_COMPAT}.steps",
    "motia.guards": f"{_COMPAT}.steps",
    "motia.schema_utils": f"{_COMPAT}.steps",
    "motia.loader": f"{_COMPAT}.steps",
    "motia.streams": f"{_COMPAT}.helpers",
}
"""The names the built-in SDK answers to, as Motia's SDK lays out its modules, and the module of
:mod:`motia_py.motia_compat` behind each. The SDK (and pydantic, which its types use) is imported on the
first ``import motia``, not before: projects that never import it never pay for it."""


def _register() -> None:
    """Import the built-in SDK and register it under every name of :data:`MODULES`."""
    for name, real in MODULES.items():
        sys.modules[name] = importlib.import_module(real)


class _SdkLoader(Loader):
    """Gives ``motia`` the built-in SDK's package itself (no new module object)."""

    own_spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        _register()
        module = sys.modules[spec.name]
        self.own_spec = module.__spec__
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        module.__spec__ = self.own_spec  # the import system gave it the alias's spec: it keeps its own


class _SdkFinder:
    """First on ``sys.meta_path`` while the built-in SDK stands for ``motia``: the first ``import motia``
    registers it (its submodules are then found in ``sys.modules``)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES:
            return None
        return importlib.machinery.ModuleSpec(fullname, _SdkLoader())


_FINDER = _SdkFinder()


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
    ours = {name: sys.modules.get(real) for name, real in MODULES.items()}
    for name, module in ours.items():
        if resolved == "builtin" and module is not None:
            sys.modules[name] = module  # imported already (an earlier discovery): registered as before
        elif resolved == "builtin" or (module is not None and sys.modules.get(name) is module):
            sys.modules.pop(name, None)  # an installed one imported before is replaced; ours is dropped
    while _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
    if resolved == "builtin":
        sys.meta_path.insert(0, _FINDER)
    helpers = sys.modules.get(f"{_COMPAT}.helpers")
    if helpers is not None:
        helpers.DECLARED_STREAMS.clear()
    return resolved


def declared_streams(defined: set[str], problems: list[Finding]) -> tuple[StreamSpec, ...]:
    """The streams step files declared with ``Stream("name")`` (Motia 1.0 declares streams where they are
    used) that no stream file defines: each without a schema, or with its ``StreamConfig``'s. A broken
    ``StreamConfig`` adds its finding to ``problems``."""
    helpers = sys.modules.get(f"{_COMPAT}.helpers")
    if helpers is None:  # no step file imported the SDK: none declared a stream
        return ()
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
