"""Discovery: finding step files, importing them inside their folder's package, reporting every problem."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from motia_py.config import StepType
from motia_py.discovery import Project, discover, find_step_files
from motia_py.findings import Finding, Severity
from motia_py.settings import load_settings

ProjectFactory = Callable[..., Path]


def load(root: Path) -> Project:
    return discover(load_settings(root, env={}))


def event_step(name: str, topic: str = "t", body: str = "return None") -> str:
    return (
        f'config = {{"type": "event", "name": "{name}", "subscribes": ["{topic}"]}}\n'
        f"async def handler(input, ctx):\n"
        f"    {body}\n"
    )


def problem_for(project: Project, filename: str) -> Finding:
    found = [p for p in project.problems if p.file is not None and p.file.name == filename]
    assert len(found) == 1, f"expected one problem for {filename}, got {project.problems}"
    return found[0]


def call(step: Any, *args: Any) -> Any:
    result = step.handler(*args)
    return asyncio.run(result) if asyncio.iscoroutine(result) else result


# --- finding files -----------------------------------------------------------------------------------


def test_step_files_are_found_at_any_depth_with_both_suffixes(make_project: ProjectFactory) -> None:
    root = make_project({
        "steps/top.step.py": event_step("Top"),
        "steps/motia_style_step.py": event_step("MotiaStyle"),
        "steps/jobs/deep/deeper/worker.step.py": event_step("Deep"),
        "steps/jobs/other_step.py": event_step("Other"),
        "steps/jobs/helper.py": "X = 1\n",
        "steps/notes.txt": "not python",
        "steps/step.py": "X = 1\n",
        "steps/readme.step.md": "no",
    })
    project = load(root)
    assert project.problems == ()
    assert sorted(s.name for s in project.steps) == ["Deep", "MotiaStyle", "Other", "Top"]
    assert {p.name for p in project.files} == {"top.step.py", "motia_style_step.py", "worker.step.py",
                                               "other_step.py"}


def test_find_step_files_is_sorted_and_skips_caches_and_hidden_folders(make_project: ProjectFactory) -> None:
    root = make_project({
        "steps/b.step.py": "",
        "steps/a.step.py": "",
        "steps/__pycache__/c.step.py": "",
        "steps/.hidden/d.step.py": "",
        "steps/node_modules/e.step.py": "",
    })
    files = find_step_files(root / "steps")
    assert [f.name for f in files] == ["a.step.py", "b.step.py"]


def test_missing_steps_directory_gives_an_empty_project(make_project: ProjectFactory) -> None:
    root = make_project({})
    project = load(root)
    assert project.steps == ()
    assert project.problems == ()
    assert find_step_files(root / "steps") == []


def test_steps_dir_setting_is_honoured(make_project: ProjectFactory) -> None:
    root = make_project({
        "motia_py.toml": '[project]\nsteps_dir = "src/steps"\n[backend]\nurl = "memory://"\n',
        "src/steps/a.step.py": event_step("InSrc"),
        "steps/b.step.py": event_step("NotHere"),
    })
    assert [s.name for s in load(root).steps] == ["InSrc"]


def test_loaded_step_carries_file_line_and_handler(make_project: ProjectFactory) -> None:
    root = make_project({
        "steps/a.step.py": """
            import os

            config = {"type": "event", "name": "A", "subscribes": ["t"], "flows": ["f"]}

            async def handler(input, ctx):
                return input["n"] * 2
        """,
    })
    project = load(root)
    step = project.step("A")
    assert step is not None
    assert step.file == root / "steps" / "a.step.py"
    assert step.line == 3
    assert step.type is StepType.EVENT
    assert call(step, {"n": 21}, None) == 42
    assert project.step("missing") is None
    assert project.subscribers("t") == [step]
    assert project.namespace_of(step) == "f"


# --- imports -----------------------------------------------------------------------------------------------


def test_relative_import_of_a_helper_in_the_step_folder_works(make_project: ProjectFactory) -> None:
    root = make_project({
        "steps/petstore/api.step.py": """
            from .services.pet_store import pet_store_service

            config = {"type": "event", "name": "Pets", "subscribes": ["pet.created"]}

            async def handler(input, ctx):
                return pet_store_service.create(input)
        """,
        "steps/petstore/services/pet_store.py": """
            class _Service:
                def create(self, pet):
                    return {"created": pet["name"]}

            pet_store_service = _Service()
        """,
    })
    project = load(root)
    assert project.problems == ()
    step = project.step("Pets")
    assert step is not None
    assert call(step, {"name": "Rex"}, None) == {"created": "Rex"}


def test_relative_import_of_a_sibling_module_and_parent_package_works(make_project: ProjectFactory) -> None:
    root = make_project({
        "steps/shared.py": "PREFIX = 'job:'\n",
        "steps/jobs/util.py": "def double(x):\n    return 2 * x\n",
        "steps/jobs/run_step.py": """
            from .util import double
            from ..shared import PREFIX

            config = {"type": "event", "name": "Run", "subscribes": ["t"]}

            def handler(input, ctx):
                return PREFIX + str(double(input))
        """,
    })
    project = load(root)
    assert project.problems == ()
    step = project.step("Run")
    assert step is not None
    assert call(step, 4, None) == "job:8"


@pytest.mark.parametrize("with_init", [True, False])
def test_absolute_import_from_the_project_root_works(make_project: ProjectFactory, with_init: bool) -> None:
    files = {
        "services/email.py": "def send(to):\n    return f'sent to {to}'\n",
        "steps/notify.step.py": """
            from services.email import send

            config = {"type": "event", "name": "Notify", "subscribes": ["user.created"]}

            async def handler(input, ctx):
                return send(input["email"])
        """,
    }
    if with_init:
        files["services/__init__.py"] = ""
    project = load(make_project(files))
    assert project.problems == ()
    step = project.step("Notify")
    assert step is not None
    assert call(step, {"email": "a@b.c"}, None) == "sent to a@b.c"


def test_folders_with_hyphens_and_leading_digits_load(make_project: ProjectFactory) -> None:
    root = make_project({
        "steps/job-processing/helpers.py": "VALUE = 'hyphen ok'\n",
        "steps/job-processing/process-job.step.py": """
            from .helpers import VALUE

            config = {"type": "event", "name": "Hyphen", "subscribes": ["t"]}

            def handler(input, ctx):
                return VALUE
        """,
        "steps/01-intro/start.step.py": event_step("Digits"),
    })
    project = load(root)
    assert project.problems == ()
    step = project.step("Hyphen")
    assert step is not None
    assert call(step, None, None) == "hyphen ok"
    assert project.step("Digits") is not None


def test_step_files_with_the_same_stem_in_one_folder_both_load(make_project: ProjectFactory) -> None:
    root = make_project({
        "steps/worker.step.py": event_step("DotStyle", body="return 'dot'"),
        "steps/worker_step.py": event_step("UnderscoreStyle", body="return 'underscore'"),
    })
    project = load(root)
    assert project.problems == ()
    dot, underscore = project.step("DotStyle"), project.step("UnderscoreStyle")
    assert dot is not None and underscore is not None
    assert call(dot, None, None) == "dot"
    assert call(underscore, None, None) == "underscore"


def test_typed_configs_load_from_step_files(make_project: ProjectFactory) -> None:
    root = make_project({
        "steps/tick.step.py": """
            from motia_py import CronConfig

            config = CronConfig(name="Tick", cron="*/10 * * * * *", emits=["tick"])

            async def handler(ctx):
                return "ticked"
        """,
        "steps/human.step.py": """
            from motia_py import NoopConfig

            config = NoopConfig(name="Human", virtualSubscribes=["tick"])
        """,
    })
    project = load(root)
    assert project.problems == ()
    tick, human = project.step("Tick"), project.step("Human")
    assert tick is not None and tick.type is StepType.CRON
    assert human is not None and human.handler is None


# --- every problem at once ---------------------------------------------------------------------------------


def test_discovery_reports_every_broken_step_together(make_project: ProjectFactory) -> None:
    root = make_project({
        "steps/good.step.py": event_step("Good"),
        "steps/syntax.step.py": """
            config = {"type": "event", "name": "Syntax", "subscribes": ["t"]}

            def handler(input, ctx:
                pass
        """,
        "steps/imports.step.py": """
            import os
            import definitely_not_a_module_xyz

            config = {"type": "event", "name": "Imports", "subscribes": ["t"]}
        """,
        "steps/raises.step.py": """
            config = {"type": "event", "name": "Raises", "subscribes": ["t"]}
            raise RuntimeError("boom at import")
        """,
        "steps/noconfig.step.py": """
            async def handler(input, ctx):
                pass
        """,
        "steps/nohandler.step.py": """
            config = {"type": "event", "name": "NoHandler", "subscribes": ["t"]}
        """,
        "steps/signature.step.py": """
            config = {"type": "event", "name": "Signature", "subscribes": ["t"]}


            async def handler(ctx):
                pass
        """,
        "steps/notcallable.step.py": """
            config = {"type": "event", "name": "NotCallable", "subscribes": ["t"]}
            handler = 42
        """,
        "steps/badconfig.step.py": """
            x = 1
            config = {"type": "event", "name": "BadConfig", "subscribe": ["t"]}

            async def handler(input, ctx):
                pass
        """,
        "steps/badcron.step.py": """
            config = {"type": "cron", "name": "BadCron", "cron": "61 * * * *"}

            async def handler(ctx):
                pass
        """,
        "steps/badqueue.step.py": """
            config = {"type": "event", "name": "BadQueue", "subscribes": ["t"],
                      "infrastructure": {"queue": {"type": "lifo"}}}

            async def handler(input, ctx):
                pass
        """,
    })
    project = load(root)

    assert [s.name for s in project.steps] == ["Good"]
    assert len(project.problems) == 10
    assert all(p.severity is Severity.ERROR for p in project.problems)

    syntax = problem_for(project, "syntax.step.py")
    assert syntax.code == "syntax-error"
    assert syntax.line == 3

    imports = problem_for(project, "imports.step.py")
    assert imports.code == "import-error"
    assert "definitely_not_a_module_xyz" in imports.message
    assert imports.line == 2
    assert imports.hint is not None and "definitely_not_a_module_xyz" in imports.hint

    raises = problem_for(project, "raises.step.py")
    assert raises.code == "import-error"
    assert "RuntimeError: boom at import" in raises.message
    assert raises.line == 2

    noconfig = problem_for(project, "noconfig.step.py")
    assert noconfig.code == "missing-config"
    assert noconfig.hint is not None

    nohandler = problem_for(project, "nohandler.step.py")
    assert (nohandler.code, nohandler.field, nohandler.step) == ("invalid-handler", "handler", "NoHandler")
    assert nohandler.hint == "define async def handler(input, ctx)"

    signature = problem_for(project, "signature.step.py")
    assert (signature.code, signature.field, signature.step) == ("invalid-handler", "handler", "Signature")
    assert signature.line == 4
    assert signature.hint == "define async def handler(input, ctx)"

    notcallable = problem_for(project, "notcallable.step.py")
    assert (notcallable.code, notcallable.field) == ("invalid-handler", "handler")
    assert "not callable" in notcallable.message

    badconfig = problem_for(project, "badconfig.step.py")
    assert (badconfig.code, badconfig.field, badconfig.step) == ("invalid-config", "subscribe", "BadConfig")
    assert badconfig.hint == "did you mean 'subscribes'?"
    assert badconfig.line == 2

    badcron = problem_for(project, "badcron.step.py")
    assert (badcron.code, badcron.field, badcron.step) == ("invalid-cron", "cron", "BadCron")

    badqueue = problem_for(project, "badqueue.step.py")
    assert (badqueue.code, badqueue.field) == ("invalid-config", "infrastructure.queue.type")
    assert badqueue.hint == "did you mean 'fifo'?"

    for p in project.problems:
        assert p.file is not None and p.file.is_absolute()
        assert str(p.file.relative_to(root)).startswith("steps/")


def test_broken_helper_module_is_reported_against_the_step(make_project: ProjectFactory) -> None:
    root = make_project({
        "steps/a.step.py": """
            from .lib import VALUE

            config = {"type": "event", "name": "A", "subscribes": ["t"]}

            async def handler(input, ctx):
                return VALUE
        """,
        "steps/lib.py": "VALUE = 1 / 0\n",
        "steps/b.step.py": event_step("B"),
    })
    project = load(root)
    assert [s.name for s in project.steps] == ["B"]
    problem = problem_for(project, "a.step.py")
    assert problem.code == "import-error"
    assert "ZeroDivisionError" in problem.message
    assert problem.line == 1


def test_problems_render_with_file_line_and_hint(make_project: ProjectFactory) -> None:
    root = make_project({"steps/a.step.py": 'config = {"type": "evnt", "name": "A"}\n'})
    project = load(root)
    (problem,) = project.problems
    text = problem.render(root)
    assert text.startswith("error[invalid-config] steps/a.step.py:1 (step 'A') [type]: ")
    assert text.endswith("-- did you mean 'event'?")
    as_json = problem.to_json(root)
    assert as_json["file"] == "steps/a.step.py"
    assert as_json["line"] == 1
    assert as_json["field"] == "type"


def test_flow_file_problems_are_included(make_project: ProjectFactory) -> None:
    root = make_project({
        "steps/a.step.py": event_step("A"),
        "flows/jobs.toml": 'descripton = "x"\n',
    })
    project = load(root)
    (problem,) = project.problems
    assert problem.code == "invalid-flow-file"
    assert problem.hint == "did you mean 'description'?"


# --- fresh code on every discovery -------------------------------------------------------------------------


def test_second_discovery_sees_an_edited_helper_module(make_project: ProjectFactory) -> None:
    root = make_project({
        "steps/a.step.py": """
            from .services.pricing import price

            config = {"type": "event", "name": "A", "subscribes": ["t"]}

            async def handler(input, ctx):
                return price(input)
        """,
        "steps/services/pricing.py": "def price(n):\n    return n * 10\n",
    })
    first = load(root).step("A")
    assert first is not None
    assert call(first, 2, None) == 20

    (root / "steps/services/pricing.py").write_text("def price(n):\n    return n * 1000 + 7\n")
    second = load(root).step("A")
    assert second is not None
    assert call(second, 2, None) == 2007


def test_second_discovery_sees_an_edited_root_package_module(make_project: ProjectFactory) -> None:
    root = make_project({
        "services/__init__.py": "",
        "services/email.py": "def send():\n    return 'v1'\n",
        "steps/a.step.py": """
            from services.email import send

            config = {"type": "event", "name": "A", "subscribes": ["t"]}

            def handler(input, ctx):
                return send()
        """,
    })
    first = load(root).step("A")
    assert first is not None
    assert call(first, None, None) == "v1"

    (root / "services/email.py").write_text("def send():\n    return 'version two'\n")
    second = load(root).step("A")
    assert second is not None
    assert call(second, None, None) == "version two"


def test_second_discovery_sees_edited_step_and_removed_files(make_project: ProjectFactory) -> None:
    root = make_project({
        "steps/a.step.py": event_step("A", body="return 'old'"),
        "steps/b.step.py": event_step("B"),
    })
    assert sorted(s.name for s in load(root).steps) == ["A", "B"]

    (root / "steps/a.step.py").write_text(event_step("A", body="return 'brand new'"))
    (root / "steps/b.step.py").unlink()
    project = load(root)
    assert [s.name for s in project.steps] == ["A"]
    step = project.step("A")
    assert step is not None
    assert call(step, None, None) == "brand new"


def test_a_fixed_file_loads_on_the_next_discovery(make_project: ProjectFactory) -> None:
    root = make_project({"steps/a.step.py": "config = {\n"})
    assert problem_for(load(root), "a.step.py").code == "syntax-error"
    (root / "steps/a.step.py").write_text(event_step("A"))
    project = load(root)
    assert project.problems == ()
    assert project.step("A") is not None


def test_a_removed_helper_module_is_reported_on_the_next_discovery(make_project: ProjectFactory) -> None:
    root = make_project({
        "steps/a.step.py": "from .helper import X\n" + event_step("A"),
        "steps/helper.py": "X = 1\n",
    })
    assert load(root).problems == ()
    (root / "steps/helper.py").unlink()
    problem = problem_for(load(root), "a.step.py")
    assert problem.code == "import-error"
    assert "helper" in problem.message


def test_second_discovery_sees_a_same_size_edit_made_in_the_same_second(
    make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Users run with bytecode writing on (the default); the test environment turns it off.
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    helper = "steps/helper.py"
    root = make_project({
        "steps/a.step.py": "from .helper import value\n" + event_step("A", body="return value()"),
        helper: "def value():\n    return 'one'\n",
    })
    first = load(root).step("A")
    assert first is not None
    assert call(first, None, None) == "one"

    before = (root / helper).stat()
    (root / helper).write_text("def value():\n    return 'two'\n")
    # An editor saving twice within one second: same size, same whole-second mtime.
    os.utime(root / helper, ns=(before.st_atime_ns, before.st_mtime_ns))
    second = load(root).step("A")
    assert second is not None
    assert call(second, None, None) == "two"


def test_two_projects_discovered_one_after_another_each_see_their_own_code(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    def project_files(tag: str) -> dict[str, str]:
        return {
            "steps/__init__.py": f"TAG = '{tag}'\n",
            "steps/jobs/lib.py": f"def who():\n    return '{tag}-lib'\n",
            "lib/shared.py": f"def who():\n    return '{tag}-shared'\n",
            "steps/jobs/worker.step.py": """
                from . import lib
                from .. import TAG
                from lib.shared import who as shared_who

                config = {"type": "event", "name": "Worker", "subscribes": ["t"]}

                def handler(input, ctx):
                    return (TAG, lib.who(), shared_who())
            """,
        }

    first_root = make_project(project_files("first"), tmp_path / "first")
    second_root = make_project(project_files("second"), tmp_path / "second")

    first = load(first_root)
    first_step = first.step("Worker")
    assert first.problems == ()
    assert first_step is not None
    assert call(first_step, None, None) == ("first", "first-lib", "first-shared")

    second = load(second_root)
    second_step = second.step("Worker")
    assert second.problems == ()
    assert second_step is not None
    assert second_step.file == second_root / "steps/jobs/worker.step.py"
    assert call(second_step, None, None) == ("second", "second-lib", "second-shared")

    again = load(first_root).step("Worker")
    assert again is not None
    assert call(again, None, None) == ("first", "first-lib", "first-shared")


def test_a_second_project_does_not_see_the_first_projects_helpers(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    first_root = make_project({
        "steps/only_here.py": "X = 1\n",
        "steps/a.step.py": "from .only_here import X\n" + event_step("A"),
    }, tmp_path / "one")
    second_root = make_project({
        "steps/a.step.py": "from .only_here import X\n" + event_step("A"),
    }, tmp_path / "two")
    assert load(first_root).problems == ()
    problem = problem_for(load(second_root), "a.step.py")
    assert problem.code == "import-error"
    assert "only_here" in problem.message


# --- Motia compatibility ------------------------------------------------------------------------------------


def test_motia_0x_style_python_step_loads(make_project: ProjectFactory) -> None:
    root = make_project({
        "steps/petstore/process_food_order_step.py": """
            from pydantic import BaseModel


            class FoodOrder(BaseModel):
                id: str
                quantity: int
                pet_id: int


            config = {
                "type": "event",
                "name": "ProcessFoodOrder",
                "description": "basic event step",
                "subscribes": ["process-food-order"],
                "emits": [{"topic": "notification", "label": "Notify", "conditional": False}],
                "virtualEmits": ["audit"],
                "input": FoodOrder.model_json_schema(),
                "flows": ["basic-tutorial"],
                "includeFiles": ["../../data/*.json"],
                "infrastructure": {
                    "handler": {"ram": 2048, "cpu": 1, "timeout": 30},
                    "queue": {"type": "standard", "maxRetries": 5, "visibilityTimeout": 60},
                },
            }


            async def handler(input_data, context):
                return {"order": input_data["id"], "qty": input_data["quantity"]}
        """,
    })
    project = load(root)
    assert project.problems == ()
    step = project.step("ProcessFoodOrder")
    assert step is not None
    assert step.subscribes == ("process-food-order",)
    assert step.emits[0].label == "Notify"
    assert step.virtual_emits[0].topic == "audit"
    assert step.flows == ("basic-tutorial",)
    assert step.timeout_s == 30.0
    assert step.queue.max_retries == 5
    assert step.is_async is True
    assert step.input is not None
    assert step.input.model is None
    assert step.input.json["required"] == ["id", "quantity", "pet_id"]
    assert call(step, {"id": "o1", "quantity": 2, "pet_id": 1}, None) == {"order": "o1", "qty": 2}


def test_a_typed_config_with_an_unknown_key_is_reported_with_its_hint(make_project: ProjectFactory) -> None:
    root = make_project({"steps/typed.step.py": """
        from motia_py import EventConfig
        config = EventConfig(name="Typed", subscribe=["a"])
        async def handler(input, ctx):
            pass
    """})
    [problem] = discover(load_settings(root, env={})).problems
    assert (problem.code, problem.field, problem.hint) == ("invalid-config", "subscribe", "did you mean 'subscribes'?")
    assert problem.line == 2


# --- hostile step files and project folders (issue 13) ------------------------------------------------


@pytest.mark.parametrize(("body", "shown"), [
    ("import sys\nsys.exit()", "SystemExit (the file called sys.exit() while it was imported)"),
    ("import sys\nsys.exit(3)", "SystemExit: 3 (the file called sys.exit() while it was imported)"),
    ("raise KeyboardInterrupt", "KeyboardInterrupt (raised while the file was imported)"),
    ("class Stop(BaseException):\n    pass\nraise Stop('no')", "Stop: no (raised while the file was imported)"),
], ids=["exit", "exit-3", "interrupt", "base-exception"])
def test_a_step_file_raising_base_exception_at_import_is_its_import_error(
    make_project: ProjectFactory, body: str, shown: str
) -> None:
    root = make_project({"steps/bad.step.py": body + "\n", "steps/good.step.py": event_step("Good")})
    project = load(root)
    assert [s.name for s in project.steps] == ["Good"]
    problem = problem_for(project, "bad.step.py")
    assert (problem.code, problem.severity, problem.message) == ("import-error", Severity.ERROR, shown)
    assert problem.line is not None


def test_validate_json_reports_a_step_file_that_calls_sys_exit(
    make_project: ProjectFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from motia_py.cli import main

    root = make_project({"steps/bad.step.py": "import sys\nsys.exit(0)\n"})
    with pytest.raises(SystemExit) as exc:
        main(["validate", "--json", "--project", str(root)])
    assert exc.value.code == 1
    doc = json.loads(capsys.readouterr().out)
    assert [(f["code"], f["file"]) for f in doc["findings"]] == [("import-error", "steps/bad.step.py")]


_SHADOW_SCRIPT = """
import json, sys
from motia_py.runtime import load_project
from motia_py.settings import load_settings

assert "redis" not in sys.modules  # the framework imports it later (the redis backend)
project, findings = load_project(load_settings(".", env={}))
import redis
step = project.step("Shadow")
print(json.dumps({
    "framework_redis": redis.__file__,
    "step_saw": step.handler(None, None) if step else None,
    "findings": [f.to_json(project.root) for f in findings if f.code != "unconsumed-topic"],
}))
"""

_SHADOW_STEP = """
import redis, services

config = {"type": "event", "name": "Shadow", "subscribes": ["t"], "flows": ["f"]}

def handler(input, ctx):
    return {"redis": getattr(redis, "WHO", "installed"), "services": services.WHO}
"""


def test_a_project_folder_named_like_a_dependency_never_replaces_it(make_project: ProjectFactory) -> None:
    import json
    import subprocess

    import motia_py

    root = make_project({
        "redis/__init__.py": "WHO = 'project'\n",
        "services/__init__.py": "WHO = 'project'\n",
        "steps/shadow.step.py": _SHADOW_STEP,
        "flows/f.toml": 'entry_topics = ["t"]\n',
    })
    framework = str(Path(motia_py.__file__).parent.parent)
    # `python -c` in the project folder puts it first on sys.path, as `python -m motia_py` does
    out = subprocess.run([sys.executable, "-c", _SHADOW_SCRIPT], cwd=root, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": framework}, timeout=60, check=True).stdout
    report = json.loads(out)
    assert not Path(report["framework_redis"]).is_relative_to(root)
    assert report["step_saw"] == {"redis": "installed", "services": "project"}
    [warning] = report["findings"]
    assert (warning["code"], warning["severity"], warning["file"], warning["field"]) == (
        "shadowed-package", "warning", "redis", "redis")
    assert "'redis' (redis/)" in warning["message"] and "the installed distribution 'redis'" in warning["message"]
