"""The event loop of ``start`` and ``dev``: uvloop when installed (``auto``), or the one asked for."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from motia_py.loops import loop_name, run_on

from .processes import start_process, stop, wait_started, wait_until


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_auto_and_uvloop_run_on_uvloop_and_asyncio_on_asyncios_own_loop() -> None:
    pytest.importorskip("uvloop")  # a dependency on Linux and macOS: installed wherever the suite runs
    assert loop_name("auto") == "uvloop"
    assert run_on("auto", _loop_module()).startswith("uvloop")
    assert run_on("uvloop", _loop_module()).startswith("uvloop")
    assert run_on("asyncio", _loop_module()).startswith("asyncio")


def test_asking_for_uvloop_where_it_is_missing_is_a_clear_error(tmp_path: Path) -> None:
    # A Python that cannot import uvloop (a module named uvloop that is None in sys.modules fails to import).
    code = ("import sys; sys.modules['uvloop'] = None\n"
            "from motia_py.loops import loop_name\n"
            "print(loop_name('auto'))\n"
            "loop_name('uvloop')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "asyncio"
    assert "ProjectError: [worker] event_loop = 'uvloop' but uvloop is not installed" in out.stderr


@pytest.mark.parametrize("choice", ["uvloop", "asyncio"])
def test_a_started_worker_runs_its_handlers_on_the_chosen_loop(tmp_path: Path, choice: str) -> None:
    pytest.importorskip("uvloop")
    (tmp_path / "steps").mkdir()
    (tmp_path / "steps" / "which.step.py").write_text(textwrap.dedent("""
        import asyncio
        from pathlib import Path
        config = {"type": "event", "name": "Which", "subscribes": ["which"], "emits": [], "flows": ["which"]}
        async def handler(data, ctx):
            Path("loop.txt").write_text(type(asyncio.get_running_loop()).__module__)
    """))
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "which.toml").write_text('entry_topics = ["which"]\n')
    url = f"sqlite:///{tmp_path / 'motia.db'}"
    proc = start_process(tmp_path, "--no-http", env={"MOTIA_PY_BACKEND_URL": url, "MOTIA_PY_EVENT_LOOP": choice})
    try:
        wait_started(proc)
        subprocess.run([sys.executable, "-m", "motia_py", "emit", "which", "--data", "{}", "--project", str(tmp_path),
                        "--backend", url], check=True, capture_output=True, timeout=60)
        wait_until(lambda: (tmp_path / "loop.txt").exists(), 30, "the handler to run", proc)
    finally:
        assert stop(proc) == 0
    assert (tmp_path / "loop.txt").read_text().startswith(choice)
