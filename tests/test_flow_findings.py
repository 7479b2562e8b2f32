"""``motia-py validate`` on flow-control keys: a key path the step's input schema does not have is a warning
with the nearest field as a hint; what cannot be checked gives nothing."""

from __future__ import annotations

import json

import pytest

from motia_py.discovery import discover
from motia_py.findings import Finding, Severity
from motia_py.graph import validate
from motia_py.settings import load_settings

from .conftest import ProjectFactory
from .test_cli import run

FLOW = 'entry_topics = ["order.placed"]\n'
MODEL = """
    from pydantic import BaseModel
    class Customer(BaseModel):
        id: str
        plan: str
    class Order(BaseModel):
        orderId: str
        customer: Customer
"""


def step(queue: str, input: str = "Order", head: str = MODEL) -> str:
    return head + f"""
    config = {{"type": "event", "name": "Bill", "subscribes": ["order.placed"], "emits": [], "flows": ["f"],
              "input": {input}, "infrastructure": {{"queue": {queue}}}}}
    async def handler(input, ctx): pass
"""


def findings(make_project: ProjectFactory, source: str) -> list[Finding]:
    root = make_project({"flows/f.toml": FLOW, "steps/bill.step.py": source})
    return [f for f in validate(discover(load_settings(root))) if f.code == "flow-key-field"]


def test_a_misspelt_concurrency_key_is_a_warning_with_the_nearest_field(make_project: ProjectFactory) -> None:
    [f] = findings(make_project, step('{"concurrencyKey": "customer.idd"}'))
    assert (f.severity, f.step, f.field) == (Severity.WARNING, "Bill", "infrastructure.queue.concurrencyKey")
    assert f.hint == "did you mean 'customer.id'?"
    assert f.file is not None and f.file.name == "bill.step.py" and f.line


def test_a_rate_limit_key_missing_from_a_json_schema_input(make_project: ProjectFactory) -> None:
    schema = '{"type": "object", "properties": {"tenant": {"type": "string"}}}'
    [f] = findings(make_project, step('{"rateLimit": {"limit": 5, "period": 1, "key": "tenantt"}}', schema, ""))
    assert (f.field, f.hint) == ("infrastructure.queue.rateLimit.key", "did you mean 'tenant'?")


@pytest.mark.parametrize(("queue", "input", "head"), [
    ('{"concurrencyKey": "customer.plan", "rateLimit": {"limit": 1, "period": 1, "key": "orderId"}}', "Order", MODEL),
    ('{"concurrencyKey": "anything"}', "None", ""),  # no input schema
    ('{"concurrencyKey": "anything"}', '{"type": "object"}', ""),  # any field allowed
    ('{"concurrencyKey": lambda data: data["x"]}', "Order", MODEL),  # a function
])
def test_keys_that_exist_or_cannot_be_checked_give_nothing(make_project: ProjectFactory, queue: str, input: str,
                                                           head: str) -> None:
    assert findings(make_project, step(queue, input, head)) == []


def test_validate_prints_the_warning_and_strict_fails_on_it(make_project: ProjectFactory,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    root = make_project({"flows/f.toml": FLOW, "steps/bill.step.py": step('{"concurrencyKey": "custmer.id"}')})
    code, out, _ = run(["validate", "--project", str(root)], capsys)
    assert code == 0 and "warning[flow-key-field]" in out and "did you mean 'customer.id'?" in out
    code, out, _ = run(["validate", "--json", "--strict", "--project", str(root)], capsys)
    assert code == 1 and [f["code"] for f in json.loads(out)["findings"]] == ["flow-key-field"]


def test_a_bad_flow_value_is_an_invalid_config_error(make_project: ProjectFactory,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    root = make_project({"flows/f.toml": FLOW, "steps/bill.step.py": step('{"rateLimit": {"limit": 0, "period": 1}}')})
    code, out, _ = run(["validate", "--project", str(root)], capsys)
    assert code == 1 and "rateLimit.limit" in out
