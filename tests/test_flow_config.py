"""Flow control in step configs (``infrastructure.queue``): parsing and checks (flow_config), the control a
backend enforces and the keys of an event (flow_control)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from motia_py import EventConfig
from motia_py.backends.base import FlowControl
from motia_py.config import build_step
from motia_py.errors import InvalidEmitError, StepConfigError
from motia_py.flow_control import FlowSpec, check_priority

FILE = Path("steps/limited.step.py")


async def handler(input: Any, ctx: Any) -> None:
    return None


def flow_of(queue: dict[str, Any]) -> FlowSpec:
    config = {"type": "event", "name": "Limited", "subscribes": ["t"], "infrastructure": {"queue": queue}}
    return build_step(config, handler, FILE, 1).queue.flow


def error_of(queue: dict[str, Any]) -> StepConfigError:
    with pytest.raises(StepConfigError) as info:
        flow_of(queue)
    return info.value


def test_no_flow_keys_means_no_limits_and_priority_zero() -> None:
    flow = flow_of({})
    assert (flow.priority, flow.control, flow.keyed) == (0, None, False)


def test_every_key_in_camel_case_becomes_the_backends_control() -> None:
    flow = flow_of({"rateLimit": {"limit": 10, "period": 1, "key": "customerId"}, "globalConcurrency": 5,
                    "concurrencyKey": "customer.id", "concurrencyLimit": 2, "priority": 7})
    assert flow.priority == 7
    assert flow.control == FlowControl(rate_limit=10, rate_period_s=1.025, rate_keyed=True, global_concurrency=5,
                                       key_concurrency=2)  # windows last 25 ms longer: handlers start late
    assert flow.keyed


def test_snake_case_keys_and_a_typed_config_give_the_same_flow() -> None:
    typed = EventConfig(name="Limited", subscribes=["t"],
                        infrastructure={"queue": {"rate_limit": {"limit": 3, "period": 60}, "concurrency_key": "a"}})
    flow = build_step(typed, handler, FILE, 1).queue.flow
    assert flow.control == FlowControl(rate_limit=3, rate_period_s=60.025, key_concurrency=1)


def test_a_concurrency_key_alone_allows_one_running_per_key() -> None:
    assert flow_of({"concurrencyKey": "tenant"}).control == FlowControl(key_concurrency=1)


@pytest.mark.parametrize(("queue", "field"), [
    ({"rateLimit": {"limit": 0, "period": 1}}, "infrastructure.queue.rateLimit.limit"),
    ({"rateLimit": {"limit": 1.5, "period": 1}}, "infrastructure.queue.rateLimit.limit"),
    ({"rateLimit": {"limit": 10, "period": 0}}, "infrastructure.queue.rateLimit.period"),
    ({"rateLimit": {"limit": 10, "period": float("nan")}}, "infrastructure.queue.rateLimit.period"),
    ({"rateLimit": {"limit": 10}}, "infrastructure.queue.rateLimit.period"),
    ({"rateLimit": 10}, "infrastructure.queue.rateLimit"),
    ({"rateLimit": {"limit": 10, "period": 1, "key": ""}}, "infrastructure.queue.rateLimit.key"),
    ({"rateLimit": {"limit": 10, "period": 1, "key": "a..b"}}, "infrastructure.queue.rateLimit.key"),
    ({"globalConcurrency": 0}, "infrastructure.queue.globalConcurrency"),
    ({"globalConcurrency": True}, "infrastructure.queue.globalConcurrency"),
    ({"globalConcurrency": 10**400}, "infrastructure.queue.globalConcurrency"),
    ({"concurrencyKey": 3}, "infrastructure.queue.concurrencyKey"),
    ({"concurrencyKey": "a", "concurrencyLimit": 0}, "infrastructure.queue.concurrencyLimit"),
    ({"concurrencyLimit": 2}, "infrastructure.queue.concurrencyLimit"),
    ({"priority": 1001}, "infrastructure.queue.priority"),
    ({"priority": "high"}, "infrastructure.queue.priority"),
])
def test_bad_values_name_their_field(queue: dict[str, Any], field: str) -> None:
    assert error_of(queue).field == field


def test_an_unknown_rate_limit_key_suggests_the_nearest() -> None:
    err = error_of({"rateLimit": {"limit": 1, "peroid": 1}})
    assert err.field == "infrastructure.queue.rateLimit.peroid" and "period" in str(err.hint)


def test_a_concurrency_limit_without_a_key_points_to_global_concurrency() -> None:
    assert "globalConcurrency" in str(error_of({"concurrencyLimit": 3}).hint)


def test_a_key_function_must_take_the_event_data() -> None:
    assert error_of({"concurrencyKey": lambda: "x"}).field == "infrastructure.queue.concurrencyKey"


def test_keys_come_from_field_paths_as_text() -> None:
    flow = flow_of({"rateLimit": {"limit": 1, "period": 1, "key": "customer.id"}, "concurrencyKey": "plan"})
    assert flow.keys({"customer": {"id": 42}, "plan": "gold"}) == ("42", "gold")
    assert flow.keys({"customer": {"id": True}, "plan": {"b": 1, "a": [1]}}) == ("true", '{"a":[1],"b":1}')
    assert flow.keys({"customer": "not an object"}) == ("", "")  # missing fields share the key ""
    assert flow.keys(None) == ("", "")


def test_keys_come_from_a_function_of_the_event_data() -> None:
    flow = flow_of({"concurrencyKey": lambda data: data["email"].split("@")[1]})
    assert flow.keys({"email": "ada@example.com"}) == (None, "example.com")


def test_a_failing_key_function_fails_the_emit() -> None:
    flow = flow_of({"concurrencyKey": lambda data: data["missing"]})
    with pytest.raises(InvalidEmitError, match=r"concurrencyKey function failed.*KeyError"):
        flow.keys({})


@pytest.mark.parametrize("bad", [1001, -1001, True, 1.0, "1", None])
def test_an_emit_priority_is_an_integer_from_minus_1000_to_1000(bad: Any) -> None:
    with pytest.raises(InvalidEmitError, match="-1000 to 1000"):
        check_priority(bad)
    assert check_priority(-1000) == -1000 and check_priority(1000) == 1000


def test_short_rate_periods_get_a_margin_of_5_percent() -> None:
    control = flow_of({"rateLimit": {"limit": 1, "period": 0.1}}).control
    assert control is not None and control.rate_period_s == pytest.approx(0.105)
