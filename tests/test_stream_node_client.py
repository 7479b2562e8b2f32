"""Motia's own Node client (``@motiadev/stream-client-node``, installed from the npm registry into a temp dir)
against a running ``motia-py dev``: an item and a group subscription see sync, then create, update and delete.

Skipped where npm is absent, except in CI (``CI`` set), where a missing npm fails the test.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from .conftest import ProjectFactory

pytestmark = pytest.mark.slow

WATCH_JS = """
import { Stream } from '@motiadev/stream-client-node'

const [url, stream, group, item] = process.argv.slice(2)
const client = new Stream(url)
const tap = (name, sub) => {
  const original = sub.listener.bind(sub)
  sub.listener = (message) => {
    original(message)
    console.log(JSON.stringify({ sub: name, type: message.event.type, state: sub.getState() }))
  }
}
tap('item', client.subscribeItem(stream, group, item))
tap('group', client.subscribeGroup(stream, group))
process.stdin.on('end', () => { client.close(); process.exit(0) })
process.stdin.resume()
"""

FILES = {
    "motia_py.toml": '[backend]\nurl = "sqlite:///.motia/motia.db"\n',
    "steps/todo_stream.py": """
        config = {"name": "todo", "schema": {"type": "object", "properties": {"title": {"type": "string"}}},
                  "baseConfig": {"storageType": "default"}}
    """,
    "steps/todo_api.step.py": """
        config = {"type": "api", "name": "Todo", "path": "/todo/:id", "method": "POST", "emits": [], "flows": ["t"]}

        async def handler(req, ctx):
            todo_id = req.pathParams["id"]
            if req.body.get("delete"):
                return {"status": 200, "body": await ctx.streams.todo.delete("inbox", todo_id)}
            return {"status": 200, "body": await ctx.streams.todo.set("inbox", todo_id, {"title": req.body["title"]})}
    """,
}


@pytest.fixture(scope="module")
def node_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but npm/node are missing: the Motia Node client test needs them")
        pytest.skip("npm is not installed")
    folder = tmp_path_factory.mktemp("stream-client-node")
    (folder / "package.json").write_text('{"name": "probe", "private": true, "type": "module"}\n')
    subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error", "@motiadev/stream-client-node"],
                   cwd=folder, check=True, timeout=300, stdout=subprocess.DEVNULL)
    (folder / "watch.mjs").write_text(WATCH_JS)
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def dev_server(make_project: ProjectFactory) -> Iterator[int]:
    root = make_project(FILES)
    port = _free_port()
    log = (root / "dev.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "motia_py", "dev", "--port", str(port), "--project", str(root)],
                            stdout=subprocess.DEVNULL, stderr=log, cwd=root)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, (root / "dev.log").read_text()
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


@pytest_asyncio.fixture
async def watcher(node_client: Path, dev_server: int) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        "node", str(node_client / "watch.mjs"), f"ws://127.0.0.1:{dev_server}", "todo", "inbox", "t1",
        cwd=node_client, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    yield proc
    assert proc.stdin is not None
    proc.stdin.close()
    await asyncio.wait_for(proc.wait(), 10)


async def lines_until(proc: asyncio.subprocess.Process, seen: list[dict[str, Any]], count: int) -> None:
    assert proc.stdout is not None
    while len(seen) < count:
        line = await asyncio.wait_for(proc.stdout.readline(), 15)
        assert line, f"the node client exited; it printed {seen}"
        seen.append(json.loads(line))


async def test_motias_node_client_sees_sync_create_update_delete(watcher: asyncio.subprocess.Process,
                                                                 dev_server: int) -> None:
    seen: list[dict[str, Any]] = []
    await lines_until(watcher, seen, 2)  # both syncs
    assert sorted((s["sub"], s["type"]) for s in seen) == [("group", "sync"), ("item", "sync")]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{dev_server}", timeout=10) as http:
        for body in ({"title": "buy milk"}, {"title": "buy oat milk"}, {"delete": True}):
            assert (await http.post("/todo/t1", json=body)).status_code == 200
            await lines_until(watcher, seen, len(seen) + 2)  # the item and the group subscription
    for sub in ("item", "group"):
        assert [s["type"] for s in seen if s["sub"] == sub] == ["sync", "create", "update", "delete"]
    item_states = [s["state"] for s in seen if s["sub"] == "item"]
    group_states = [s["state"] for s in seen if s["sub"] == "group"]
    assert item_states == [None, {"title": "buy milk", "id": "t1"}, {"title": "buy oat milk", "id": "t1"}, None]
    assert group_states == [[], [{"title": "buy milk", "id": "t1"}], [{"title": "buy oat milk", "id": "t1"}], []]
