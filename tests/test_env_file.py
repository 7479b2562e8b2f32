"""The project's ``.env``: loaded when settings resolve against the process environment, never overriding a
variable that is set, off with ``[project] dotenv = false`` or ``MOTIA_PY_DOTENV=0``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from motia_py.cli import main
from motia_py.client import Client
from motia_py.errors import ProjectError
from motia_py.settings import load_settings

from .conftest import ProjectFactory
from .processes import lines, start_process, stop, wait_until

NAMES = ("MOTIA_PY_SERVER_PORT", "MOTIA_PY_BACKEND_URL", "MOTIA_PY_DOTENV", "GREETING", "ALREADY", "HOST_X", "URL_X")


@pytest.fixture(autouse=True)
def environ() -> Iterator[None]:
    """Loading ``.env`` writes to ``os.environ``: put it back as it was after each test."""
    saved = dict(os.environ)
    for name in NAMES:
        os.environ.pop(name, None)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_env_file_fills_in_unset_variables_and_never_overrides_set_ones(make_project: ProjectFactory) -> None:
    root = make_project({".env": "# comment\nGREETING=hello\nexport ALREADY=from-file\nMOTIA_PY_SERVER_PORT=4100\n"})
    os.environ["ALREADY"] = "from-environment"
    settings = load_settings(root)
    assert os.environ["GREETING"] == "hello"
    assert os.environ["ALREADY"] == "from-environment"
    assert settings.port == 4100 and settings.dotenv


def test_env_file_values_rank_as_environment_below_flags_and_above_the_file(make_project: ProjectFactory) -> None:
    root = make_project({"motia_py.toml": "[server]\nport = 3001\n", ".env": "MOTIA_PY_SERVER_PORT=4100\n"})
    assert load_settings(root).port == 4100
    assert load_settings(root, flags={"port": 5000}).port == 5000


def test_set_variables_win_over_the_env_file_even_in_expansions(make_project: ProjectFactory) -> None:
    root = make_project({".env": "HOST_X=file-host\nURL_X=http://${HOST_X}:8000\n"})
    os.environ["HOST_X"] = "real-host"
    load_settings(root)
    assert os.environ["URL_X"] == "http://real-host:8000"
    assert os.environ["HOST_X"] == "real-host"


def test_env_file_is_off_with_the_project_setting(make_project: ProjectFactory) -> None:
    root = make_project({"motia_py.toml": "[project]\ndotenv = false\n", ".env": "GREETING=hello\n"})
    settings = load_settings(root)
    assert "GREETING" not in os.environ
    assert settings.dotenv is False


def test_env_file_is_off_with_the_environment_variable(make_project: ProjectFactory) -> None:
    root = make_project({".env": "GREETING=hello\n"})
    os.environ["MOTIA_PY_DOTENV"] = "0"
    assert load_settings(root).dotenv is False
    assert "GREETING" not in os.environ


def test_an_explicit_environment_mapping_reads_no_env_file(make_project: ProjectFactory) -> None:
    root = make_project({".env": "GREETING=hello\nMOTIA_PY_SERVER_PORT=4100\n"})
    assert load_settings(root, env={}).port == 3000
    assert "GREETING" not in os.environ


def test_an_unreadable_env_file_is_a_project_error(make_project: ProjectFactory) -> None:
    root = make_project({})
    (root / ".env").write_bytes(b"GREETING=\xff\xfe\n")
    with pytest.raises(ProjectError, match=r"\.env: cannot read"):
        load_settings(root)


def test_cli_commands_use_the_backend_the_env_file_names(make_project: ProjectFactory) -> None:
    root = make_project({"motia_py.toml": "", "flows/f.toml": 'entry_topics = ["work"]\n',
                         ".env": "MOTIA_PY_BACKEND_URL=sqlite:///from-env-file.db\n",
                         "steps/work.step.py": """
                             config = {"type": "event", "name": "Work", "subscribes": ["work"], "emits": [],
                                       "flows": ["f"]}
                             async def handler(input, ctx):
                                 pass
                         """})
    with pytest.raises(SystemExit) as exited:
        main(["emit", "work", "--data", '{"n": 1}', "--project", str(root)])
    assert exited.value.code in (0, None)
    assert (root / "from-env-file.db").exists()

    async def ready() -> int:
        client = Client.from_project(root, backend_url="sqlite:///from-env-file.db")
        try:
            await client.backend.open()
            return (await client.backend.stats()).ready
        finally:
            await client.aclose()

    assert asyncio.run(ready()) == 1


@pytest.mark.slow
def test_handlers_under_start_see_env_file_variables(make_project: ProjectFactory) -> None:
    root = make_project({"motia_py.toml": '[backend]\nurl = "sqlite:///.motia/motia.db"\n',
                         ".env": "GREETING=hello from .env\n", "flows/f.toml": 'entry_topics = ["work"]\n',
                         "steps/work.step.py": """
                             import os
                             from pathlib import Path
                             config = {"type": "event", "name": "Work", "subscribes": ["work"], "emits": [],
                                       "flows": ["f"]}
                             async def handler(input, ctx):
                                 (Path(__file__).parents[1] / "seen.txt").write_text(os.environ["GREETING"] + "\\n")
                         """})
    client = Client.from_project(root)
    try:
        client.emit_sync("work", {})
    finally:
        client.close()
    os.environ.pop("GREETING")  # the client loaded it into this process; the worker must find it itself
    worker = start_process(root, "--no-http")
    try:
        wait_until(lambda: lines(root / "seen.txt") == ["hello from .env"], 30, "the handler to run", worker)
    finally:
        assert stop(worker) == 0
