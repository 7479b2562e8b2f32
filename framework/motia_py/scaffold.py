"""``motia-py create DIR``: a new project that validates and whose test passes as created."""

from __future__ import annotations

import json
import os
import re
import shlex
from importlib import metadata
from pathlib import Path

from . import rules
from ._version import __version__
from .errors import MotiaError

DIST = "motia-py"
# test dependencies of a new project: pytest-asyncio 0.24 is the first that knows
# asyncio_default_fixture_loop_scope, which pytest.ini sets so that pytest prints no warning
TEST_REQUIREMENTS = ("pytest>=8", "pytest-asyncio>=0.24")

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

from motia_py.testing import Harness

ROOT = Path(__file__).resolve().parents[1]


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
testpaths = tests
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
''',
    ".gitignore": ".motia/\n__pycache__/\n.venv/\n.pytest_cache/\n*.egg-info/\nbuild/\n",
}


def motia_requirement() -> str:
    """The requirement on motia-py for a new project: the source this motia-py was installed from.

    A wheel file, a directory or a VCS checkout (PEP 610 ``direct_url.json``) is named as a direct
    reference (``motia-py @ file:///.../motia_py-0.1.0-py3-none-any.whl``), so that a fresh virtualenv
    installs the same motia-py; an install from a package index gives ``motia-py>=VERSION``.
    """
    try:
        dist = metadata.distribution(DIST)
    except metadata.PackageNotFoundError:
        return f"{DIST}>={__version__}"
    raw = dist.read_text("direct_url.json")
    try:
        info = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        info = None
    return requirement_from(info, dist.version)


def requirement_from(direct_url: object, version: str) -> str:
    """The requirement naming a distribution installed from ``direct_url`` (PEP 610), or ``>=version``."""
    if not isinstance(direct_url, dict) or not isinstance(direct_url.get("url"), str):
        return f"{DIST}>={version}"
    url: str = direct_url["url"]
    vcs = direct_url.get("vcs_info")
    if isinstance(vcs, dict) and vcs.get("vcs"):
        ref = vcs.get("commit_id") or vcs.get("requested_revision")
        url = f"{vcs['vcs']}+{url}" + (f"@{ref}" if ref else "")
    if isinstance(direct_url.get("subdirectory"), str):
        url += f"#subdirectory={direct_url['subdirectory']}"
    return f"{DIST} @ {url}"


def project_name(directory: Path) -> str:
    """A valid distribution name for the project in ``directory`` (``My App`` -> ``my-app``)."""
    name = re.sub(r"[^a-z0-9]+", "-", directory.resolve().name.lower()).strip("-")
    return name or "app"


def pyproject(directory: Path, requirement: str | None = None) -> str:
    """The ``pyproject.toml`` of a new project: its dependencies, motia-py's test tools as ``[test]``."""
    req = requirement or motia_requirement()
    comment = ("    # motia-py from where `motia-py create` found it installed; once motia-py comes from\n"
               f"    # your package index, write \"{DIST}>={__version__}\" instead\n" if " @ " in req else "")
    tests = ", ".join(json.dumps(r) for r in TEST_REQUIREMENTS)
    return f'''\
[project]
name = {json.dumps(project_name(directory))}
version = "0.1.0"
description = "An event-driven backend built from motia-py step files"
requires-python = ">=3.11"
dependencies = [
{comment}    {json.dumps(req)},
]

[project.optional-dependencies]
test = [{tests}]

[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

# An application, not a library: motia-py finds the steps in this folder, so nothing is packaged and
# `pip install -e '.[test]'` only installs the dependencies above.
[tool.setuptools]
packages = []
'''


def next_commands(directory: Path) -> list[str]:
    """The two shell commands that set up a fresh virtualenv for the project and run its test."""
    where = shlex.quote(str(directory))
    if os.name == "nt":  # pragma: no cover - the commands for Windows' shells
        return [f"cd {where} && py -3 -m venv .venv && .venv\\Scripts\\python -m pip install -e .[test]",
                ".venv\\Scripts\\python -m pytest"]
    return [f"cd {where} && python3 -m venv .venv && .venv/bin/python -m pip install -e '.[test]'",
            ".venv/bin/python -m pytest"]


def project_files(directory: Path) -> dict[str, str]:
    """Every file of a new project in ``directory``: relative path -> text."""
    return {**FILES, "pyproject.toml": pyproject(directory), **rules.render_all()}


def scaffold(directory: Path, *, force: bool = False) -> list[Path]:
    """Write a new project into ``directory``; return the files written.

    The project has settings, four steps, a test, a ``pyproject.toml`` that installs motia-py and the
    test tools, and the AI-assistant rules (``AGENTS.md``, ``CLAUDE.md``, ``.cursor/rules/``).

    Raises:
        MotiaError: ``directory`` exists and is not empty (unless ``force``).
    """
    if directory.exists() and any(directory.iterdir()) and not force:
        raise MotiaError(f"{directory} is not empty (use --force to write into it)")
    written = []
    for rel, text in project_files(directory).items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
