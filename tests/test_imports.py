"""Each command imports only what it needs: checked in a subprocess, from its ``sys.modules``.

``motia-py start --no-http`` on a SQLite project loads no Redis client, no HTTP server, no networkx,
no croniter (no cron step), no jsonschema (no JSON-schema dict) and no prometheus_client (metrics off);
``motia-py validate`` loads none of them on a project without loops (networkx enumerates loops, when
there are some). A step's handler writes ``sys.modules``
out once the worker has booted and claimed it, then stops the worker.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from motia_py import Client

from .conftest import ProjectFactory

HEAVY = ["redis", "networkx", "jsonschema", "starlette", "uvicorn", "prometheus_client", "croniter", "watchfiles"]

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


async def test_start_without_http_on_sqlite_loads_no_heavy_module_it_does_not_use(
        make_project: ProjectFactory, tmp_path: Path) -> None:
    root = make_project(PROJECT)
    out = tmp_path / "start-modules.json"
    async with Client.from_project(root) as client:
        await client.emit("work", {"out": str(out)})

    proc = subprocess.run([sys.executable, "-m", "motia_py", "start", "--no-http", "--project", str(root)],
                          capture_output=True, text=True, timeout=60, cwd=root)

    assert proc.returncode == 0, proc.stderr
    modules = json.loads(out.read_text())
    assert "motia_py.worker" in modules and "motia_py.backends.sqlite" in modules  # the probe saw a worker
    assert sorted(set(HEAVY) & loaded(out)) == []


def test_validate_of_a_project_without_loops_loads_no_heavy_module(make_project: ProjectFactory,
                                                                    tmp_path: Path) -> None:
    root = make_project(PROJECT)
    (tmp_path / "probe.py").write_text(PROBE)
    out = tmp_path / "validate-modules.json"

    proc = subprocess.run([sys.executable, str(tmp_path / "probe.py"), str(out), "validate", "--project", str(root)],
                          capture_output=True, text=True, timeout=60, cwd=root)

    assert proc.returncode == 0, proc.stderr
    assert sorted(set(HEAVY) & loaded(out)) == []
    assert "motia_py.backends.sqlite" not in json.loads(out.read_text())  # validate never opens the backend


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
