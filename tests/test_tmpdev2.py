"""``motia-py dev`` as a real subprocess: edit files under tmp_path and see the running system follow."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import ProjectFactory
from .processes import lines, wait_until

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api_step(name: str, path: str, value: object) -> str:
    return textwrap.dedent(f"""
        config = {{"type": "api", "name": "{name}", "path": "{path}", "method": "GET", "emits": [], "flows": ["f"]}}
        async def handler(req, ctx):
            return {{"status": 200, "body": {{"v": {value!r}}}}}
    """)


class Dev:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.err = (root / "dev.log").open("w")
        env = {**os.environ, "MOTIA_PY_BACKEND_URL": "memory://"}
        self.proc = subprocess.Popen([sys.executable, "-m", "motia_py", "dev", "--port", str(self.port),
                                      "--project", str(root)], stdout=subprocess.DEVNULL, stderr=self.err,
                                     env=env, cwd=root)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5)
        wait_until(self.ready, 30, "the dev server", self.proc)  # type: ignore[arg-type]

    def ready(self) -> bool:
        try:
            self.client.get("/openapi.json")
        except httpx.TransportError:
            return False
        return True

    def log(self) -> str:
        return (self.root / "dev.log").read_text()

    def get(self, path: str) -> tuple[int, object]:
        r = self.client.get(path)
        return r.status_code, r.json() if r.content else None

    def write(self, rel: str, text: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))

    def until(self, path: str, expected: tuple[int, object], timeout: float = 10.0) -> None:
        try:
            wait_until(lambda: self.get(path) == expected, timeout, f"GET {path} == {expected}", self.proc)  # type: ignore[arg-type]
        except BaseException:
            print("LOG>>>", self.log(), "<<<", self.get(path))
            raise

    def close(self) -> int:
        self.client.close()
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=30)
        self.err.close()
        return code


@pytest.fixture
def dev(make_project: ProjectFactory) -> Iterator[Dev]:
    root = make_project({"steps/hello.step.py": api_step("Hello", "/hello", 1)})
    d = Dev(root)
    try:
        yield d
    finally:
        assert d.close() == 0, d.log()


def test_a_changed_handler_answers_with_its_new_code(dev: Dev) -> None:
    assert dev.get("/hello") == (200, {"v": 1})
    dev.write("steps/hello.step.py", api_step("Hello", "/hello", 2))
    dev.until("/hello", (200, {"v": 2}))
    assert "~ Hello" in dev.log()


def test_an_edited_helper_module_is_not_served_stale(dev: Dev) -> None:
    dev.write("services/__init__.py", "")
    dev.write("services/values.py", "VALUE = 'a'\n")
    dev.write("steps/hello.step.py", """
        from services.values import VALUE
        config = {"type": "api", "name": "Hello", "path": "/hello", "method": "GET", "emits": [], "flows": ["f"]}
        async def handler(req, ctx):
            return {"status": 200, "body": {"v": VALUE}}
    """)
    dev.until("/hello", (200, {"v": "a"}))
    dev.write("services/values.py", "VALUE = 'b'\n")  # same size, same second: must not hit a stale .pyc
    dev.until("/hello", (200, {"v": "b"}))


def test_added_and_deleted_steps_appear_and_disappear(dev: Dev) -> None:
    assert dev.get("/bye")[0] == 404
    dev.write("steps/bye.step.py", api_step("Bye", "/bye", "ciao"))
    dev.until("/bye", (200, {"v": "ciao"}))
    assert "+ Bye" in dev.log()
    (dev.root / "steps/bye.step.py").unlink()
    wait_until(lambda: dev.get("/bye")[0] == 404, 10, "the deleted route to go")
    assert "- Bye" in dev.log()


def test_a_broken_file_is_reported_and_the_last_good_version_keeps_serving(dev: Dev) -> None:
    dev.write("steps/hello.step.py", "config = {\n  'type': 'api',\n  oops\n")
    wait_until(lambda: "reload rejected" in dev.log(), 10, "the rejection")
    assert "steps/hello.step.py:" in dev.log()
    assert dev.get("/hello") == (200, {"v": 1})
    dev.write("steps/hello.step.py", api_step("Hello", "/hello", 3))
    dev.until("/hello", (200, {"v": 3}))


def test_non_python_files_and_the_state_dir_never_trigger_a_reload(dev: Dev) -> None:
    dev.write("notes.txt", "hello")
    dev.write(".motia/x.py", "x = 1")
    dev.write("steps/README.md", "# steps")
    dev.write("steps/hello.step.py", api_step("Hello", "/hello", 4))
    dev.until("/hello", (200, {"v": 4}))
    assert dev.log().count("reloaded in") == 1


def test_a_reload_in_the_middle_of_a_stream_of_events_loses_none(make_project: ProjectFactory) -> None:
    root = make_project({
        "flows/f.toml": 'description = "stream"\n',
        "steps/ingest.step.py": """
            config = {"type": "api", "name": "Ingest", "path": "/ingest/:i", "method": "POST",
                      "emits": ["item"], "flows": ["f"]}
            async def handler(req, ctx):
                await ctx.emit("item", {"i": int(req.pathParams["i"])})
                return {"status": 202, "body": {}}
        """,
        "steps/sink.step.py": """
            import asyncio
            from pathlib import Path
            OUT = Path(__file__).resolve().parents[1] / "handled.log"
            VERSION = 1
            config = {"type": "event", "name": "Sink", "subscribes": ["item"], "emits": [], "flows": ["f"]}
            async def handler(input, ctx):
                await asyncio.sleep(0.01)
                with OUT.open("a") as f:
                    f.write(f"{input['i']} v{VERSION}\\n")
        """,
    })
    d = Dev(root)
    try:
        sink = (root / "steps/sink.step.py").read_text()
        for i in range(300):
            r = d.client.post(f"/ingest/{i}")
            assert r.status_code == 202, r.text  # the port answers throughout
            if i in (50, 150, 250):
                (root / "steps/sink.step.py").write_text(sink.replace("VERSION = 1", f"VERSION = {i}"))
            time.sleep(0.003)
        handled = root / "handled.log"
        wait_until(lambda: len(lines(handled)) >= 300, 30, "300 events to be handled", d.proc)  # type: ignore[arg-type]
        time.sleep(0.3)  # nothing more may arrive: each event exactly once
        got = [int(x.split()[0]) for x in lines(handled)]
        assert sorted(got) == list(range(300))
        assert {x.split()[1] for x in lines(handled)} > {"v1"}  # new code took over mid-stream
    finally:
        assert d.close() == 0, d.log()


def test_dev_reports_a_broken_project_at_start_and_serves_once_fixed(make_project: ProjectFactory) -> None:
    root = make_project({"steps/hello.step.py": "config = {'type': 'api', 'name': 'Hello'}\n"
                                                "async def handler(req, ctx): pass\n"})
    d = Dev(root)
    try:
        assert "path" in d.log() and "hello.step.py" in d.log()
        assert d.get("/hello")[0] == 404
        d.write("steps/hello.step.py", api_step("Hello", "/hello", "fixed"))
        d.until("/hello", (200, {"v": "fixed"}))
    finally:
        assert d.close() == 0, d.log()


