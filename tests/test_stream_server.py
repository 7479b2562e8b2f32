"""The stream server end to end: a real HTTP server, real WebSocket clients, the authenticate hook and
``canAccess``, on the memory and SQLite backends (Redis: see test_stream_processes.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from motia_py.errors import MotiaError
from motia_py.http import start_server
from motia_py.runtime import Runtime, backend_for, load_project, require_valid
from motia_py.settings import load_settings
from motia_py.stream_ws import install_streams
from motia_py.streams_client import StreamClient, StreamClientError

from .conftest import ProjectFactory

FILES = {
    "steps/notes.stream.py": """
        config = {
            "name": "notes",
            "schema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
            "baseConfig": {"storageType": "default"},
            "canAccess": lambda sub, auth: sub["groupId"] == "public" or (auth or {}).get("user") == "alice",
        }
    """,
    "steps/write_note.step.py": """
        config = {"type": "api", "name": "WriteNote", "path": "/notes/:group/:id", "method": "POST", "emits": [],
                  "flows": ["notes"]}

        async def handler(req, ctx):
            group, note = req.pathParams["group"], req.pathParams["id"]
            if req.body.get("delete"):
                return {"status": 200, "body": await ctx.streams.notes.delete(group, note)}
            if req.body.get("event"):
                await ctx.streams.notes.send({"groupId": group}, {"type": "typing", "data": req.body["event"]})
                return {"status": 202, "body": {}}
            return {"status": 200, "body": await ctx.streams.notes.set(group, note, {"text": req.body["text"]})}
    """,
    "stream_auth.py": """
        async def authenticate(request):
            token = request["query"].get("authToken") or request["headers"].get("sec-websocket-protocol", "")
            token = token.replace("Authorization,", "").strip()
            if token == "bad":
                raise PermissionError("unknown token")
            return {"user": token} if token else None
    """,
    "motia_py.toml": '[backend]\nurl = "memory://"\n[streams]\nauthenticate = "stream_auth:authenticate"\n',
}


@contextlib.asynccontextmanager
async def serving(root: Path, backend_url: str = "memory://") -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    settings = load_settings(root, flags={"backend_url": backend_url}, env={})
    project, findings = load_project(settings)
    require_valid(project, findings)
    async with Runtime(project, backend_for(settings), cron=False, poll_s=0.05) as rt:
        server = await start_server(rt.router, settings, dev=True, port=0)
        try:
            await install_streams(server.app, rt, settings)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as http:
                yield f"ws://127.0.0.1:{server.port}", http
        finally:
            await server.stop()


@pytest.mark.parametrize("backend_url", ["memory://", "sqlite:///.motia/motia.db"])
async def test_clients_see_sync_then_create_update_delete_and_events(make_project: ProjectFactory,
                                                                     backend_url: str) -> None:
    async with serving(make_project(FILES), backend_url) as (ws, http), StreamClient(ws) as client:
        group = await client.subscribe_group("notes", "public")
        item = await client.subscribe_item("notes", "public", "n1")
        assert (await group.next())["event"] == {"type": "sync", "data": []}

        assert (await http.post("/notes/public/n1", json={"text": "hello"})).json() == {"text": "hello", "id": "n1"}
        await http.post("/notes/public/n1", json={"text": "hello again"})
        await http.post("/notes/public/n1", json={"delete": True})
        await http.post("/notes/public/x", json={"event": {"who": "bob"}})

        kinds = [(await group.next())["event"]["type"] for _ in range(4)]
        assert kinds == ["create", "update", "delete", "event"]
        assert [(await item.next())["event"]["type"] for _ in range(4)] == ["sync", "create", "update", "delete"]
        assert group.events == [{"type": "typing", "data": {"who": "bob"}}]
        assert group.messages[2]["event"]["data"] == {"text": "hello again", "id": "n1"}
        assert group.messages[1]["streamName"] == "notes" and group.messages[1]["groupId"] == "public"


async def test_a_client_in_both_the_group_and_the_item_gets_each_message_once(make_project: ProjectFactory) -> None:
    async with serving(make_project(FILES)) as (ws, http), StreamClient(ws) as client:
        group = await client.subscribe_group("notes", "public")
        await group.next()
        item = await client.subscribe_item("notes", "public", "n1")
        await item.next()
        await http.post("/notes/public/n1", json={"text": "once"})
        await group.wait_for(lambda m: m["event"]["type"] == "create")
        assert client.received == 3  # two syncs and one create (routed to both subscriptions)
        assert [m["event"]["type"] for m in item.messages] == ["sync", "create"]


async def test_authenticate_and_can_access_decide_who_joins(make_project: ProjectFactory) -> None:
    async with serving(make_project(FILES)) as (ws, http):
        await http.post("/notes/private/p1", json={"text": "secret"})
        async with StreamClient(ws) as anonymous:
            refused = await anonymous.subscribe_group("notes", "private")
            error = await refused.next()
            assert error["event"] == {"type": "event", "event": {"type": "error", "data": {
                "code": "STREAM_ACCESS_DENIED", "message": "access denied to stream 'notes', group 'private'"}}}
            await http.post("/notes/private/p2", json={"text": "still secret"})
            public = await anonymous.subscribe_group("notes", "public")
            await public.next()
            assert refused.state == [] and len(refused.messages) == 1
        async with StreamClient(ws + "/?authToken=alice") as alice:
            allowed = await alice.subscribe_item("notes", "private", "p1")
            assert (await allowed.next())["event"]["data"] == {"text": "secret", "id": "p1"}
        async with StreamClient(ws, subprotocols=["Authorization", "alice"]) as by_protocol:
            assert by_protocol._ws.subprotocol == "Authorization"  # the first offered one is accepted
            group = await by_protocol.subscribe_group("notes", "private")
            assert len((await group.next())["event"]["data"]) == 2
        with pytest.raises(StreamClientError, match=r"HTTP 401 .*authentication failed: unknown token"):
            await StreamClient(ws + "/?authToken=bad").connect()


async def test_an_authenticate_hook_that_cannot_be_imported_fails_the_start(make_project: ProjectFactory) -> None:
    files = {**FILES, "motia_py.toml": '[streams]\nauthenticate = "stream_auth:authentcate"\n'}
    with pytest.raises(MotiaError, match="has no function 'authentcate'"):
        async with serving(make_project(files)):
            pass


async def test_malformed_client_messages_are_ignored_and_the_connection_stays(make_project: ProjectFactory) -> None:
    async with serving(make_project(FILES)) as (ws, _http), StreamClient(ws) as client:
        await client._send("not json")
        await client._send('{"type": "dance"}')
        await client._send('{"type": "join", "data": {"groupId": "public"}}')
        group = await client.subscribe_group("notes", "public")
        await group.wait_for(lambda m: m["event"]["type"] == "sync")
