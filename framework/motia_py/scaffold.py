"""``motia-py create DIR``: a new project that validates and whose test passes as created."""

from __future__ import annotations

from pathlib import Path

from .errors import MotiaError

FILES: dict[str, str] = {
    "motia_py.toml": '''\
[project]
steps_dir = "steps"
flows_dir = "flows"

[backend]
url = "sqlite:///.motia/motia.db"

[server]
host = "127.0.0.1"
port = 3000
''',
    "flows/greetings.toml": '''\
description = "Say hello to whoever asks, and count the greetings"
state_namespace = "greetings"
''',
    "steps/hello_api.step.py": '''\
"""POST /hello {"name": "Ada"} -> queues a greeting."""

from pydantic import BaseModel


class HelloBody(BaseModel):
    name: str


config = {
    "type": "api",
    "name": "HelloApi",
    "path": "/hello",
    "method": "POST",
    "bodySchema": HelloBody,
    "emits": ["greeting.requested"],
    "flows": ["greetings"],
}


async def handler(req, ctx):
    body = req["body"]
    await ctx.emit({"topic": "greeting.requested", "data": {"name": body.name}})
    return {"status": 202, "body": {"queued": True, "traceId": ctx.trace_id}}
''',
    "steps/greet.step.py": '''\
"""Handles greeting.requested: stores the greeting and counts it."""

from pydantic import BaseModel


class Greeting(BaseModel):
    name: str


config = {
    "type": "event",
    "name": "Greet",
    "subscribes": ["greeting.requested"],
    "emits": ["greeting.sent"],
    "input": Greeting,
    "flows": ["greetings"],
    "infrastructure": {"queue": {"maxRetries": 3}},
}


async def handler(input, ctx):
    message = f"Hello, {input.name}!"
    await ctx.state.set("messages", input.name, {"message": message})
    await ctx.state.update("stats", "count", lambda n: (n or 0) + 1)
    ctx.logger.info("greeted", name=input.name)
    await ctx.emit({"topic": "greeting.sent", "data": {"name": input.name, "message": message}})
''',
    "steps/report.step.py": '''\
"""Every minute: log how many greetings were sent."""

config = {
    "type": "cron",
    "name": "GreetingReport",
    "cron": "0 * * * * *",
    "emits": [],
    "flows": ["greetings"],
}


async def handler(ctx):
    count = await ctx.state.get("stats", "count") or 0
    ctx.logger.info("greeting report", count=count, scheduled_at=ctx.scheduled_at.isoformat())
''',
    "steps/audit.step.py": '''\
"""Consumes greeting.sent (the end of the flow)."""

config = {
    "type": "event",
    "name": "Audit",
    "subscribes": ["greeting.sent"],
    "emits": [],
    "flows": ["greetings"],
}


async def handler(input, ctx):
    ctx.logger.info("greeting delivered", name=input["name"])
''',
    "tests/test_greetings.py": '''\
from pathlib import Path

import pytest

from motia_py.testing import Harness

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.asyncio
async def test_a_greeting_is_stored_and_counted():
    async with Harness(ROOT) as h:
        await h.emit("greeting.requested", {"name": "Ada"})
        await h.run_until_idle()
        assert h.emitted("greeting.sent") == [{"name": "Ada", "message": "Hello, Ada!"}]
        assert await h.state("greetings").get("messages", "Ada") == {"message": "Hello, Ada!"}
        assert await h.state("greetings").get("stats", "count") == 1
''',
    "pytest.ini": '''\
[pytest]
asyncio_mode = auto
''',
    ".gitignore": ".motia/\n__pycache__/\n.venv/\n",
}


def scaffold(directory: Path, *, force: bool = False) -> list[Path]:
    """Write a new project into ``directory``; return the files written.

    Raises:
        MotiaError: ``directory`` exists and is not empty (unless ``force``).
    """
    if directory.exists() and any(directory.iterdir()) and not force:
        raise MotiaError(f"{directory} is not empty (use --force to write into it)")
    written = []
    for rel, text in FILES.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
