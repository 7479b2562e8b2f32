"""Property-based fuzzing of validation: step configs, step files, flow files and settings files.

Whatever a project holds, ``validate`` answers with findings (code, file, field, a printable message) and
never with a traceback; whatever passes validation can be served (routes compile, the OpenAPI document is
JSON). Bounded: a few hundred generated cases, well under ten seconds on two cores.
"""

from __future__ import annotations

import json
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from motia_py.config import StepSpec, StepType, build_step
from motia_py.discovery import Project
from motia_py.errors import ProjectError, StepConfigError
from motia_py.findings import Finding, Severity
from motia_py.flows import load_flows
from motia_py.graph import validate
from motia_py.http import compile_path
from motia_py.openapi import openapi_document
from motia_py.runtime import load_project
from motia_py.settings import Settings, load_settings
from tests.fuzz_strategies import configs, python_literal, settings_files, texts, values

FUZZ = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
FILE = Path("steps/fuzz.step.py")


async def _event(input: Any, ctx: Any) -> None:
    return None


async def _cron(ctx: Any) -> None:
    return None


async def _api(req: Any, ctx: Any) -> None:
    return None


_HANDLERS = {"event": _event, "cron": _cron, "api": _api}


@pytest.fixture(scope="module")
def project_settings() -> Iterator[Settings]:
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "motia_py.toml").write_text('[backend]\nurl = "memory://"\n')
        yield load_settings(tmp, env={})


def assert_printable(findings: list[Finding], root: Path | None = None) -> None:
    """Every finding renders as one UTF-8 line and as JSON, and says where it is."""
    for f in findings:
        assert isinstance(f, Finding) and f.code and isinstance(f.severity, Severity)
        f.render(root).encode("utf-8")
        json.dumps(f.to_json(root), ensure_ascii=False).encode("utf-8")


def assert_servable(project: Project) -> None:
    """What passed validation can be served: routes compile and the OpenAPI document is JSON."""
    for s in project.steps:
        if s.api is not None:
            compile_path(s.api.path)
    json.dumps(openapi_document(project), allow_nan=False).encode("utf-8")


@settings(FUZZ, max_examples=300)
@given(config=configs())
def test_a_step_config_builds_or_is_a_step_config_error(config: dict[str, Any], project_settings: Settings) -> None:
    handler = _HANDLERS.get(config["type"]) if isinstance(config["type"], str) else _event
    try:
        spec = build_step(config, handler or _event, FILE, 1)
    except StepConfigError as exc:
        finding = Finding("invalid-config", Severity.ERROR, str(exc), file=FILE, field=exc.field, hint=exc.hint)
        assert_printable([finding])
        return
    assert isinstance(spec, StepSpec) and isinstance(spec.type, StepType)
    project = Project(settings=project_settings, steps=(spec,), flows={})
    assert_printable(validate(project))
    assert_servable(project)


_HOSTILE_SOURCES = [
    "import sys\nsys.exit()\n", "raise KeyboardInterrupt\n", "raise SystemExit(3)\n", "raise GeneratorExit\n",
    "config = 5\n", "config = None\nhandler = 3\n", "from . import nothing\n", "import not_a_module_xyz\n",
    "1 / 0\n", "def handler(:\n", "x = '\x00'\n", "class C:\n    def __repr__(self):\n        raise ValueError\n"
    "config = C()\n", "import pydantic\nconfig = {'type': 'event', 'name': 'M', 'subscribes': ['t'], "
    "'input': pydantic.BaseModel}\nasync def handler(i, c): pass\n",
    "from motia_py import EventConfig\nconfig = EventConfig(name='T', subscribes=[5])\n",
]


def _step_source(kind: str, config: Any) -> str:
    if kind in ("event", "cron", "api"):
        args = {"event": "input, ctx", "cron": "ctx", "api": "req, ctx"}[kind]
        return f"config = {python_literal(config)}\n\nasync def handler({args}):\n    return None\n"
    return _HOSTILE_SOURCES[hash(kind) % len(_HOSTILE_SOURCES)]


step_files = st.one_of(
    st.tuples(st.sampled_from(["event", "cron", "api"]), configs()).map(lambda kc: _step_source(*kc)),
    st.sampled_from(_HOSTILE_SOURCES),
    st.binary(max_size=30).map(lambda b: b.decode("latin-1")),
)
file_names = st.sampled_from(["a.step.py", "b_step.py", "deep/c.step.py", "1-x/y.step.py", "d e.step.py"])


@settings(FUZZ, max_examples=40)
@given(files=st.dictionaries(file_names, step_files, min_size=1, max_size=3),
       flows=st.dictionaries(st.sampled_from(["f.toml", "g.toml", "x.toml"]),
                             st.one_of(texts, st.just('entry_topics = ["t"]'), st.just("dir")), max_size=2),
       bad_bytes=st.booleans())
def test_validation_of_any_project_only_ever_yields_findings(files: dict[str, str], flows: dict[str, str],
                                                             bad_bytes: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "motia_py.toml").write_text('[backend]\nurl = "memory://"\n')
        for name, source in files.items():
            path = root / "steps" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            data = source.encode("utf-8", "surrogatepass")
            path.write_bytes(data + (b"\xff\xfe" if bad_bytes and name.startswith("a") else b""))
        for name, text in flows.items():
            (root / "flows").mkdir(exist_ok=True)
            if text == "dir":
                (root / "flows" / name).mkdir()
            else:
                (root / "flows" / name).write_text(text, encoding="utf-8", errors="surrogatepass")
        project, findings = load_project(load_settings(root, env={}))
        assert_printable(findings, root)
        if not any(f.severity is Severity.ERROR for f in findings):
            assert_servable(project)


@settings(FUZZ, max_examples=80)
@given(text=settings_files())
def test_a_settings_file_loads_or_is_a_project_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "motia_py.toml").write_text(text, encoding="utf-8", errors="surrogatepass")
        (root / "steps").mkdir()
        (root / "steps" / "a.step.py").write_text(textwrap.dedent("""
            config = {"type": "api", "name": "A", "path": "/a", "flows": ["f"]}
            async def handler(req, ctx):
                return None
        """))
        try:
            s = load_settings(root, env={})
        except ProjectError as exc:
            str(exc).encode("utf-8", "backslashreplace")
            return
        assert isinstance(s, Settings)
        _, findings = load_project(s)
        assert_printable(findings, root)


@settings(FUZZ, max_examples=60)
@given(data=st.dictionaries(st.sampled_from(["description", "state_namespace", "entry_topics", "exit_topics",
                                              "entry_topic"]), values(2), max_size=4))
def test_a_flow_file_loads_or_is_a_finding(data: dict[str, Any]) -> None:
    from tests.fuzz_strategies import toml_value

    with tempfile.TemporaryDirectory() as tmp:
        flows = Path(tmp)
        (flows / "f.toml").write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in data.items()))
        loaded, problems = load_flows(flows)
        assert_printable(problems)
        assert set(loaded) | {p.file.stem for p in problems if p.file} == {"f"}
