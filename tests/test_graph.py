"""The topic graph: one test per finding code, exit codes, and the Mermaid/DOT/JSON exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from motia_py.discovery import Project, discover
from motia_py.errors import GraphError
from motia_py.findings import Finding, Severity
from motia_py.graph import (
    build_graph,
    exit_code,
    step_node,
    to_dot,
    to_json,
    to_mermaid,
    topic_node,
    validate,
)
from motia_py.settings import load_settings

from .conftest import ProjectFactory


def event(name: str, subscribes: list[str], emits: list[Any] | None = None, **extra: Any) -> str:
    config = {"type": "event", "name": name, "subscribes": subscribes, "emits": emits or [], "flows": ["f"],
              **extra}
    return f"config = {config!r}\n\nasync def handler(input, ctx):\n    pass\n"


def cron(name: str, emits: list[Any], **extra: Any) -> str:
    config = {"type": "cron", "name": name, "cron": "*/10 * * * * *", "emits": emits, "flows": ["f"], **extra}
    return f"config = {config!r}\n\nasync def handler(ctx):\n    pass\n"


def api(name: str, emits: list[Any], **extra: Any) -> str:
    config = {"type": "api", "name": name, "path": "/x", "method": "POST", "emits": emits, "flows": ["f"],
              **extra}
    return f"config = {config!r}\n\nasync def handler(req, ctx):\n    pass\n"


def noop(name: str, virtual_emits: list[str], virtual_subscribes: list[str], **extra: Any) -> str:
    config = {"type": "noop", "name": name, "virtualEmits": virtual_emits,
              "virtualSubscribes": virtual_subscribes, "flows": ["f"], **extra}
    return f"config = {config!r}\n"


def load(make_project: ProjectFactory, files: dict[str, str]) -> Project:
    return discover(load_settings(make_project(files)))


def only(findings: list[Finding], code: str) -> Finding:
    matches = [f for f in findings if f.code == code]
    assert len(matches) == 1, findings
    return matches[0]


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


PIPELINE = {
    "steps/c.step.py": cron("C", ["job.enqueued"]),
    "steps/a.step.py": event("A", ["job.enqueued"], ["job.done"]),
    "steps/b.step.py": event("B", ["job.done"]),
}


def check_pipeline(make_project: ProjectFactory, changes: dict[str, str]) -> list[Finding]:
    """Validate the clean three-step pipeline with ``changes`` applied (files added or replaced)."""
    return validate(load(make_project, {**PIPELINE, **changes}))


# ---------------------------------------------------------------------------------------------------
# The graph itself.


def test_graph_has_step_and_topic_nodes_with_virtual_edges_marked(make_project: ProjectFactory) -> None:
    project = load(make_project, {**PIPELINE, "steps/n.step.py": noop("N", ["job.done"], ["job.enqueued"])})
    graph = build_graph(project)
    g = graph.nx_graph
    assert g.nodes[step_node("A")]["kind"] == "step"
    assert g.nodes[topic_node("job.enqueued")]["kind"] == "topic"
    assert g.has_edge(step_node("C"), topic_node("job.enqueued"))
    assert g.has_edge(topic_node("job.enqueued"), step_node("A"))
    virtual = [(u, v) for u, v, d in g.edges(data=True) if d["virtual"]]
    assert sorted(virtual) == [(step_node("N"), topic_node("job.done")),
                               (topic_node("job.enqueued"), step_node("N"))]


def test_entry_points_are_cron_api_input_less_noop_steps_and_flow_entry_topics(
    make_project: ProjectFactory,
) -> None:
    project = load(make_project, {
        "steps/c.step.py": cron("C", ["a"]),
        "steps/api.step.py": api("Api", ["a"]),
        "steps/n.step.py": noop("N", ["a"], []),
        "steps/m.step.py": noop("M", ["b"], ["a"]),
        "steps/a.step.py": event("A", ["a", "b", "x"]),
        "flows/f.toml": 'entry_topics = ["x"]\n',
    })
    graph = build_graph(project)
    assert graph.entry_points() == {step_node("C"), step_node("Api"), step_node("N"), topic_node("x")}
    assert step_node("A") in graph.reachable()


# ---------------------------------------------------------------------------------------------------
# Findings, one code at a time.


def test_clean_project_has_no_errors_or_warnings(make_project: ProjectFactory) -> None:
    findings = validate(load(make_project, PIPELINE))
    assert findings == []
    assert exit_code(findings, strict=True) == 0


def test_discovery_problems_are_reported_first(make_project: ProjectFactory) -> None:
    project = load(make_project, {**PIPELINE, "steps/bad.step.py": "config = {\n"})
    findings = validate(project)
    assert codes(findings) == ["syntax-error"]
    assert findings[0].file is not None and findings[0].file.name == "bad.step.py"


def test_duplicate_step_names_both_files(make_project: ProjectFactory) -> None:
    findings = validate(load(make_project, {**PIPELINE, "steps/z.step.py": event("A", ["job.enqueued"])}))
    f = only(findings, "duplicate-step")
    assert f.severity is Severity.ERROR
    assert f.step == "A"
    assert f.file is not None and f.file.name == "z.step.py"
    assert "steps/a.step.py" in f.message and "steps/z.step.py" in f.message
    assert f.line == 1


def test_unknown_topic_suggests_the_nearest_known_topic(make_project: ProjectFactory) -> None:
    findings = check_pipeline(make_project, {"steps/a.step.py": event("A", ["job.enqeued"], ["job.done"])})
    f = only(findings, "unknown-topic")
    assert f.severity is Severity.ERROR
    assert f.step == "A"
    assert f.file is not None and f.file.name == "a.step.py"
    assert f.field == "subscribes"
    assert "'job.enqeued'" in f.message
    assert f.hint == "did you mean 'job.enqueued'?"
    # The error already names the step; it is not also reported unreachable.
    assert not [x for x in findings if x.code == "unreachable-step" and x.step == "A"]
    assert exit_code(findings, strict=False) == 1


def test_unknown_virtual_subscribe_is_an_error_too(make_project: ProjectFactory) -> None:
    findings = validate(load(make_project, {**PIPELINE, "steps/n.step.py": noop("N", [], ["job.dnoe"])}))
    f = only(findings, "unknown-topic")
    assert (f.step, f.field, f.hint) == ("N", "virtualSubscribes", "did you mean 'job.done'?")


def test_flow_entry_topic_is_a_known_topic_and_an_entry_point(make_project: ProjectFactory) -> None:
    findings = validate(load(make_project, {
        "steps/a.step.py": event("A", ["orders.placed"], ["job.done"]),
        "steps/b.step.py": event("B", ["job.done"]),
        "flows/f.toml": 'entry_topics = ["orders.placed"]\n',
    }))
    assert findings == []


def test_schema_mismatch_names_emitter_topic_subscriber_and_problem(make_project: ProjectFactory) -> None:
    produced = {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}
    expected = {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}
    findings = validate(load(make_project, {
        **PIPELINE,
        "steps/c.step.py": cron("C", [{"topic": "job.enqueued", "schema": produced}]),
        "steps/a.step.py": event("A", ["job.enqueued"], ["job.done"], input=expected),
    }))
    f = only(findings, "schema-mismatch")
    assert f.severity is Severity.ERROR
    assert f.step == "C"
    assert f.file is not None and f.file.name == "c.step.py"
    assert f.field == "emits[0].schema"
    assert "'C'" in f.message and "'job.enqueued'" in f.message and "'A'" in f.message
    assert "'id' is string from the emitter but integer for the subscriber" in f.message
    assert f.hint is not None and "steps/a.step.py" in f.hint


def test_compatible_schemas_are_clean(make_project: ProjectFactory) -> None:
    schema = {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}
    findings = validate(load(make_project, {
        **PIPELINE,
        "steps/c.step.py": cron("C", [{"topic": "job.enqueued", "schema": schema}]),
        "steps/a.step.py": event("A", ["job.enqueued"], ["job.done"], input=schema),
    }))
    assert findings == []


def test_unknown_flow_file_suggests_the_nearest_used_flow(make_project: ProjectFactory) -> None:
    findings = validate(load(make_project, {
        "steps/c.step.py": cron("C", ["a"], flows=["orders"]),
        "steps/a.step.py": event("A", ["a"], flows=["orders"]),
        "flows/order.toml": 'description = "typo"\n',
    }))
    f = only(findings, "unknown-flow")
    assert f.severity is Severity.ERROR
    assert f.step is None
    assert f.file is not None and f.file.name == "order.toml"
    assert f.hint == "did you mean 'orders'?"


def test_unconsumed_topic_suggests_the_nearest_subscribed_topic(make_project: ProjectFactory) -> None:
    findings = check_pipeline(make_project, {"steps/a.step.py": event("A", ["job.enqueued"], ["job.doen"])})
    f = only(findings, "unconsumed-topic")
    assert f.severity is Severity.WARNING
    assert f.step == "A"
    assert f.file is not None and f.file.name == "a.step.py"
    assert f.hint == "did you mean 'job.done'?"
    assert exit_code([f], strict=False) == 0
    assert exit_code([f], strict=True) == 1


def test_flow_exit_topic_is_consumed(make_project: ProjectFactory) -> None:
    findings = validate(load(make_project, {
        **PIPELINE,
        "steps/b.step.py": event("B", ["job.done"], ["job.reported"]),
        "flows/f.toml": 'exit_topics = ["job.reported"]\n',
    }))
    assert findings == []


def test_step_in_no_flow_is_a_warning(make_project: ProjectFactory) -> None:
    findings = check_pipeline(make_project, {"steps/b.step.py": event("B", ["job.done"], flows=[])})
    f = only(findings, "no-flow")
    assert f.severity is Severity.WARNING
    assert (f.step, f.field, f.line) == ("B", "flows", 1)
    assert f.file is not None and f.file.name == "b.step.py"
    assert f.hint == "add 'flows': ['f'] to its config"


def test_step_that_no_entry_point_reaches_is_unreachable(make_project: ProjectFactory) -> None:
    findings = validate(load(make_project, {
        **PIPELINE,
        "steps/d.step.py": event("D", ["ping"], ["pong"]),
        "steps/e.step.py": event("E", ["pong"], ["ping"]),
    }))
    unreachable = [f for f in findings if f.code == "unreachable-step"]
    assert [(f.step, f.severity) for f in unreachable] == [("D", Severity.WARNING), ("E", Severity.WARNING)]
    assert unreachable[0].file is not None and unreachable[0].file.name == "d.step.py"
    assert "'ping'" in unreachable[0].message
    assert exit_code(findings, strict=False) == 0


def test_noop_step_without_inputs_starts_the_graph(make_project: ProjectFactory) -> None:
    findings = validate(load(make_project, {
        "steps/n.step.py": noop("N", ["job.enqueued"], []),
        "steps/a.step.py": event("A", ["job.enqueued"], ["job.done"]),
        "steps/b.step.py": event("B", ["job.done"]),
    }))
    assert findings == []


def test_api_step_starts_the_graph(make_project: ProjectFactory) -> None:
    findings = validate(load(make_project, {**PIPELINE, "steps/c.step.py": api("Api", ["job.enqueued"])}))
    assert findings == []


def test_cycle_is_info_reported_once_and_never_fails(make_project: ProjectFactory) -> None:
    findings = validate(load(make_project, {
        "steps/c.step.py": cron("C", ["a"]),
        "steps/a.step.py": event("A", ["a"], ["b"]),
        "steps/b.step.py": event("B", ["b"], ["a", {"topic": "a", "label": "again"}]),
    }))
    f = only(findings, "cycle")
    assert f.severity is Severity.INFO
    assert f.step == "A"
    assert f.file is not None and f.file.name == "a.step.py"
    assert f.message == "cycle: A -[b]-> B -[a]-> A"
    assert codes(findings) == ["cycle"]
    assert exit_code(findings, strict=True) == 0


def test_findings_are_sorted_errors_then_warnings_then_info(make_project: ProjectFactory) -> None:
    findings = validate(load(make_project, {
        **PIPELINE,
        "steps/d.step.py": event("D", ["ping"], ["pong"]),
        "steps/e.step.py": event("E", ["pong"], ["ping", "nobody"], flows=[]),
        "steps/f.step.py": event("F", ["job.dnoe"]),
    }))
    ranks = [[Severity.ERROR, Severity.WARNING, Severity.INFO].index(f.severity) for f in findings]
    assert ranks == sorted(ranks)
    expected = {"unknown-topic", "unconsumed-topic", "no-flow", "unreachable-step", "cycle"}
    assert expected <= set(codes(findings))
    assert all(f.file is not None and f.step is not None and f.line == 1 for f in findings)


@pytest.mark.parametrize(
    ("severities", "strict", "expected"),
    [
        ([], False, 0),
        ([], True, 0),
        ([Severity.INFO], True, 0),
        ([Severity.WARNING, Severity.INFO], False, 0),
        ([Severity.WARNING], True, 1),
        ([Severity.ERROR], False, 1),
        ([Severity.ERROR, Severity.WARNING], True, 1),
    ],
)
def test_exit_code(severities: list[Severity], strict: bool, expected: int) -> None:
    findings = [Finding("x", s, "m") for s in severities]
    assert exit_code(findings, strict=strict) == expected


# ---------------------------------------------------------------------------------------------------
# Exports.

TWO_FLOWS = {
    **PIPELINE,
    "steps/n.step.py": noop("N", ["job.done"], ["job.enqueued"]),
    "steps/r.step.py": api("Report", ["report.wanted"], flows=["reports"]),
    "steps/w.step.py": event("Writer", ["report.wanted"], flows=["reports"]),
}

_MERMAID_ID = r"[A-Za-z0-9_]+"


def test_mermaid_has_steps_topics_safe_ids_and_dotted_virtual_edges(make_project: ProjectFactory) -> None:
    text = to_mermaid(load(make_project, TWO_FLOWS))
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    for name in ("C", "A", "B", "N", "Report", "Writer", "job.enqueued", "job.done", "report.wanted"):
        assert f'"{name}' in text
    assert '"A<br/>event"' in text and '"Report<br/>api POST /x"' in text
    edges = [line.strip() for line in lines if "-->" in line or "-.->" in line]
    for edge in edges:
        assert re.fullmatch(rf"{_MERMAID_ID} (-->|-\.->)(\|\"[^\"]*\"\|)? {_MERMAID_ID}", edge), edge
    assert any("-.->" in edge for edge in edges)
    assert "job.enqueued(" not in text  # a dotted id would break Mermaid


def test_ids_stay_unique_after_sanitizing(make_project: ProjectFactory) -> None:
    text = to_mermaid(load(make_project, {
        "steps/c.step.py": cron("C", ["a.b", "a_b"]),
        "steps/a.step.py": event("A", ["a.b", "a_b"]),
    }))
    assert 't_a_b("a.b")' in text and 't_a_b_2("a_b")' in text


def test_dot_has_steps_topics_and_dashed_virtual_edges(make_project: ProjectFactory) -> None:
    text = to_dot(load(make_project, TWO_FLOWS))
    assert text.startswith("digraph motia {")
    for name in ("C", "A", "N", "Writer", "job.enqueued", "report.wanted"):
        assert f'"{name}' in text
    assert "style=dashed" in text
    edges = [line.strip() for line in text.splitlines() if " -> " in line]
    assert edges and all(re.match(rf"{_MERMAID_ID} -> {_MERMAID_ID}( \[|;)", e) for e in edges)


def test_json_export_round_trips_and_links_steps_through_topics(make_project: ProjectFactory) -> None:
    data = to_json(load(make_project, TWO_FLOWS))
    assert json.loads(json.dumps(data)) == data
    assert data["flows"] == ["f", "reports"]
    assert {s["name"] for s in data["steps"]} == {"C", "A", "B", "N", "Report", "Writer"}
    assert set(data["topics"]) == {"job.enqueued", "job.done", "report.wanted"}
    api_step = next(s for s in data["steps"] if s["name"] == "Report")
    assert (api_step["type"], api_step["path"], api_step["method"], api_step["file"]) == (
        "api", "/x", "POST", "steps/r.step.py")
    assert next(s for s in data["steps"] if s["name"] == "C")["cron"] == "*/10 * * * * *"
    edge = {"from": "C", "to": "A", "topic": "job.enqueued", "virtual": False, "label": None,
            "conditional": False}
    assert edge in data["edges"]
    assert {"from": "C", "to": "N", "topic": "job.enqueued", "virtual": True, "label": None,
            "conditional": False} in data["edges"]


def test_exports_filter_by_flow(make_project: ProjectFactory) -> None:
    project = load(make_project, TWO_FLOWS)
    data = to_json(project, "reports")
    assert data["flows"] == ["reports"]
    assert [s["name"] for s in data["steps"]] == ["Report", "Writer"]
    assert data["topics"] == ["report.wanted"]
    assert data["edges"] == [{"from": "Report", "to": "Writer", "topic": "report.wanted", "virtual": False,
                              "label": None, "conditional": False}]
    for text in (to_mermaid(project, "reports"), to_dot(project, "reports")):
        assert "Writer" in text and "report.wanted" in text
        assert "job.enqueued" not in text and '"A' not in text


def test_unknown_flow_in_export_raises_with_a_suggestion(make_project: ProjectFactory) -> None:
    project = load(make_project, TWO_FLOWS)
    for export in (to_mermaid, to_dot, to_json):
        with pytest.raises(GraphError, match=r"unknown flow 'report'; did you mean 'reports'\?"):
            export(project, "report")


def test_step_files_in_findings_are_real_paths(make_project: ProjectFactory) -> None:
    root = make_project({**PIPELINE, "steps/b.step.py": event("B", ["job.done"], flows=[])})
    finding = only(validate(discover(load_settings(root))), "no-flow")
    assert finding.file == Path(root / "steps" / "b.step.py")
    assert finding.location(root) == "steps/b.step.py:1"


def test_exports_draw_a_duplicated_step_once(make_project: ProjectFactory) -> None:
    project = load(make_project, {**PIPELINE, "steps/z.step.py": event("A", ["job.enqueued"])})
    assert to_mermaid(project).count('s_A["A<br/>event"]') == 1
    assert to_dot(project).count("s_A [shape=box") == 1
