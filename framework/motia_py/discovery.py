"""Find step files, import each by path inside its folder's package tree, and collect every problem.

A file ``steps/jobs/process.step.py`` is imported as module ``steps.jobs.process_step`` whose package is
``steps.jobs``, so relative imports (``from .services import x``) work, and absolute imports of the
project's own packages (``from services.email import send``) resolve from the project root first when
project code (a step file or a module of the project) makes them. The framework and every installed
package keep their own imports: a project folder named like a dependency (``redis/``) never replaces
the real one for them, and is a validation warning. Every discovery starts from fresh modules: whatever
was imported from the project before is dropped from ``sys.modules``, so the new code always runs (hot
reload never keeps stale helpers).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import re
import sys
import traceback
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from msgspec import Struct, field

from . import check_cache, motia_sdk
from .config import StepSpec, StepType
from .errors import CronExpressionError, StepConfigError, StepFormatError
from .findings import Finding, Severity
from .flows import FlowSpec, load_flows
from .motia1_config import build_steps
from .project_imports import FINDER, FreshLoader, module_in_project, shadowed_packages
from .settings import Settings
from .stream_config import StreamSpec, build_stream, is_stream_file

STEP_SUFFIXES = (".step.py", "_step.py")

IGNORED_DIRS = frozenset({"__pycache__", "node_modules", "venv"})
"""Directories that are never part of a project, besides every hidden one (``.motia/``, ``.venv/``,
``.git/``, tool caches): no step is searched for in them and the dev server ignores changes in them."""


def is_ignored_dir(name: str) -> bool:
    """True for a directory name in :data:`IGNORED_DIRS` or a hidden one (``.motia``, ``.venv``, ...)."""
    return name in IGNORED_DIRS or name.startswith(".")


class Project(Struct, frozen=True):
    """A discovered project: its steps, flows, and every problem found while loading them."""

    settings: Settings
    steps: tuple[StepSpec, ...]
    flows: dict[str, FlowSpec]
    problems: tuple[Finding, ...] = ()
    files: tuple[Path, ...] = field(default=())
    streams: tuple[StreamSpec, ...] = ()

    @property
    def root(self) -> Path:
        """The project directory."""
        return self.settings.root

    def step(self, name: str) -> StepSpec | None:
        """The step called ``name``, if any."""
        for s in self.steps:
            if s.name == name:
                return s
        return None

    def stream(self, name: str) -> StreamSpec | None:
        """The stream called ``name``, if any."""
        for s in self.streams:
            if s.name == name:
                return s
        return None

    def flow(self, name: str) -> FlowSpec:
        """The flow ``name`` (defaults when it has no file)."""
        return self.flows.get(name) or FlowSpec(name=name)

    def namespace_of(self, step: StepSpec) -> str:
        """The state namespace a step's ``ctx.state`` uses: its first flow's, else ``default``."""
        return self.flow(step.flows[0]).namespace if step.flows else "default"

    def subscribers(self, topic: str) -> list[StepSpec]:
        """Event steps subscribed to ``topic``, in discovery order."""
        return [s for s in self.steps if s.type is StepType.EVENT and topic in s.subscribes]

    def entry_topics(self) -> set[str]:
        """Topics some flow declares as arriving from outside."""
        return {t for f in self.flows.values() for t in f.entry_topics}


def find_step_files(steps_dir: Path) -> list[Path]:
    """Every ``*.step.py`` and ``*_step.py`` under ``steps_dir``, at any depth, sorted."""
    return _find(steps_dir, lambda name: name.endswith(STEP_SUFFIXES))


def find_stream_files(steps_dir: Path) -> list[Path]:
    """Every ``*.stream.py`` and ``*_stream.py`` under ``steps_dir``, at any depth, sorted."""
    return _find(steps_dir, is_stream_file)


def _find(steps_dir: Path, wanted: Callable[[str], bool]) -> list[Path]:
    if not steps_dir.is_dir():
        return []
    out = []
    for path in steps_dir.rglob("*.py"):
        if any(is_ignored_dir(part) for part in path.relative_to(steps_dir).parts[:-1]):
            continue
        if wanted(path.name):
            out.append(path)
    return sorted(out)


def discover(settings: Settings) -> Project:
    """Load every step file and flow of the project; never stop at the first broken file.

    The slow pure checks (JSON schemas, cron expressions) that passed are remembered in the project's
    ``.motia/checks.json`` (see :mod:`.check_cache`); step files are imported every time.
    """
    with check_cache.session(settings.root):
        return _discover(settings)


def _discover(settings: Settings) -> Project:
    root = settings.root
    _reset_import_state(root)
    motia_sdk.prepare(settings.motia_sdk, root)  # what `import motia` gives step files (Motia 1.0)
    before = set(sys.modules)
    problems: list[Finding] = []
    steps: list[StepSpec] = []
    files = find_step_files(settings.steps_dir)
    used_names: set[str] = set()
    for path in files:
        specs, problem = _load_step(path, root, used_names)
        steps.extend(specs)
        if problem is not None:
            problems.append(problem)
    streams = _load_streams(settings.steps_dir, root, used_names, problems)
    streams += motia_sdk.declared_streams({s.name for s in streams}, problems)  # Stream("x") in 1.0 steps
    _record_project_modules(before, root)
    problems.extend(shadowed_packages(root, IGNORED_DIRS))
    flows, flow_problems = load_flows(settings.flows_dir)
    problems.extend(flow_problems)
    return Project(settings=settings, steps=tuple(steps), flows=flows, problems=tuple(problems), files=tuple(files),
                   streams=streams)


def _load_streams(steps_dir: Path, root: Path, used: set[str], problems: list[Finding]) -> tuple[StreamSpec, ...]:
    """Load every stream file; each broken one adds its finding to ``problems``."""
    streams = []
    for path in find_stream_files(steps_dir):
        spec, problem = _load_stream(path, root, used)
        if spec is not None:
            streams.append(spec)
        if problem is not None:
            problems.append(problem)
    return tuple(streams)


def _load_stream(path: Path, root: Path, used: set[str]) -> tuple[StreamSpec | None, Finding | None]:
    try:
        source = path.read_text(encoding="utf-8")
        compile(source, str(path), "exec")
        module = _import(path, root, used)
    except SyntaxError as exc:
        return None, Finding("syntax-error", Severity.ERROR, f"syntax error: {exc.msg}", file=path, line=exc.lineno,
                             hint=(exc.text or "").strip() or None)
    except Exception as exc:
        return None, Finding("import-error", Severity.ERROR, f"{type(exc).__name__}: {exc}", file=path,
                             line=_error_line(exc, path), hint=_import_hint(exc))
    line = _line_of(source, "config")
    if not hasattr(module, "config"):
        return None, Finding("missing-config", Severity.ERROR, "the stream file has no 'config'", file=path,
                             hint="export config = {'name': ..., 'schema': ..., 'baseConfig': {'storageType': "
                                  "'default'}}")
    try:
        return build_stream(module.config, path, line), None
    except StepConfigError as exc:
        return None, Finding("invalid-stream", Severity.ERROR, str(exc), file=path, line=line, field=exc.field,
                             hint=exc.hint, step=_config_name(module.config))


# ---------------------------------------------------------------------------------------------------


_IDENT = re.compile(r"[^0-9A-Za-z_]")
_inserted_root: list[str] = []
_project_modules: set[str] = set()


def _ident(part: str) -> str:
    name = _IDENT.sub("_", part)
    return f"_{name}" if not name or name[0].isdigit() else name


def _module_stem(path: Path) -> str:
    name = path.name
    if name.endswith(".step.py"):
        return _ident(name[: -len(".step.py")]) + "_step"
    return _ident(path.stem)


def _reset_import_state(root: Path) -> None:
    """Put ``root`` last on sys.path and drop every module an earlier discovery imported from a project.

    Last, not first: the project's own imports go through :class:`_ProjectFinder` (first on
    ``sys.meta_path``), and a project folder named like an installed package must not replace that
    package for anybody else. Only modules that a discovery itself brought in (step files, their
    helpers, their packages) are dropped; modules of installed packages and of other code stay.
    """
    root_s = str(root)
    for old in _inserted_root:
        while old in sys.path:
            sys.path.remove(old)
    _inserted_root.clear()
    if root_s not in sys.path:
        sys.path.append(root_s)
        _inserted_root.append(root_s)
    FINDER.root = root
    if FINDER not in sys.meta_path:
        sys.meta_path.insert(0, FINDER)
    for name in list(_project_modules):
        sys.modules.pop(name, None)
    _project_modules.clear()
    for name, module in list(sys.modules.items()):
        if getattr(module, "__motia_project__", False):
            del sys.modules[name]
    importlib.invalidate_caches()


def _record_project_modules(before: set[str], root: Path) -> None:
    """Remember the modules that the discovery just imported from under ``root``."""
    for name in set(sys.modules) - before:
        module = sys.modules.get(name)
        if module is None:
            continue
        if module_in_project(module, root):
            _project_modules.add(name)


def _ensure_package(root: Path, parts: tuple[str, ...]) -> str:
    """Make sure every folder from root down to ``parts`` is an importable package; return its name."""
    names: list[str] = []
    for i, part in enumerate(parts):
        names.append(_ident(part))
        name = ".".join(names)
        folder = root.joinpath(*parts[: i + 1])
        existing = sys.modules.get(name)
        if existing is not None and str(folder) in list(getattr(existing, "__path__", [])):
            continue
        init = folder / "__init__.py"
        if init.exists():
            spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(folder)])
            assert spec is not None and spec.loader is not None  # a file location always gives a spec
            module = importlib.util.module_from_spec(spec)
            module.__motia_project__ = True  # type: ignore[attr-defined]
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
            spec.submodule_search_locations = [str(folder)]
            module = importlib.util.module_from_spec(spec)
            module.__path__ = [str(folder)]
            module.__motia_project__ = True  # type: ignore[attr-defined]
            sys.modules[name] = module
        if i > 0:
            setattr(sys.modules[".".join(names[:-1])], names[-1], module)
    return ".".join(names)


def _load_step(path: Path, root: Path, used: set[str]) -> tuple[tuple[StepSpec, ...], Finding | None]:
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return (), Finding("import-error", Severity.ERROR, f"cannot read file: {exc}", file=path)
    try:
        compile(source, str(path), "exec")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        # ValueError: a NUL byte; MemoryError and RecursionError: expressions nested too deeply to compile
        if not isinstance(exc, SyntaxError):
            why = "nested too deeply to compile" if isinstance(exc, MemoryError | RecursionError) else str(exc)
            return (), Finding("syntax-error", Severity.ERROR, f"syntax error: {why}", file=path)
        msg = f"syntax error: {exc.msg}"
        return (), Finding("syntax-error", Severity.ERROR, msg, file=path, line=exc.lineno,
                             hint=(exc.text or "").strip() or None)
    try:
        module = _import(path, root, used)
    except StepConfigError as exc:  # a typed config (EventConfig(...), queue(...)) rejected while the file ran
        return (), Finding("invalid-config", Severity.ERROR, str(exc), file=path, line=_error_line(exc, path),
                             field=exc.field, hint=exc.hint)
    except BaseException as exc:  # sys.exit() or KeyboardInterrupt in a step file is that file's error
        return (), Finding("import-error", Severity.ERROR, _describe(exc), file=path,
                             line=_error_line(exc, path), hint=_import_hint(exc))
    try:
        return _spec_of(module, source, path)
    except Exception as exc:  # a config object whose attributes raise: still that file's finding
        return (), Finding("invalid-config", Severity.ERROR, f"the config cannot be read: {_describe(exc)}",
                             file=path, line=_line_of(source, "config"))


def _spec_of(module: types.ModuleType, source: str, path: Path) -> tuple[tuple[StepSpec, ...], Finding | None]:
    config_line = _line_of(source, "config")
    if not hasattr(module, "config"):
        return (), Finding("missing-config", Severity.ERROR, "the module has no 'config'", file=path,
                             hint="export config = {'type': 'event', 'name': ..., 'subscribes': [...]}")
    config: Any = module.config
    name = _config_name(config)
    try:
        specs = build_steps(config, getattr(module, "handler", None), path, config_line)
    except StepConfigError as exc:
        code = "invalid-handler" if exc.field == "handler" else "invalid-config"
        if isinstance(exc, CronExpressionError):
            code = "invalid-cron"
        elif isinstance(exc, StepFormatError):
            code = "unknown-format"
        line = _line_of(source, "handler") if exc.field == "handler" and hasattr(module, "handler") else config_line
        return (), Finding(code, Severity.ERROR, str(exc), file=path, step=name, line=line, field=exc.field,
                           hint=exc.hint)
    return specs, None


def _describe(exc: BaseException) -> str:
    """``Type: message``, saying what a ``sys.exit()`` or an interrupt at import time means."""
    try:
        text = str(exc)
    except Exception:
        text = ""
    if len(text) > 500:
        text = text[:497] + "..."
    out = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if isinstance(exc, SystemExit):
        out += " (the file called sys.exit() while it was imported)"
    elif not isinstance(exc, Exception):
        out += " (raised while the file was imported)"
    return out


def _import(path: Path, root: Path, used: set[str]) -> types.ModuleType:
    try:
        rel_parts = path.relative_to(root).parent.parts
    except ValueError:  # a steps dir outside the project root: import as a top-level module
        rel_parts = ()
    package = _ensure_package(root, rel_parts) if rel_parts else ""
    stem = _module_stem(path)
    modname = f"{package}.{stem}" if package else stem
    base, n = modname, 1
    while modname in used:
        n += 1
        modname = f"{base}__{n}"
    used.add(modname)
    spec = importlib.util.spec_from_file_location(modname, path, loader=FreshLoader(modname, str(path)))
    assert spec is not None and spec.loader is not None  # a .py path always gives a spec
    module = importlib.util.module_from_spec(spec)
    module.__motia_project__ = True  # type: ignore[attr-defined]
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(modname, None)
        raise
    return module


def _line_of(source: str, name: str) -> int | None:
    pattern = re.compile(rf"^(async\s+def\s+{name}\b|def\s+{name}\b|{name}\s*[:=])")
    for i, line in enumerate(source.splitlines(), 1):
        if pattern.match(line):
            return i
    return None


def _config_name(config: Any) -> str | None:
    try:
        name = config.get("name") if isinstance(config, dict) else getattr(config, "name", None)
    except Exception:  # a config object whose attribute raises: the finding has no step name then
        return None
    return name if isinstance(name, str) else None


def _error_line(exc: BaseException, path: Path) -> int | None:
    line = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if Path(frame.f_code.co_filename) == path:
            line = lineno
    return line


def _import_hint(exc: BaseException) -> str | None:
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return f"is '{exc.name.split('.')[0]}' installed, or a folder of the project?"
    if isinstance(exc, ImportError) and "relative import" in str(exc):
        return "relative imports resolve from the step file's folder"
    return None
