"""Stream files, ``ctx.streams`` in handlers and the hub's protocol, in-process through the Harness."""

from __future__ import annotations

from pathlib import Path

import pytest

from motia_py.discovery import discover
from motia_py.graph import validate
from motia_py.settings import load_settings
from motia_py.streams_client import Subscription
from motia_py.testing import Harness

from .conftest import ProjectFactory

TODO_STREAM = """
from pydantic import BaseModel

class Todo(BaseModel):
    id: str
    title: str
    done: bool = False

config = {"name": "todo", "schema": Todo, "baseConfig": {"storageType": "default"},
          "canAccess": lambda sub, auth: sub["groupId"] != "secret" or auth == "admin"}
"""

WRITER = """
config = {"type": "event", "name": "Writer", "subscribes": ["todo.op"], "emits": [], "flows": ["f"]}

async def handler(input, ctx):
    todo = ctx.streams.todo
    op = input["op"]
    if op == "set":
        stored = await todo.set(input["group"], input["id"], input["data"])
        await ctx.state.set("results", input["id"], stored)
    elif op == "delete":
        await ctx.state.set("results", "deleted", await todo.delete(input["group"], input["id"]))
    elif op == "send":
        await todo.send(input["channel"], {"type": "ping", "data": input["data"]})
    elif op == "read":
        await ctx.state.set("results", "read", {"one": await todo.get(input["group"], input["id"]),
                                                "all": await ctx.streams["todo"].getGroup(input["group"])})
"""

SYNC_WRITER = """
config = {"type": "event", "name": "SyncWriter", "subscribes": ["todo.sync"], "emits": [], "flows": ["f"]}

def handler(input, ctx):
    ctx.streams.todo.set("inbox", input["id"], {"title": "from a thread"})
    ctx.state.set("results", "sync", ctx.streams.todo.get_group("inbox"))
"""

FLOW = 'entry_topics = ["todo.op", "todo.sync"]\n'


@pytest.fixture
def project(make_project: ProjectFactory) -> Path:
    return make_project({"steps/todo.stream.py": TODO_STREAM, "steps/writer.step.py": WRITER,
                         "steps/sync_writer_step.py": SYNC_WRITER, "flows/f.toml": FLOW})


async def op(h: Harness, **data: object) -> None:
    await h.emit("todo.op", data)
    await h.run_until_idle()


async def test_handlers_set_get_and_delete_items_that_subscribers_see_live(project: Path) -> None:
    async with Harness(project) as h:
        group: Subscription = await h.subscribe("todo", "inbox")
        item = await h.subscribe("todo", "inbox", "t1")
        assert (await group.next())["event"] == {"type": "sync", "data": []}
        assert (await item.next())["event"] == {"type": "sync", "data": None}  # absent, and said so

        await op(h, op="set", group="inbox", id="t1", data={"title": "write docs"})
        await op(h, op="set", group="inbox", id="t1", data={"title": "write docs", "done": True})
        await op(h, op="delete", group="inbox", id="t1")

        kinds = [(m["event"]["type"], m["id"]) for m in group.messages[1:]]
        assert kinds == [("create", "t1"), ("update", "t1"), ("delete", "t1")]
        assert [m["event"]["type"] for m in item.messages[1:]] == ["create", "update", "delete"]
        assert group.messages[2]["event"]["data"] == {"id": "t1", "title": "write docs", "done": True}
        assert group.state == [] and item.state is None
        results = h.state("f")
        assert await results.get("results", "t1") == {"id": "t1", "title": "write docs", "done": True}
        assert await results.get("results", "deleted") == {"id": "t1", "title": "write docs", "done": True}
        stamps = [m["timestamp"] for m in group.messages]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


async def test_a_join_gets_a_sync_of_what_is_stored(project: Path) -> None:
    async with Harness(project) as h:
        await h.streams.todo.set("inbox", "b", {"title": "B"})
        await h.streams.todo.set("inbox", "a", {"title": "A"})
        await h.streams.todo.set("other", "c", {"title": "C"})
        group = await h.subscribe("todo", "inbox")
        item = await h.subscribe("todo", "inbox", "a")
        sync = (await group.next())["event"]
        assert sync == {"type": "sync", "data": [{"id": "a", "title": "A", "done": False},
                                                 {"id": "b", "title": "B", "done": False}]}
        assert (await item.next())["event"] == {"type": "sync", "data": {"id": "a", "title": "A", "done": False}}
        await op(h, op="read", group="inbox", id="b")
        read = await h.state("f").get("results", "read")
        assert read["one"] == {"id": "b", "title": "B", "done": False} and len(read["all"]) == 2


async def test_changes_to_other_groups_and_items_are_not_delivered(project: Path) -> None:
    async with Harness(project) as h:
        item = await h.subscribe("todo", "inbox", "t1")
        group = await h.subscribe("todo", "inbox")
        await group.next()
        await h.streams.todo.set("inbox", "t2", {"title": "other item"})
        await h.streams.todo.set("elsewhere", "t1", {"title": "other group"})
        await group.wait_for(lambda m: m["event"]["type"] == "create")
        assert [m["event"]["type"] for m in item.messages] == ["sync"]
        assert [m["id"] for m in group.messages[1:]] == ["t2"]


async def test_custom_events_reach_the_group_or_the_item(project: Path) -> None:
    async with Harness(project) as h:
        group = await h.subscribe("todo", "inbox")
        item = await h.subscribe("todo", "inbox", "t1")
        other = await h.subscribe("todo", "inbox", "t2")
        await op(h, op="send", channel={"groupId": "inbox"}, data={"to": "group"})
        await op(h, op="send", channel={"groupId": "inbox", "id": "t1"}, data={"to": "item"})
        assert [e["data"]["to"] for e in group.events] == ["group", "item"]
        assert item.events == [{"type": "ping", "data": {"to": "item"}}]
        assert other.events == []


async def test_set_validates_the_item_against_the_schema(project: Path) -> None:
    async with Harness(project) as h:
        await h.emit("todo.op", {"op": "set", "group": "inbox", "id": "t1", "data": {"title": 5}})
        await h.run_until_idle()
        dead = await h.dead_letters()
        assert len(dead) == 1 and "stream 'todo': the item fails its schema" in dead[0].error
        assert await h.streams.todo.get("inbox", "t1") is None


async def test_plain_def_handlers_use_the_same_streams(project: Path) -> None:
    async with Harness(project) as h:
        group = await h.subscribe("todo", "inbox")
        await h.emit("todo.sync", {"id": "s1"})
        await h.run_until_idle()
        assert await h.state("f").get("results", "sync") == [{"id": "s1", "title": "from a thread", "done": False}]
        assert (await group.wait_for(lambda m: m["event"]["type"] == "create"))["id"] == "s1"


async def test_can_access_refuses_a_join_with_an_error_event_and_no_data(project: Path) -> None:
    async with Harness(project) as h:
        await h.streams.todo.set("secret", "x", {"title": "hidden"})
        refused = await h.subscribe("todo", "secret", auth="guest")
        allowed = await h.subscribe("todo", "secret", auth="admin")
        assert refused.error == {"code": "STREAM_ACCESS_DENIED",
                                 "message": "access denied to stream 'todo', group 'secret'"}
        assert (await allowed.next())["event"]["type"] == "sync"
        await h.streams.todo.set("secret", "y", {"title": "later"})
        await allowed.wait_for(lambda m: m["event"]["type"] == "create")
        assert len(refused.messages) == 1 and refused.state == []


async def test_joining_an_unknown_stream_names_the_nearest(project: Path) -> None:
    async with Harness(project) as h:
        sub = await h.subscribe("tods", "inbox")
        assert sub.error is not None and sub.error["message"] == "unknown stream 'tods'; did you mean 'todo'?"


async def test_a_left_subscription_gets_nothing_more(project: Path) -> None:
    async with Harness(project) as h:
        group = await h.subscribe("todo", "inbox")
        await group.next()
        await group.close()
        kept = await h.subscribe("todo", "inbox")
        await h.streams.todo.set("inbox", "z", {"title": "after leaving"})
        await kept.wait_for(lambda m: m["event"]["type"] == "create")
        assert len(group.messages) == 1


async def test_ctx_streams_names_the_nearest_stream(make_project: ProjectFactory) -> None:
    root = make_project({"steps/todo.stream.py": TODO_STREAM, "flows/f.toml": 'entry_topics = ["go"]\n',
                         "steps/bad.step.py": """
        config = {"type": "event", "name": "Bad", "subscribes": ["go"], "emits": [], "flows": ["f"]}
        async def handler(input, ctx):
            ctx.streams.todos
        """})
    async with Harness(root) as h:
        await h.emit("go", {})
        await h.run_until_idle()
        assert "no stream 'todos'; did you mean 'todo'?" in (await h.dead_letters())[0].error


# --- discovery and validation ---------------------------------------------------------------------


def findings_of(root: Path) -> list[tuple[str, str | None, str | None]]:
    project = discover(load_settings(root))
    return [(f.code, f.field, f.hint) for f in validate(project) if f.code != "no-flow"]


def test_stream_files_of_both_namings_are_discovered(make_project: ProjectFactory) -> None:
    root = make_project({"steps/a/todo.stream.py": TODO_STREAM,
                         "steps/b/chat_stream.py": 'config = {"name": "chat", "schema": {"type": "object"}}\n'})
    project = discover(load_settings(root))
    assert sorted(s.name for s in project.streams) == ["chat", "todo"]
    assert project.problems == ()
    assert project.stream("chat") is not None and project.stream("chat").namespace == "__motia_py_stream:chat"


def test_unknown_stream_keys_are_reported_with_the_nearest_key(make_project: ProjectFactory) -> None:
    root = make_project({"steps/x.stream.py": 'config = {"name": "x", "shcema": {}, "baseConfig": {}}\n',
                         "steps/y_stream.py": 'config = {"name": "y", "base_config": {"storage_type": "custom"}}\n',
                         "steps/z_stream.py": 'config = {"name": "z", "canAccess": lambda sub: True}\n'})
    found = findings_of(root)
    assert ("invalid-stream", "shcema", "did you mean 'schema'?") in found
    assert any(code == "invalid-stream" and fld == "baseConfig.storageType" for code, fld, _ in found)
    assert any(code == "invalid-stream" and fld == "canAccess" for code, fld, _ in found)


def test_duplicate_stream_names_are_an_error(make_project: ProjectFactory) -> None:
    root = make_project({"steps/a.stream.py": 'config = {"name": "dup"}\n',
                         "steps/b.stream.py": 'config = {"name": "dup"}\n',
                         "steps/c_stream.py": "config = {'name': \n"})
    codes = [code for code, _, _ in findings_of(root)]
    assert codes.count("duplicate-stream") == 1 and "syntax-error" in codes


async def test_a_stream_added_by_a_reload_can_be_joined_and_written(project: Path) -> None:
    from motia_py.runtime import load_project

    async with Harness(project) as h:
        assert "chat" not in h.streams
        (project / "steps" / "chat_stream.py").write_text('config = {"name": "chat"}\n')
        reloaded, _ = load_project(h.project.settings)
        await h.runtime.reload(reloaded)
        room = await h.subscribe("chat", "lobby")
        await room.next()
        await h.streams.chat.set("lobby", "m1", {"text": "hi"})
        assert (await room.next())["event"]["data"] == {"text": "hi", "id": "m1"}
