"""Each command imports only what it needs: checked in a subprocess, from its ``sys.modules``.

``motia-py start --no-http`` on a SQLite project loads no Redis client, no HTTP server, no networkx,
no croniter (no cron step), no jsonschema (no JSON-schema dict), no prometheus_client (metrics off),
no pydantic (dict configs), no Motia 1.0 SDK, no ``importlib.metadata`` and no other command's module;
``motia-py validate`` loads none of them on a project without loops (networkx enumerates loops, when
there are some), and neither asyncio nor the runtime nor a backend. ``motia-py start`` serving HTTP
loads neither Prometheus' client nor the Workbench while they are off. ``import motia_py`` and ``import
motia_py.cli`` stay light. A step's handler writes ``sys.modules`` out once the worker has booted and
claimed it, then stops the worker.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from motia_py import Client

from .conftest import ProjectFactory

HEAVY = ["redis", "networkx", "jsonschema", "starlette", "uvicorn", "prometheus_client", "croniter", "watchfiles",
         "pydantic", "dotenv", "motia"]
"""Top-level packages (``motia`` is the Motia 1.0 SDK's name)."""
NOT_FOR_START = ["importlib.metadata", "zoneinfo", "difflib", "motia_py.motia_compat", "motia_py.typed_config",
                 "motia_py.cli_emit", "motia_py.cli_cron", "motia_py.cli_handles", "motia_py.cli_project",
                 "motia_py.http"]
NOT_FOR_VALIDATE = ["asyncio", "motia_py.runtime", "motia_py.router", "motia_py.backends.compose",
                    "motia_py.backends.sqlite", "motia_py.cli_run"]

PROJECT = {
    "motia_py.toml": '[backend]\nurl = "sqlite:///.motia/motia.db"\n',
    "flows/f.toml": 'entry_topics = ["work"]\n',
    "steps/work.step.py": """
        import json, os, signal, sys
        from pathlib import Path
        config = {"type": "event", "name": "Work", "subscribes": ["work"], "emits": [], "flows": ["f"]}
        async def handler(input, ctx):
            Path(input["out"]).write_text(json.dumps(sorted(sys.modules)))
            os.kill(os.getpid(), signal.SIGTERM)
    """,
}

PROBE = textwrap.dedent("""
    import atexit, json, runpy, sys
    out = sys.argv[1]
    sys.argv = ["motia-py", *sys.argv[2:]]
    atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
    runpy.run_module("motia_py", run_name="__main__")
""")


def loaded(out: Path) -> set[str]:
    """The top-level packages among the modules written to ``out``."""
    return {m.split(".")[0] for m in json.loads(out.read_text())}


async def modules_of_start(root: Path, out: Path, *options: str) -> list[str]:
    """The modules of ``motia-py start OPTIONS`` on ``root`` once its worker ran an event (see ``PROJECT``)."""
    async with Client.from_project(root) as client:
        await client.emit("work", {"out": str(out)})

    proc = subprocess.run([sys.executable, "-m", "motia_py", "start", *options, "--project", str(root)],
                          capture_output=True, text=True, timeout=60, cwd=root)

    assert proc.returncode == 0, proc.stderr
    modules: list[str] = json.loads(out.read_text())
    return modules


async def test_start_without_http_on_sqlite_loads_no_heavy_module_it_does_not_use(
        make_project: ProjectFactory, tmp_path: Path) -> None:
    out = tmp_path / "start-modules.json"
    modules = await modules_of_start(make_project(PROJECT), out, "--no-http")

    assert "motia_py.worker" in modules and "motia_py.backends.sqlite" in modules  # the probe saw a worker
    assert sorted(set(HEAVY) & loaded(out)) == []
    assert sorted(set(NOT_FOR_START) & set(modules)) == []


async def test_start_with_http_loads_neither_metrics_nor_workbench_while_they_are_off(
        make_project: ProjectFactory, tmp_path: Path) -> None:
    out = tmp_path / "start-modules.json"
    modules = await modules_of_start(make_project(PROJECT), out, "--port", "0")

    assert "motia_py.http" in modules and "uvicorn" in loaded(out)  # the probe saw the HTTP server
    assert sorted({"prometheus_client", "motia_py.metrics", "motia_py.workbench"} & set(modules)) == []


def test_validate_of_a_project_without_loops_loads_no_heavy_module(make_project: ProjectFactory,
                                                                    tmp_path: Path) -> None:
    root = make_project(PROJECT)
    (tmp_path / "probe.py").write_text(PROBE)
    out = tmp_path / "validate-modules.json"

    proc = subprocess.run([sys.executable, str(tmp_path / "probe.py"), str(out), "validate", "--project", str(root)],
                          capture_output=True, text=True, timeout=60, cwd=root)

    assert proc.returncode == 0, proc.stderr
    assert sorted(set(HEAVY) & loaded(out)) == []
    assert sorted(set(NOT_FOR_VALIDATE) & set(json.loads(out.read_text()))) == []  # nor opens the backend


def test_a_json_schema_input_brings_jsonschema_and_a_loop_networkx(make_project: ProjectFactory,
                                                                    tmp_path: Path) -> None:
    root = make_project({**PROJECT, "steps/work.step.py": PROJECT["steps/work.step.py"].replace(
        '"emits": [], "flows": ["f"]}', '"emits": ["work"], "flows": ["f"], "input": {"type": "object"}}')})
    (tmp_path / "probe.py").write_text(PROBE)
    out = tmp_path / "validate-modules.json"

    proc = subprocess.run([sys.executable, str(tmp_path / "probe.py"), str(out), "validate", "--project", str(root)],
                          capture_output=True, text=True, timeout=60, cwd=root)

    assert proc.returncode == 0, proc.stderr
    assert {"jsonschema", "networkx"} <= loaded(out)
    assert "cycle" in proc.stdout


def modules_after(code: str) -> set[str]:
    """``sys.modules`` of a fresh interpreter that ran ``code``."""
    proc = subprocess.run([sys.executable, "-c", f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
                          capture_output=True, text=True, timeout=60, check=True)
    return set(json.loads(proc.stdout))


def test_importing_motia_py_and_its_cli_stays_light() -> None:
    package = modules_after("import motia_py")
    assert sorted({"pydantic", "asyncio", "click", "motia_py.config", "motia_py.backends"} & package) == []
    cli = modules_after("import motia_py.cli")
    assert sorted({"pydantic", "asyncio", "motia_py.runtime", "motia_py.backends", "motia_py.cli_run",
                   "motia_py.cli_project"} & cli) == []


def test_a_typed_config_brings_pydantic_when_used() -> None:
    assert "pydantic" in modules_after("from motia_py import EventConfig")
    assert "pydantic" in modules_after("from motia_py.config import CronConfig")


CHECKED = {
    "steps/tick.step.py": """
        config = {"type": "cron", "name": "Tick", "cron": "*/5 * * * *", "emits": [], "flows": ["f"]}
        async def handler(ctx):
            pass
    """,
    "steps/api.step.py": """
        config = {"type": "api", "name": "Api", "path": "/x", "method": "GET", "emits": [], "flows": ["f"],
                  "queryParams": [{"name": "n", "schema": {"type": "integer"}, "default": 5}],
                  "responseSchema": {200: {"type": "object", "properties": {"n": {"type": "integer"}}}}}
        async def handler(req, ctx):
            return {"status": 200, "body": {"n": 1}}
    """,
}


def validate_modules(root: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``motia-py validate --json`` on ``root``; return it and the top-level packages it loaded."""
    (tmp_path / "probe.py").write_text(PROBE)
    out = tmp_path / "validate-modules.json"
    proc = subprocess.run([sys.executable, str(tmp_path / "probe.py"), str(out), "validate", "--json", "--project",
                           str(root)], capture_output=True, text=True, timeout=60, cwd=root)
    return proc, loaded(out)


def test_schemas_and_cron_expressions_checked_once_are_not_checked_again_until_they_change(
        make_project: ProjectFactory, tmp_path: Path) -> None:
    root = make_project({**PROJECT, **CHECKED})

    first, loaded_first = validate_modules(root, tmp_path)
    again, loaded_again = validate_modules(root, tmp_path)

    assert {"jsonschema", "croniter"} <= loaded_first
    assert sorted({"jsonschema", "croniter"} & loaded_again) == []  # remembered in .motia/checks.json
    assert (root / ".motia" / "checks.json").is_file()
    assert json.loads(first.stdout) == json.loads(again.stdout)

    api = root / "steps/api.step.py"
    api.write_text(api.read_text().replace('"default": 5', '"default": "five"'))
    (root / "steps/tick.step.py").write_text((root / "steps/tick.step.py").read_text().replace("*/5", "* * 32"))
    changed, _ = validate_modules(root, tmp_path)
    api.write_text(api.read_text().replace('"default": "five"', '"default": 5').replace('"object"', '"objekt"'))
    changed_schema, _ = validate_modules(root, tmp_path)

    messages = {f["code"]: f["message"] for f in json.loads(changed.stdout)["findings"]}
    assert changed.returncode == 1 and set(messages) == {"invalid-config", "invalid-cron"}
    assert "default' fails its schema" in messages["invalid-config"]
    [finding] = [f for f in json.loads(changed_schema.stdout)["findings"] if f["step"] == "Api"]
    assert "is not a valid JSON schema" in finding["message"]


def test_the_check_cache_keys_only_plain_json_values() -> None:
    from motia_py.check_cache import key_of

    assert key_of({"type": "array", "items": [1]}) != key_of({"type": "array", "items": ["1"]})
    assert key_of({"required": ("a",)}) is None  # a tuple is not remembered: it is always checked
    assert key_of({1: "a"}) != key_of({"1": "a"})
    assert key_of({"a": True}) != key_of({"a": 1})
    cyclic: list[object] = []
    cyclic.append(cyclic)
    assert key_of([{"type": "array"}, cyclic]) is None


def test_the_builtin_backends_are_found_without_entry_points_as_pyproject_registers_them() -> None:
    from importlib.metadata import entry_points

    from motia_py.backends.compose import atomic_transactions
    from motia_py.backends.registry import BUILTIN, BackendOptions, create_backend

    registered = {ep.name: ep.value for ep in entry_points(group="motia_py.backends")}
    assert {name: registered.get(name) for name in BUILTIN} == BUILTIN
    for scheme in BUILTIN:  # validate trusts them to commit transactional steps atomically
        url = {"memory": "memory://", "sqlite": "sqlite:///x.db"}.get(scheme, f"{scheme}://localhost/0")
        assert atomic_transactions(create_backend(url, BackendOptions(root=Path("/nonexistent"))))
