"""Step files in Motia 1.0's format (``triggers``, ``enqueues``): how they load, how ``validate`` explains a
config in neither format, and the did-you-mean of a misspelt trigger keyword or topic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from motia_py.cli import main
from motia_py.discovery import Project, discover
from motia_py.findings import Finding, Severity
from motia_py.graph import to_json, validate
from motia_py.openapi import openapi_document
from motia_py.settings import load_settings
from motia_py.spec import BackoffType, QueueType, StepType

from .conftest import ProjectFactory


def load(root: Path) -> tuple[Project, list[Finding]]:
    project = discover(load_settings(root, env={}))
    return project, validate(project)


def only(findings: list[Finding], code: str) -> Finding:
    [found] = [f for f in findings if f.code == code]
    return found


DUAL = """
    from motia import FlowContext, cron, http, queue

    config = {
        "name": "Dual",
        "flows": ["f"],
        "triggers": [queue("work"), http("POST", "/work"), cron("0 * * * * *"), queue("more")],
        "enqueues": ["work"],
    }

    def handler(input, ctx: FlowContext):
        return None
"""


def test_each_trigger_of_a_step_becomes_a_spec_named_after_the_step(make_project: ProjectFactory) -> None:
    project, findings = load(make_project({"steps/dual_step.py": DUAL,
                                           "steps/one_step.py": """
        from motia import http
        config = {"name": "One", "flows": ["f"], "triggers": [http("GET", "/one")], "enqueues": ["more"]}
        def handler(request): return {"status": 200, "body": 1}
    """}))
    assert [(s.name, s.type, s.display_name) for s in project.steps] == [
        ("Dual#queue1", StepType.EVENT, "Dual"), ("Dual#http", StepType.API, "Dual"),
        ("Dual#cron", StepType.CRON, "Dual"), ("Dual#queue2", StepType.EVENT, "Dual"),
        ("One", StepType.API, "One")]
    origins = [(s.origin.kind, s.origin.index, s.origin.count) for s in project.steps if s.origin]
    assert origins == [("queue", 0, 4), ("http", 1, 4), ("cron", 2, 4), ("queue", 3, 4), ("http", 0, 1)]
    assert project.steps[0].subscribes == ("work",) and project.steps[3].subscribes == ("more",)
    assert all(s.emit_topics == {"work"} for s in project.steps[:4])
    assert [f.code for f in findings if f.severity.value != "info"] == []


def test_a_config_in_neither_format_is_explained(make_project: ProjectFactory) -> None:
    files = {
        "steps/a_step.py": "config = {'name': 'A', 'trigers': []}\ndef handler(i, c): pass\n",
        "steps/b_step.py": "config = {'name': 'B', 'subscribes': ['x']}\nasync def handler(i, c): pass\n",
        "steps/c_step.py": "config = {'name': 'C', 'enqueues': ['x']}\ndef handler(i, c): pass\n",
        "steps/d_step.py": "config = {'name': 'D'}\ndef handler(i, c): pass\n",
        "steps/e_step.py": "config = {'name': 'E', 'type': 'event', 'triggers': []}\ndef handler(i, c): pass\n",
    }
    _, findings = load(make_project(files))
    by_file = {f.file.name: f for f in findings if f.file is not None and f.file.name.endswith("_step.py")}
    assert {f.code for f in by_file.values()} == {"unknown-format"}
    assert by_file["a_step.py"].hint == "did you mean 'triggers'?"
    assert "looks like Motia 0.x (subscribes)" in by_file["b_step.py"].message
    assert by_file["b_step.py"].hint is not None and "'type': 'event'" in by_file["b_step.py"].hint
    assert "looks like Motia 1.0 ('enqueues') but has no 'triggers'" in by_file["c_step.py"].message
    assert "neither 'type' (Motia 0.x) nor 'triggers' (Motia 1.0)" in by_file["d_step.py"].message
    assert "both 'type' (Motia 0.x) and 'triggers' (Motia 1.0)" in by_file["e_step.py"].message


@pytest.mark.parametrize(("trigger", "field", "hint"), [
    ('queue("work", conditon=lambda i, c: True)', "conditon", "did you mean 'condition'?"),
    ('http("GET", "/x", body_shema={})', "body_shema", "did you mean 'body_schema'?"),
    ('cron("0 * * * * *", conditions=None)', "conditions", "did you mean 'condition'?"),
    ('{"type": "queue", "topc": "work"}', "triggers[0].topc", "did you mean 'topic'?"),
    ('{"type": "queu", "topic": "work"}', "triggers[0].type", "did you mean 'queue'?"),
    ('{"type": "queue", "topic": "work", "config": {"maxRetry": 2}}', "triggers[0].config.maxRetry",
     "did you mean 'maxRetries'?"),
    ('http("GETT", "/x")', "method", "did you mean 'GET'?"),
    ('queue("work", config=QueueConfig(max_retry=2))', "max_retry", "did you mean 'max_retries'?"),
])
def test_a_misspelt_trigger_keyword_gets_a_did_you_mean(make_project: ProjectFactory, trigger: str, field: str,
                                                        hint: str) -> None:
    root = make_project({"steps/a_step.py": f"""
        from motia import QueueConfig, cron, http, queue
        config = {{"name": "A", "flows": ["f"], "triggers": [{trigger}], "enqueues": []}}
        def handler(input, ctx): pass
    """})
    _, findings = load(root)
    found = only(findings, "invalid-config")
    assert (found.field, found.hint) == (field, hint), found


def test_a_misspelt_topic_or_config_key_gets_a_did_you_mean(make_project: ProjectFactory) -> None:
    root = make_project({
        "steps/a_step.py": """
            from motia import http
            config = {"name": "A", "flows": ["f"], "triggers": [http("POST", "/a")], "enqueues": ["order.created"]}
            def handler(request): return {"status": 200, "body": {}}
        """,
        "steps/b_step.py": """
            from motia import queue
            config = {"name": "B", "flows": ["f"], "triggers": [queue("order.creatd")], "enqueue": []}
            def handler(input): pass
        """,
        "steps/c_step.py": """
            from motia import queue
            config = {"name": "C", "flows": ["f"], "triggers": [queue("order.creatd")], "enqueues": []}
            def handler(input): pass
        """,
    })
    _, findings = load(root)
    key = only(findings, "invalid-config")
    assert (key.step, key.field, key.hint) == ("B", "enqueue", "did you mean 'enqueues'?")
    topic = only(findings, "unknown-topic")
    assert (topic.step, topic.field, topic.hint) == ("C", "triggers[0].topic", "did you mean 'order.created'?")
    assert topic.severity is Severity.WARNING  # 1.0 steps may take topics other workers enqueue
    unconsumed = only(findings, "unconsumed-topic")
    assert (unconsumed.step, unconsumed.field) == ("A", "enqueues")


def test_validate_cli_names_the_misspelt_keyword(make_project: ProjectFactory,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root = make_project({"steps/a_step.py": """
        from motia import queue
        config = {"name": "A", "flows": ["f"], "triggers": [queue("work", imput={})], "enqueues": []}
        def handler(input): pass
    """})
    with pytest.raises(SystemExit) as info:
        main(["validate", "--json", "--project", str(root)])
    report = json.loads(capsys.readouterr().out)
    assert info.value.code == 1
    [finding] = report["findings"]
    assert finding["message"] == "queue() got an unknown keyword 'imput'" and finding["hint"] == "did you mean 'input'?"


def test_queue_config_in_the_1_0_names_maps_onto_delivery_settings(make_project: ProjectFactory) -> None:
    root = make_project({
        "steps/a_step.py": """
            from motia import QueueConfig, queue
            config = {"name": "A", "flows": ["f"], "enqueues": [], "triggers": [
                queue("t", config=QueueConfig(type="fifo", max_retries=5, visibility_timeout=90, delay_seconds=2,
                                              concurrency=4, backoff_type="fixed", backoff_delay_ms=250))]}
            def handler(input): pass
        """,
        "steps/b_step.py": """
            config = {"name": "B", "flows": ["f"], "enqueues": ["t"], "triggers": [
                {"type": "queue", "topic": "u", "config": {"maxRetries": 0, "visibilityTimeout": 7,
                                                           "backoffDelayMs": 1500}}]}
            def handler(input): pass
        """,
    })
    project, _ = load(root)
    a, b = project.step("A"), project.step("B")
    assert a is not None and b is not None
    assert (a.queue.type, a.queue.max_retries, a.queue.visibility_timeout_s, a.queue.delay_s,
            a.queue.concurrency) == (QueueType.FIFO, 5, 90.0, 2.0, 4)
    assert (a.queue.backoff.type, a.queue.backoff.delay_s) == (BackoffType.FIXED, 0.25)
    assert (b.queue.type, b.queue.max_retries, b.queue.visibility_timeout_s) == (QueueType.STANDARD, 0, 7.0)
    assert (b.queue.backoff.type, b.queue.backoff.delay_s) == (BackoffType.EXPONENTIAL, 1.5)


def test_cron_triggers_take_six_and_seven_fields(make_project: ProjectFactory) -> None:
    root = make_project({"steps/a_step.py": """
        from motia import cron
        config = {"name": "A", "flows": ["f"], "enqueues": [], "triggers": [
            cron("*/10 * * * * *"), cron("0 0 9 * * 1 *"), {"type": "cron", "expression": "0 9 * * *"}]}
        def handler(input, ctx): pass
    """, "steps/b_step.py": """
        from motia import cron
        config = {"name": "B", "flows": ["f"], "enqueues": [], "triggers": [cron("0 0 9 * * 9 *")]}
        def handler(input, ctx): pass
    """})
    project, findings = load(root)
    assert [s.cron.expression for s in project.steps if s.cron] == ["*/10 * * * * *", "0 0 9 * * 1 *", "0 9 * * *"]
    bad = only(findings, "invalid-cron")
    assert bad.step == "B" and bad.field == "triggers[0].cron" and "day of week" in bad.message


def test_labels_conditional_enqueues_and_virtual_edges_reach_the_graph(make_project: ProjectFactory) -> None:
    root = make_project({"steps/a_step.py": """
        from motia import http, queue
        config = {"name": "A", "flows": ["f"], "triggers": [http("POST", "/a"), queue("again")],
                  "enqueues": [{"topic": "again", "label": "retry it", "conditional": True}],
                  "virtualEnqueues": ["human.review"], "virtualSubscribes": ["human.done"]}
        def handler(input, ctx): pass
    """})
    project, _ = load(root)
    graph = to_json(project)
    assert [(s["name"], s["step"], s["trigger"]) for s in graph["steps"]] == [("A#http", "A", "http"),
                                                                             ("A#queue", "A", "queue")]
    edge = next(e for e in graph["edges"] if e["from"] == "A#http")
    assert (edge["to"], edge["label"], edge["conditional"]) == ("A#queue", "retry it", True)
    first = project.steps[0]
    assert [e.topic for e in first.virtual_emits] == ["human.review"] and first.virtual_subscribes == ("human.done",)
    assert project.steps[1].virtual_emits == ()


def test_findings_every_trigger_would_repeat_are_given_once(make_project: ProjectFactory) -> None:
    root = make_project({"steps/a_step.py": """
        from motia import cron, http
        config = {"name": "A", "triggers": [http("GET", "/a"), cron("0 * * * * *")], "enqueues": ["nobody"]}
        def handler(input, ctx): pass
    """})
    _, findings = load(root)
    assert sorted((f.code, f.step) for f in findings) == [("no-flow", "A"), ("unconsumed-topic", "A")]


def test_two_files_with_one_step_name_are_duplicates_whatever_their_triggers(make_project: ProjectFactory) -> None:
    root = make_project({"steps/a_step.py": DUAL, "steps/b_step.py": """
        from motia import http
        config = {"name": "Dual", "flows": ["f"], "triggers": [http("GET", "/b")], "enqueues": []}
        def handler(request): pass
    """})
    _, findings = load(root)
    dup = only(findings, "duplicate-step")
    assert dup.message == "two steps are named 'Dual': steps/a_step.py and steps/b_step.py"


def test_a_handler_taking_too_many_arguments_is_refused(make_project: ProjectFactory) -> None:
    root = make_project({"steps/a_step.py": """
        from motia import queue
        config = {"name": "A", "flows": ["f"], "triggers": [queue("t")], "enqueues": []}
        def handler(input, ctx, extra): pass
    """})
    _, findings = load(root)
    found = only(findings, "invalid-handler")
    assert found.message == "handler takes (input, ctx), but it is handler(input, ctx, extra)"


def test_0x_and_1_0_steps_mix_in_one_project(make_project: ProjectFactory) -> None:
    root = make_project({
        "steps/new_step.py": """
            from motia import http
            config = {"name": "New", "flows": ["f"], "triggers": [http("POST", "/new")], "enqueues": ["made"]}
            def handler(request): return {"status": 202, "body": {}}
        """,
        "steps/old.step.py": """
            config = {"type": "event", "name": "Old", "flows": ["f"], "subscribes": ["made"], "emits": []}
            async def handler(input, ctx): pass
        """,
    })
    project, findings = load(root)
    assert [(s.name, s.origin is None) for s in project.steps] == [("New", False), ("Old", True)]
    assert findings == []


def test_openapi_lists_every_http_trigger(make_project: ProjectFactory) -> None:
    root = make_project({"steps/a_step.py": """
        from pydantic import BaseModel
        from motia import http

        class Body(BaseModel):
            name: str

        config = {"name": "Apis", "flows": ["f"], "enqueues": [], "triggers": [
            http("GET", "/apis/:id", query_params=[{"name": "page", "description": "page number"}]),
            http("POST", "/apis", body_schema=Body, response_schema={201: {"type": "object"}})]}
        def handler(request, ctx): pass
    """})
    doc = openapi_document(discover(load_settings(root, env={})))
    get, post = doc["paths"]["/apis/{id}"]["get"], doc["paths"]["/apis"]["post"]
    assert (get["operationId"], post["operationId"]) == ("Apis#http1", "Apis#http2")
    assert [p["name"] for p in get["parameters"]] == ["id", "page"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["required"] == ["name"]
    assert "201" in post["responses"]


def test_steps_cli_shows_the_trigger_kind_and_the_step(make_project: ProjectFactory,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    root = make_project({"steps/dual_step.py": DUAL})
    with pytest.raises(SystemExit):
        main(["steps", "--json", "--project", str(root)])
    rows = json.loads(capsys.readouterr().out)["steps"]
    assert [(r["name"], r["type"], r["step"], r["format"]) for r in rows] == [
        ("Dual#queue1", "queue", "Dual", "1.0"), ("Dual#http", "http", "Dual", "1.0"),
        ("Dual#cron", "cron", "Dual", "1.0"), ("Dual#queue2", "queue", "Dual", "1.0")]


def test_conditions_and_middleware_of_the_wrong_shape_are_refused(make_project: ProjectFactory) -> None:
    root = make_project({"steps/a_step.py": """
        from motia import queue
        config = {"name": "A", "flows": ["f"], "enqueues": [], "triggers": [queue("t", condition=lambda x, y, z: 1)]}
        def handler(input): pass
    """, "steps/b_step.py": """
        from motia import http
        config = {"name": "B", "flows": ["f"], "enqueues": [], "triggers": [http("GET", "/b", middleware=["auth"])]}
        def handler(request): pass
    """})
    _, findings = load(root)
    by_step = {f.step: f for f in findings if f.code == "invalid-config"}
    assert by_step["A"].field == "triggers[0].condition"
    assert by_step["A"].message == "condition takes (input, ctx), but it is condition(x, y, z)"
    assert by_step["B"].field == "triggers[0].middleware[0]" and "must be a function" in by_step["B"].message
