"""Imports of a project's own code: the project-first finder, fresh source loading, shadowing checks.

Step files and the project's modules import the project's top-level packages (``services``) from the
project root first, even over an installed package of the same name. Nobody else is redirected, and
the standard library, motia-py and its dependencies always come from where they are installed, so a
project folder named ``redis/`` can never replace the framework's ``redis`` (it is a
``shadowed-package`` warning instead).
"""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import os
import re
import sys
import types
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from .findings import Finding, Severity


def under(path: Path, root: Path) -> bool:
    """Whether ``path`` is in the project ``root`` (an installed package in a venv there is not)."""
    if "site-packages" in path.parts:
        return False  # checked first: resolving a path costs a system call per component
    try:
        path.resolve().relative_to(root)
    except (ValueError, OSError):
        return False
    return True


class _ProjectFinder:
    """Resolve the project's own top-level packages from the project root, for project code only.

    Without it, a namespace folder of the project (``services/`` without ``__init__.py``) loses to a
    regular package of the same name anywhere else on ``sys.path``, which is how Python ranks them.
    Only imports made by project code (a file under the root) are redirected; the standard library,
    motia-py and its dependencies are never taken from the project, whoever imports them, even when
    the project root is the working directory of ``python -m motia_py`` (first on ``sys.path`` then).
    (A finder by protocol: ``importlib.abc`` would import ``importlib.resources`` and ``tempfile``.)
    """

    root: Path | None = None

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        root = self.root
        if root is None:
            return None
        if path is None:
            if not ((root / fullname).is_dir() or (root / f"{fullname}.py").is_file()):
                return None
            if fullname in sys.stdlib_module_names:
                return importlib.machinery.PathFinder.find_spec(fullname, _paths_outside(root))
            installed = importlib.machinery.PathFinder.find_spec(fullname, _paths_outside(root))
            if installed is not None and fullname in framework_packages():
                # the real one, from anywhere but the project root (framework_packages() reads every
                # installed distribution's metadata: only asked when the name is installed at all)
                return installed
            if not _imported_by_project_code(root):
                return None
            spec = importlib.machinery.PathFinder.find_spec(fullname, [str(root)])
        else:
            if fullname.startswith(_OWN) or not any(_is_project_dir(p, root) for p in path):
                return None  # motia-py's own modules never come from the project (nor fresh), even when
                # the framework sits inside the project root (a checkout of motia-py validating its example)
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and isinstance(spec.loader, importlib.machinery.SourceFileLoader) and spec.origin:
            # helpers are compiled from source too, never from a .pyc (see FreshLoader)
            spec.loader = FreshLoader(fullname, spec.origin)
        return spec


_OWN = f"{__package__}."


def _paths_outside(root: Path) -> list[str]:
    """``sys.path`` without the entries that are the project root (``""`` is the working directory)."""
    return [p for p in sys.path if _entry_dir(p) != root]


def _entry_dir(entry: str) -> Path | None:
    try:
        return Path(entry or os.getcwd()).resolve()
    except (OSError, ValueError):
        return None


_IMPORT_MACHINERY = ("<frozen importlib", os.path.dirname(importlib.__file__))


def _imported_by_project_code(root: Path) -> bool:
    """Whether the code running the current ``import`` statement is a file of the project."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(_IMPORT_MACHINERY):
        frame = frame.f_back  # type: ignore[assignment]  # f_back is None only past the outermost frame
    return frame is not None and _is_project_file(frame.f_code.co_filename, root)


@functools.lru_cache(maxsize=4096)
def _is_project_dir(entry: str, root: Path) -> bool:
    """Whether a package's search path entry is in the project (asked for every submodule imported while
    the finder is installed: a library's dozens of submodules share a few entries)."""
    return isinstance(entry, str) and under(Path(entry), root)


def module_in_project(module: types.ModuleType, root: Path) -> bool:
    """Whether a module's file or one of its package's search path entries is in the project
    (:func:`under`, with the folders' answers cached: a file that is no symbolic link is in the
    project when its folder is)."""
    filename = getattr(module, "__file__", None)
    if isinstance(filename, str) and filename:
        if os.path.islink(filename):
            if under(Path(filename), root):
                return True
        elif _is_project_dir(os.path.dirname(filename), root):
            return True
    return any(_is_project_dir(entry, root) for entry in list(getattr(module, "__path__", None) or []))


@functools.lru_cache(maxsize=4096)
def _is_project_file(filename: str, root: Path) -> bool:
    return bool(filename) and not filename.startswith("<") and under(Path(filename), root)


_FALLBACK_REQUIREMENTS = ("pydantic", "croniter", "networkx", "jsonschema", "watchfiles", "redis", "uvicorn",
                          "starlette", "click", "tzdata")
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _dist_key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def _owners() -> Mapping[str, list[str]]:
    """Top-level import name -> the installed distributions that provide it (read once per process)."""
    import importlib.metadata

    return importlib.metadata.packages_distributions()


@functools.cache
def framework_packages() -> frozenset[str]:
    """The top-level import names of motia-py and of everything it depends on (never taken from a project)."""
    import importlib.metadata

    by_dist: dict[str, set[str]] = {}
    for top, dists in _owners().items():
        for d in dists:
            by_dist.setdefault(_dist_key(d), set()).add(top)
    names: set[str] = {"motia_py"}
    todo = [_dist_key(n) for n in ("motia-py", *_FALLBACK_REQUIREMENTS)]
    seen: set[str] = set()
    while todo:
        dist = todo.pop()
        if dist in seen:
            continue
        seen.add(dist)
        names |= by_dist.get(dist, set())
        try:
            requires = importlib.metadata.requires(dist) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for req in requires:
            m = _REQUIREMENT_NAME.match(req)
            if m and "extra" not in req.partition(";")[2]:  # optional extras are not dependencies
                todo.append(_dist_key(m.group(1)))
    return frozenset(names)


def _project_top_level(root: Path, skip_dirs: Collection[str]) -> list[tuple[str, str]]:
    """(import name, shown path) of every importable module and package at the project root."""
    out: list[tuple[str, str]] = []
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return out
    for entry in entries:
        name = entry.name
        try:
            if entry.is_dir() and name.isidentifier() and name not in skip_dirs:
                if any(p.suffix == ".py" for p in entry.iterdir()):
                    out.append((name, f"{name}/"))
            elif entry.suffix == ".py" and entry.stem.isidentifier() and entry.is_file():
                out.append((entry.stem, name))
        except OSError:
            continue
    return out


def _found_outside(name: str, paths: list[str]) -> bool:
    """Whether ``name`` is importable from ``paths`` (an editable install of the project itself is not)."""
    try:
        return importlib.machinery.PathFinder.find_spec(name, paths) is not None
    except (ImportError, ValueError):
        return False


def shadowed_packages(root: Path, skip_dirs: Collection[str] = ()) -> list[Finding]:
    """A warning per project package or module named like an installed one (a distribution or the
    standard library): project code importing that name gets the project's (or, for motia-py's own
    dependencies and the standard library, the installed one), other code the installed one."""
    findings: list[Finding] = []
    outside = _paths_outside(root)
    for name, shown in _project_top_level(root, skip_dirs):
        if name in sys.stdlib_module_names:
            installed = f"the standard library module '{name}'"
        elif _found_outside(name, outside) and name in _owners():
            installed = f"the installed distribution '{_owners()[name][0]}'"
        else:
            continue
        protected = name in sys.stdlib_module_names or name in framework_packages()
        who = ("every import of it, step files' included, gets the installed one (motia-py depends on it)"
               if protected else "step files importing it get the project's, and so does any code that imports "
               "it after them")
        findings.append(Finding("shadowed-package", Severity.WARNING,
                                f"the project's package '{name}' ({shown}) has the name of {installed}: {who}",
                                file=root / shown.rstrip("/"), field=name,
                                hint=f"rename '{shown}' so that it shadows nothing"))
    return findings


FINDER = _ProjectFinder()
"""The one project-first finder; discovery points it at the project being loaded."""


class FreshLoader(importlib.machinery.SourceFileLoader):
    """Compile step files from source every time: a ``.pyc`` keyed on whole-second mtimes could hand
    back the previous version of a file saved twice within one second."""

    def get_code(self, fullname: str) -> types.CodeType:
        source = self.get_data(self.path)
        return compile(source, self.path, "exec", dont_inherit=True)
