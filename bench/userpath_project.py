"""The projects of the users'-path benchmark and the worker processes that run them.

- the *harness project*: the workload of ``../shared/bench-peers`` (a no-op step and a chain A->B->C),
  with marks (:mod:`bench.marks`) instead of Redis timing keys;
- *idle projects*: N no-op steps, each on its own topic, for idle CPU, memory and connections;
- the *example app* (this repository's ``steps/``, ``flows/``, ``services/``) for boot and memory.

Workers are real ``motia-py start --no-http`` processes (``python -m motia_py``), each in a session of
its own so that it (and the children of ``--workers N``) can be stopped by its process group.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FRAMEWORK = REPO / "framework"

HARNESS_STEPS = {
    "steps/noop.step.py": """
        from bench import marks
        config = {"type": "event", "name": "Noop", "subscribes": ["noop"], "emits": [], "flows": ["bench"]}
        async def handler(data, ctx):
            marks.hit()
    """,
    "steps/chain_a.step.py": """
        config = {"type": "event", "name": "ChainA", "subscribes": ["ca"], "emits": ["cb"], "flows": ["bench"]}
        async def handler(data, ctx):
            await ctx.emit("cb", data)
    """,
    "steps/chain_b.step.py": """
        config = {"type": "event", "name": "ChainB", "subscribes": ["cb"], "emits": ["cc"], "flows": ["bench"]}
        async def handler(data, ctx):
            await ctx.emit("cc", data)
    """,
    "steps/chain_c.step.py": """
        from bench import marks
        config = {"type": "event", "name": "ChainC", "subscribes": ["cc"], "emits": [], "flows": ["bench"]}
        async def handler(data, ctx):
            marks.chain_done(data["t0"])
    """,
}


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))


def _toml(url: str, prefix: str) -> str:
    return f'[backend]\nurl = "{url}"\nprefix = "{prefix}"\n'  # everything else at its default, as users run


def write_harness_project(root: Path, url: str, prefix: str) -> None:
    """The peer harness's workload (no-op job, chain A->B->C) as a project at ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "motia_py.toml").write_text(_toml(url, prefix))
    _write(root, {**HARNESS_STEPS, "flows/bench.toml": 'entry_topics = ["noop", "ca"]\n'})


def write_idle_project(root: Path, url: str, prefix: str, steps: int) -> None:
    """``steps`` no-op event steps, each subscribed to a topic of its own (``t0``, ``t1``, ...)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "motia_py.toml").write_text(_toml(url, prefix))
    files = {f"steps/s{i}.step.py": f"""
        from bench import marks
        config = {{"type": "event", "name": "S{i}", "subscribes": ["t{i}"], "emits": [], "flows": ["idle"]}}
        async def handler(data, ctx):
            marks.hit()
    """ for i in range(steps)}
    topics = ", ".join(f'"t{i}"' for i in range(steps))
    _write(root, {**files, "flows/idle.toml": f"entry_topics = [{topics}]\n"})


def copy_example_app(root: Path, url: str) -> None:
    """This repository's example application, on its own backend URL."""
    root.mkdir(parents=True, exist_ok=True)
    for part in ("steps", "flows", "services"):
        shutil.copytree(REPO / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    text = (REPO / "motia_py.toml").read_text().replace('url = "sqlite:///.motia/motia.db"', f'url = "{url}"')
    (root / "motia_py.toml").write_text(text)


def env(marks_file: Path | None = None, udp_port: int | None = None) -> dict[str, str]:
    """The environment of a worker process: this checkout importable, the marks' addresses."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(FRAMEWORK), str(REPO), e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    e.pop("MOTIA_PY_BACKEND_URL", None)
    e["MOTIA_PY_LOG_LEVEL"] = "warning"
    if marks_file is not None:
        e["BENCH_MARKS"] = str(marks_file)
    if udp_port is not None:
        e["BENCH_UDP"] = str(udp_port)
    return e


class WorkerProcess:
    """``motia-py start --no-http`` on a project, started now (``spawned_at`` is its wall-clock start)."""

    def __init__(self, project: Path, environ: dict[str, str], *, workers: int = 1, cron: bool = True,
                 stderr: int | None = None) -> None:
        argv = [sys.executable, "-m", "motia_py", "start", "--no-http", "--project", str(project)]
        if workers > 1:
            argv += ["--workers", str(workers)]
        if not cron:
            argv.append("--no-cron")
        self.log = project / "worker.log"  # its stderr, unless piped
        self.spawned_at = time.time()
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(argv, cwd=project, env=environ, stdout=subprocess.DEVNULL,
                                         stderr=log if stderr is None else stderr, start_new_session=True)

    def log_tail(self, lines: int = 30) -> str:
        """The end of its stderr (for a failed run's report)."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self.proc.pid

    def stop(self) -> None:
        """SIGTERM its process group (it is the group's leader), then SIGKILL after 15 s."""
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass
