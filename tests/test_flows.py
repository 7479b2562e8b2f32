"""Flow settings files: parsing, defaults, and findings for broken files."""

from __future__ import annotations

from pathlib import Path

import pytest

from motia_py.findings import Severity
from motia_py.flows import FlowSpec, load_flows


def flows_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    d = tmp_path / "flows"
    d.mkdir()
    for name, text in files.items():
        (d / name).write_text(text)
    return d


def test_flow_file_is_parsed(tmp_path: Path) -> None:
    d = flows_dir(tmp_path, {"job-processing.toml": """
description = "Runs background jobs with retries"
state_namespace = "jobs"
entry_topics = ["job.enqueued"]
exit_topics = ["job.completed", "job.failed"]
"""})
    flows, problems = load_flows(d)
    assert problems == []
    flow = flows["job-processing"]
    assert flow == FlowSpec(
        name="job-processing",
        description="Runs background jobs with retries",
        state_namespace="jobs",
        entry_topics=("job.enqueued",),
        exit_topics=("job.completed", "job.failed"),
        file=d / "job-processing.toml",
    )
    assert flow.namespace == "jobs"


def test_empty_flow_file_gets_defaults_and_its_own_namespace(tmp_path: Path) -> None:
    flows, problems = load_flows(flows_dir(tmp_path, {"billing.toml": ""}))
    assert problems == []
    flow = flows["billing"]
    assert (flow.description, flow.entry_topics, flow.exit_topics) == ("", (), ())
    assert flow.namespace == "billing"


def test_flow_without_a_file_defaults_to_its_own_namespace() -> None:
    assert FlowSpec(name="orders").namespace == "orders"
    assert FlowSpec(name="orders", state_namespace="shop").namespace == "shop"


def test_flows_sharing_a_namespace_both_report_it(tmp_path: Path) -> None:
    d = flows_dir(tmp_path, {
        "processing.toml": 'state_namespace = "jobs"\n',
        "scheduling.toml": 'state_namespace = "jobs"\n',
        "monitoring.toml": "",
    })
    flows, problems = load_flows(d)
    assert problems == []
    assert {name: f.namespace for name, f in flows.items()} == {
        "processing": "jobs", "scheduling": "jobs", "monitoring": "monitoring"
    }


def test_missing_flows_directory_gives_no_flows_and_no_problems(tmp_path: Path) -> None:
    assert load_flows(tmp_path / "flows") == ({}, [])


def test_only_toml_files_are_read(tmp_path: Path) -> None:
    d = flows_dir(tmp_path, {"a.toml": "", "notes.md": "# hi", "b.toml.bak": "broken ["})
    flows, problems = load_flows(d)
    assert list(flows) == ["a"]
    assert problems == []


def test_unknown_key_is_reported_with_a_hint(tmp_path: Path) -> None:
    d = flows_dir(tmp_path, {"jobs.toml": 'state_namespce = "jobs"\n'})
    flows, problems = load_flows(d)
    assert flows == {}
    (problem,) = problems
    assert problem.code == "invalid-flow-file"
    assert problem.severity is Severity.ERROR
    assert problem.file == d / "jobs.toml"
    assert problem.field == "state_namespce"
    assert problem.hint == "did you mean 'state_namespace'?"


def test_unknown_key_with_nothing_close_has_no_hint(tmp_path: Path) -> None:
    _, problems = load_flows(flows_dir(tmp_path, {"jobs.toml": "zzz = 1\n"}))
    (problem,) = problems
    assert problem.field == "zzz"
    assert problem.hint is None


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('entry_topics = "job.enqueued"\n', "entry_topics"),
        ("entry_topics = [1, 2]\n", "entry_topics"),
        ('entry_topics = [""]\n', "entry_topics"),
        ('exit_topics = "job.done"\n', "exit_topics"),
        ("description = 5\n", "description"),
        ('state_namespace = ["a"]\n', "state_namespace"),
    ],
)
def test_wrong_types_are_reported_naming_the_key(tmp_path: Path, text: str, field: str) -> None:
    d = flows_dir(tmp_path, {"jobs.toml": text})
    flows, problems = load_flows(d)
    assert "jobs" not in flows
    (problem,) = problems
    assert (problem.code, problem.field, problem.file) == ("invalid-flow-file", field, d / "jobs.toml")


def test_every_problem_in_one_file_is_reported(tmp_path: Path) -> None:
    d = flows_dir(tmp_path, {"jobs.toml": 'descripton = "x"\nentry_topics = "a"\ndescription = 1\n'})
    _, problems = load_flows(d)
    assert sorted(p.field or "" for p in problems) == ["description", "descripton", "entry_topics"]


def test_unparsable_file_is_reported_and_the_others_still_load(tmp_path: Path) -> None:
    d = flows_dir(tmp_path, {"broken.toml": "description = \n[[", "good.toml": 'description = "ok"\n'})
    flows, problems = load_flows(d)
    assert list(flows) == ["good"]
    (problem,) = problems
    assert problem.code == "invalid-flow-file"
    assert problem.file == d / "broken.toml"
    assert "cannot parse" in problem.message


def test_problems_from_several_files_are_all_reported(tmp_path: Path) -> None:
    d = flows_dir(tmp_path, {"a.toml": "[[", "b.toml": "oops = 1\n", "c.toml": "exit_topics = 3\n", "d.toml": ""})
    flows, problems = load_flows(d)
    assert list(flows) == ["d"]
    assert sorted(p.file.name for p in problems if p.file) == ["a.toml", "b.toml", "c.toml"]


def test_a_folder_named_like_a_flow_file_is_a_finding(tmp_path: Path) -> None:
    d = flows_dir(tmp_path, {"good.toml": 'description = "ok"\n'})
    (d / "x.toml").mkdir()
    flows, problems = load_flows(d)
    assert list(flows) == ["good"]
    assert [(p.code, p.severity, p.file) for p in problems] == [("invalid-flow-file", Severity.ERROR, d / "x.toml")]
    assert "cannot read" in problems[0].message


def test_a_flow_file_nested_too_deep_or_with_control_characters_is_a_finding(tmp_path: Path) -> None:
    d = flows_dir(tmp_path, {"deep.toml": "entry_topics = " + "[" * 5_000 + "]" * 5_000 + "\n",
                             "ctl.toml": 'entry_topics = ["job\\u0000done"]\n'})
    flows, problems = load_flows(d)
    assert flows == {}
    assert sorted((p.file.name if p.file else "", p.code) for p in problems) == [
        ("ctl.toml", "invalid-flow-file"), ("deep.toml", "invalid-flow-file")]
