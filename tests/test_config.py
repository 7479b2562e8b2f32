"""Step configs -> StepSpec: key spellings, suggestions, per-type rules, handler checks, typed configs."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pydantic
import pytest
from msgspec import structs

from motia_py import ApiConfig, CronConfig, EventConfig, NoopConfig
from motia_py.config import BackoffSpec, QueryParam, QueueSpec, StepType, build_step
from motia_py.errors import CronExpressionError, MotiaError, StepConfigError

FILE = Path("steps/example.step.py")


async def event_handler(input: Any, ctx: Any) -> None:
    return None


async def cron_handler(ctx: Any) -> None:
    return None


async def api_handler(req: Any, ctx: Any) -> dict[str, Any]:
    return {"status": 200, "body": {}}


def fields_of(spec: Any) -> dict[str, Any]:
    """A spec's field values (StepSpec compares by identity, so tests compare its fields)."""
    return {f.name: getattr(spec, f.name) for f in structs.fields(spec)}


def event(**extra: Any) -> dict[str, Any]:
    return {"type": "event", "name": "Worker", "subscribes": ["job.enqueued"], **extra}


def build_event(**extra: Any) -> Any:
    return build_step(event(**extra), event_handler, FILE, 1)


def config_error(config: Any, handler: Any = event_handler) -> StepConfigError:
    with pytest.raises(StepConfigError) as info:
        build_step(config, handler, FILE, 1)
    return info.value


class Job(pydantic.BaseModel):
    id: str
    attempts: int = 0


# --- key spellings ------------------------------------------------------------------------------


def test_camel_case_and_snake_case_keys_give_the_same_spec() -> None:
    infra_camel = {
        "handler": {"timeout": 12},
        "queue": {"type": "fifo", "maxRetries": 5, "visibilityTimeout": 30, "delaySeconds": 2,
                  "backoff": {"type": "fixed", "delay": 3, "maxDelay": 9, "jitter": False}},
    }
    infra_snake = {
        "handler": {"timeout": 12},
        "queue": {"type": "fifo", "max_retries": 5, "visibility_timeout": 30, "delay_seconds": 2,
                  "backoff": {"type": "fixed", "delay": 3, "max_delay": 9, "jitter": False}},
    }
    camel = build_step(
        event(virtualEmits=["audit"], virtualSubscribes=["human.review"], emits=["job.done"],
              infrastructure=infra_camel),
        event_handler, FILE, 3,
    )
    snake = build_step(
        event(virtual_emits=["audit"], virtual_subscribes=["human.review"], emits=["job.done"],
              infrastructure=infra_snake),
        event_handler, FILE, 3,
    )
    assert fields_of(camel) == fields_of(snake)
    assert camel.virtual_emits[0].topic == "audit"
    assert camel.virtual_subscribes == ("human.review",)
    assert camel.queue.max_retries == 5
    assert camel.queue.visibility_timeout_s == 30.0


def test_api_body_and_response_schema_accept_both_spellings() -> None:
    body = {"type": "object", "properties": {"id": {"type": "string"}}}
    base = {"type": "api", "name": "Get", "path": "/jobs/:id", "method": "POST"}
    camel = build_step({**base, "bodySchema": body, "responseSchema": {200: body}, "queryParams": ["q"]},
                       api_handler, FILE, 1)
    snake = build_step({**base, "body_schema": body, "response_schema": {200: body}, "query_params": ["q"]},
                       api_handler, FILE, 1)
    assert fields_of(camel) == fields_of(snake)
    assert camel.api is not None
    assert camel.api.query_params == (QueryParam(name="q"),)


def test_same_key_given_in_both_spellings_is_rejected() -> None:
    err = config_error(event(virtualEmits=["a"], virtual_emits=["b"]))
    assert err.field == "virtual_emits"
    assert "twice" in str(err)


@pytest.mark.parametrize(
    ("extra", "field", "hint"),
    [
        ({"subscribe": ["x"]}, "subscribe", "did you mean 'subscribes'?"),
        ({"virtualEmit": ["x"]}, "virtualEmit", "did you mean 'virtualEmits'?"),
        ({"virtual_emit": ["x"]}, "virtual_emit", "did you mean 'virtual_emits'?"),
        ({"emit": ["x"]}, "emit", "did you mean 'emits'?"),
        ({"infrastructure": {"queue": {"maxRetry": 3}}}, "infrastructure.queue.maxRetry",
         "did you mean 'maxRetries'?"),
        ({"infrastructure": {"queue": {"max_retry": 3}}}, "infrastructure.queue.max_retry",
         "did you mean 'max_retries'?"),
        ({"infrastructure": {"handler": {"timout": 3}}}, "infrastructure.handler.timout",
         "did you mean 'timeout'?"),
        ({"infrastructure": {"queue": {"backoff": {"maxDelays": 3}}}}, "infrastructure.queue.backoff.maxDelays",
         "did you mean 'maxDelay'?"),
        ({"emits": [{"topic": "x", "lable": "l"}]}, "emits[0].lable", "did you mean 'label'?"),
    ],
)
def test_unknown_key_is_rejected_with_the_nearest_valid_key(extra: dict[str, Any], field: str, hint: str) -> None:
    err = config_error(event(**extra))
    assert err.field == field
    assert err.hint == hint
    assert field.rsplit(".", 1)[-1].split("]")[-1].lstrip(".") in str(err)


def test_unknown_key_with_nothing_close_lists_the_valid_keys() -> None:
    err = config_error(event(zzzzzz=1))
    assert err.field == "zzzzzz"
    assert err.hint is not None
    assert err.hint.startswith("valid keys:")
    assert "subscribes" in err.hint


def test_key_valid_for_another_step_type_is_unknown_here() -> None:
    err = config_error(event(cron="* * * * *"))
    assert err.field == "cron"


def test_cron_policy_is_not_accepted_on_event_steps() -> None:
    err = config_error(event(infrastructure={"cron": {"overlap": "allow"}}))
    assert err.field == "infrastructure.cron"


def test_motia_cloud_keys_are_accepted_and_ignored() -> None:
    plain = build_event(infrastructure={"handler": {"timeout": 5}})
    with_cloud = build_event(includeFiles=["../data/*.json"],
                             infrastructure={"handler": {"timeout": 5, "ram": 2048, "cpu": 2}})
    snake_cloud = build_event(include_files=["x"], infrastructure={"handler": {"timeout": 5, "ram": 1}})
    assert fields_of(with_cloud) == fields_of(plain) == fields_of(snake_cloud)
    assert plain.timeout_s == 5.0


# --- types and required fields --------------------------------------------------------------------


def test_missing_type_is_rejected_with_the_choices() -> None:
    err = config_error({"name": "A", "subscribes": ["x"]})
    assert err.field == "type"
    assert err.hint == "one of event, cron, api, noop, state"


def test_misspelled_type_suggests_the_nearest_type() -> None:
    err = config_error(event(type="evnt"))
    assert err.field == "type"
    assert err.hint == "did you mean 'event'?"
    assert "evnt" in str(err)


def test_config_that_is_neither_dict_nor_typed_config_is_rejected() -> None:
    err = config_error(["event"])
    assert err.field == "config"


@pytest.mark.parametrize("name", [None, "", "   ", 5])
def test_step_needs_a_non_empty_name(name: Any) -> None:
    config = event()
    if name is None:
        del config["name"]
    else:
        config["name"] = name
    assert config_error(config).field == "name"


@pytest.mark.parametrize("subscribes", [None, [], "job.enqueued", [""], [1]])
def test_event_step_needs_subscribes_as_a_list_of_topics(subscribes: Any) -> None:
    config = event()
    if subscribes is None:
        del config["subscribes"]
    else:
        config["subscribes"] = subscribes
    assert config_error(config).field == "subscribes"


def test_subscribes_given_as_a_string_hints_at_a_list() -> None:
    err = config_error(event(subscribes="job.enqueued"))
    assert err.hint == "write ['job.enqueued']"


def test_cron_step_needs_a_cron_expression() -> None:
    err = config_error({"type": "cron", "name": "Tick"}, cron_handler)
    assert err.field == "cron"
    assert err.hint is not None


def test_cron_step_with_a_bad_expression_raises_cron_expression_error() -> None:
    with pytest.raises(CronExpressionError) as info:
        build_step({"type": "cron", "name": "Tick", "cron": "* * *"}, cron_handler, FILE)
    assert info.value.field == "cron"


def test_cron_step_with_an_unknown_time_zone_names_the_timezone_field() -> None:
    with pytest.raises(CronExpressionError) as info:
        build_step({"type": "cron", "name": "Tick", "cron": "0 9 * * *", "timezone": "Mars/Olympus"},
                   cron_handler, FILE)
    assert info.value.field == "timezone"


def test_cron_step_timezone_must_be_a_string() -> None:
    err = config_error({"type": "cron", "name": "Tick", "cron": "0 9 * * *", "timezone": 1}, cron_handler)
    assert err.field == "timezone"


def test_cron_step_parses_schedule_and_policy() -> None:
    spec = build_step(
        {"type": "cron", "name": "Tick", "cron": "*/10 * * * * *", "timezone": "Europe/Paris",
         "infrastructure": {"cron": {"overlap": "allow", "missed": "run_once"}}},
        cron_handler, FILE,
    )
    assert spec.type is StepType.CRON
    assert spec.cron is not None
    assert spec.cron.expression == "*/10 * * * * *"
    assert spec.cron.timezone == "Europe/Paris"
    assert spec.cron_policy.overlap == "allow"
    assert spec.cron_policy.missed == "run_once"


def test_cron_policy_defaults_to_skip() -> None:
    spec = build_step({"type": "cron", "name": "Tick", "cron": "0 * * * *"}, cron_handler, FILE)
    assert (spec.cron_policy.overlap, spec.cron_policy.missed) == ("skip", "skip")
    assert spec.cron is not None
    assert spec.cron.timezone == "UTC"


def test_cron_policy_value_misspelled_suggests_the_choice() -> None:
    err = config_error({"type": "cron", "name": "Tick", "cron": "0 * * * *",
                        "infrastructure": {"cron": {"overlap": "alow"}}}, cron_handler)
    assert err.field == "infrastructure.cron.overlap"
    assert err.hint == "did you mean 'allow'?"


@pytest.mark.parametrize("path", [None, "", "jobs", 5])
def test_api_step_needs_a_path_starting_with_a_slash(path: Any) -> None:
    config: dict[str, Any] = {"type": "api", "name": "Get"}
    if path is not None:
        config["path"] = path
    err = config_error(config, api_handler)
    assert err.field == "path"
    assert err.hint is not None


def test_noop_step_needs_virtual_edges() -> None:
    err = config_error({"type": "noop", "name": "Human"}, None)
    assert err.field == "virtualSubscribes"


@pytest.mark.parametrize("key", ["virtualEmits", "virtualSubscribes"])
def test_noop_step_with_either_virtual_edge_loads_without_handler(key: str) -> None:
    spec = build_step({"type": "noop", "name": "Human", key: ["review.done"]}, None, FILE)
    assert spec.type is StepType.NOOP
    assert spec.handler is None


# --- emits -----------------------------------------------------------------------------------------


def test_emits_accept_strings_and_objects() -> None:
    spec = build_event(emits=[
        "job.done",
        {"topic": "job.failed", "label": "on failure", "conditional": True},
        {"topic": "job.audited", "schema": Job},
        {"topic": "job.logged", "schema": {"type": "object", "required": ["id"]}},
    ])
    done, failed, audited, logged = spec.emits
    assert (done.topic, done.label, done.conditional, done.schema) == ("job.done", None, False, None)
    assert (failed.topic, failed.label, failed.conditional) == ("job.failed", "on failure", True)
    assert audited.schema is not None
    assert audited.schema.model is Job
    assert logged.schema is not None
    assert logged.schema.json == {"type": "object", "required": ["id"]}
    assert spec.emit_topics == {"job.done", "job.failed", "job.audited", "job.logged"}
    assert spec.emit_spec("job.failed") is failed
    assert spec.emit_spec("nope") is None


@pytest.mark.parametrize(
    ("emits", "field"),
    [
        ("job.done", "emits"),
        ([5], "emits[0]"),
        ([""], "emits[0]"),
        (["ok", {"label": "x"}], "emits[1].topic"),
        ([{"topic": "x", "schema": {"type": "nonsense"}}], "emits[0].schema"),
    ],
)
def test_invalid_emits_name_the_bad_entry(emits: Any, field: str) -> None:
    assert config_error(event(emits=emits)).field == field


def test_virtual_emits_accept_the_same_forms_as_emits() -> None:
    spec = build_event(virtualEmits=["a", {"topic": "b", "label": "maybe"}])
    assert [(e.topic, e.label) for e in spec.virtual_emits] == [("a", None), ("b", "maybe")]
    assert spec.emit_topics == frozenset()


# --- input schemas ----------------------------------------------------------------------------------


def test_input_as_a_pydantic_model_class_keeps_the_model() -> None:
    spec = build_event(input=Job)
    assert spec.input is not None
    assert spec.input.model is Job
    assert spec.input.json == Job.model_json_schema()


def test_input_as_a_json_schema_dict_is_kept() -> None:
    schema = {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}
    spec = build_event(input=schema)
    assert spec.input is not None
    assert spec.input.model is None
    assert spec.input.json == schema


def test_invalid_json_schema_dict_is_rejected_naming_input() -> None:
    err = config_error(event(input={"type": "nonsense"}))
    assert err.field == "input"
    assert "JSON schema" in str(err)


def test_input_that_is_neither_model_nor_dict_is_rejected_with_a_hint() -> None:
    err = config_error(event(input=Job(id="x")))
    assert err.field == "input"
    assert err.hint is not None


def test_no_input_means_no_schema() -> None:
    assert build_event().input is None


# --- infrastructure ------------------------------------------------------------------------------------


def test_queue_settings_default_when_infrastructure_is_absent() -> None:
    spec = build_event()
    assert spec.queue == QueueSpec()
    assert spec.queue.type == "standard"
    assert spec.queue.max_retries == 3
    assert spec.queue.fifo is False
    assert spec.queue.backoff == BackoffSpec(type="exponential", delay_s=1.0, max_delay_s=300.0, jitter=True)
    assert spec.timeout_s == 300.0


def test_queue_settings_are_parsed() -> None:
    spec = build_event(infrastructure={
        "handler": {"timeout": 2.5},
        "queue": {"type": "fifo", "maxRetries": 0, "visibilityTimeout": 10, "delaySeconds": 1.5,
                  "concurrency": 4, "backoff": {"type": "fixed", "delay": 2, "maxDelay": 8, "jitter": False}},
    })
    q = spec.queue
    assert spec.timeout_s == 2.5
    assert q.fifo is True
    assert (q.max_retries, q.visibility_timeout_s, q.delay_s, q.concurrency) == (0, 10.0, 1.5, 4)
    assert q.backoff == BackoffSpec(type="fixed", delay_s=2.0, max_delay_s=8.0, jitter=False)


def test_partial_queue_settings_keep_the_other_defaults() -> None:
    q = build_event(infrastructure={"queue": {"maxRetries": 7}}).queue
    assert q.max_retries == 7
    assert q.type == "standard"
    assert q.backoff == BackoffSpec()


def test_handler_timeout_none_means_no_timeout() -> None:
    assert build_event(infrastructure={"handler": {"timeout": None}}).timeout_s is None


@pytest.mark.parametrize(
    ("queue", "field"),
    [
        ({"maxRetries": -1}, "infrastructure.queue.maxRetries"),
        ({"maxRetries": 1.5}, "infrastructure.queue.maxRetries"),
        ({"maxRetries": True}, "infrastructure.queue.maxRetries"),
        ({"maxRetries": "3"}, "infrastructure.queue.maxRetries"),
        ({"visibilityTimeout": 0}, "infrastructure.queue.visibilityTimeout"),
        ({"delaySeconds": -1}, "infrastructure.queue.delaySeconds"),
        ({"concurrency": 0}, "infrastructure.queue.concurrency"),
        ({"backoff": {"delay": -1}}, "infrastructure.queue.backoff.delay"),
        ({"backoff": {"maxDelay": -1}}, "infrastructure.queue.backoff.maxDelay"),
        ({"backoff": {"type": "linear"}}, "infrastructure.queue.backoff.type"),
        ({"backoff": "fast"}, "infrastructure.queue.backoff"),
    ],
)
def test_invalid_queue_values_are_rejected_naming_the_field(queue: dict[str, Any], field: str) -> None:
    err = config_error(event(infrastructure={"queue": queue}))
    assert err.field == field
    assert field in str(err)


def test_unknown_queue_type_is_rejected_with_a_hint() -> None:
    err = config_error(event(infrastructure={"queue": {"type": "lifo"}}))
    assert err.field == "infrastructure.queue.type"
    assert err.hint == "did you mean 'fifo'?"
    assert "lifo" in str(err)


@pytest.mark.parametrize("timeout", [0, -1, "10", True])
def test_invalid_handler_timeout_is_rejected(timeout: Any) -> None:
    err = config_error(event(infrastructure={"handler": {"timeout": timeout}}))
    assert err.field == "infrastructure.handler.timeout"


@pytest.mark.parametrize("infra", ["fast", ["queue"], {"queue": 3}, {"handler": "big"}])
def test_infrastructure_sections_must_be_tables(infra: Any) -> None:
    err = config_error(event(infrastructure=infra))
    assert err.field is not None
    assert err.field.startswith("infrastructure")


def test_non_boolean_jitter_is_rejected() -> None:
    err = config_error(event(infrastructure={"queue": {"backoff": {"jitter": "false"}}}))
    assert err.field == "infrastructure.queue.backoff.jitter"


# --- handlers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "handler"),
    [
        (event(), None),
        ({"type": "cron", "name": "T", "cron": "* * * * *"}, None),
        ({"type": "api", "name": "A", "path": "/x"}, None),
    ],
)
def test_missing_handler_is_rejected_with_the_expected_signature(config: dict[str, Any], handler: Any) -> None:
    err = config_error(config, handler)
    assert err.field == "handler"
    assert err.hint is not None
    assert err.hint.startswith("define async def handler(")


def test_non_callable_handler_is_rejected() -> None:
    err = config_error(event(), "not a function")
    assert err.field == "handler"
    assert "str" in str(err)
    assert err.hint == "define async def handler(input, ctx)"


async def _one(a: Any) -> None: ...
async def _two(a: Any, b: Any) -> None: ...
async def _three(a: Any, b: Any, c: Any) -> None: ...
async def _none() -> None: ...
async def _kwonly(a: Any, b: Any, *, extra: Any) -> None: ...


@pytest.mark.parametrize(
    ("step_type", "config", "handler", "hint"),
    [
        ("event", event(), _one, "define async def handler(input, ctx)"),
        ("event", event(), _three, "define async def handler(input, ctx)"),
        ("event", event(), _none, "define async def handler(input, ctx)"),
        ("event", event(), _kwonly, "define async def handler(input, ctx)"),
        ("cron", {"type": "cron", "name": "T", "cron": "* * * * *"}, _two, "define async def handler(ctx)"),
        ("cron", {"type": "cron", "name": "T", "cron": "* * * * *"}, _none, "define async def handler(ctx)"),
        ("api", {"type": "api", "name": "A", "path": "/x"}, _one, "define async def handler(req, ctx)"),
        ("api", {"type": "api", "name": "A", "path": "/x"}, _three, "define async def handler(req, ctx)"),
    ],
)
def test_handler_with_the_wrong_arity_is_rejected(step_type: str, config: dict[str, Any], handler: Any,
                                                  hint: str) -> None:
    err = config_error(config, handler)
    assert err.field == "handler"
    assert err.hint == hint
    assert f"{'an' if step_type in ('event', 'api') else 'a'} {step_type} step's handler takes" in str(err)


@pytest.mark.parametrize(
    ("config", "handler"),
    [
        (event(), _two),
        ({"type": "cron", "name": "T", "cron": "* * * * *"}, _one),
        ({"type": "api", "name": "A", "path": "/x"}, _two),
    ],
)
def test_handler_with_the_right_arity_is_accepted(config: dict[str, Any], handler: Any) -> None:
    assert build_step(config, handler, FILE).handler is handler


def test_handler_with_extra_optional_parameters_or_varargs_is_accepted() -> None:
    async def with_default(input: Any, ctx: Any, extra: Any = None) -> None: ...

    def varargs(*args: Any) -> None: ...

    assert build_event().handler is event_handler
    assert build_step(event(), with_default, FILE).handler is with_default
    assert build_step(event(), varargs, FILE).handler is varargs


def test_async_and_sync_handlers_are_told_apart() -> None:
    def sync_handler(input: Any, ctx: Any) -> None: ...

    class AsyncCallable:
        async def __call__(self, input: Any, ctx: Any) -> None: ...

    class SyncCallable:
        def __call__(self, input: Any, ctx: Any) -> None: ...

    async def takes_three(bound: Any, input: Any, ctx: Any) -> None: ...

    assert build_step(event(), event_handler, FILE).is_async is True
    assert build_step(event(), sync_handler, FILE).is_async is False
    assert build_step(event(), AsyncCallable(), FILE).is_async is True
    assert build_step(event(), SyncCallable(), FILE).is_async is False
    assert build_step(event(), functools.partial(takes_three, 1), FILE).is_async is True
    assert build_step({"type": "cron", "name": "T", "cron": "* * * * *"}, lambda ctx: None, FILE).is_async is False


# --- api ----------------------------------------------------------------------------------------------


def api(**extra: Any) -> dict[str, Any]:
    return {"type": "api", "name": "GetJob", "path": "/jobs/:id", **extra}


def test_api_colon_params_are_normalised_to_braces() -> None:
    spec = build_step(api(path="/jobs/:id/runs/:run_id"), api_handler, FILE)
    assert spec.api is not None
    assert spec.api.path == "/jobs/{id}/runs/{run_id}"


def test_api_brace_params_are_kept() -> None:
    spec = build_step(api(path="/jobs/{id}"), api_handler, FILE)
    assert spec.api is not None
    assert spec.api.path == "/jobs/{id}"


def test_api_method_defaults_to_get_and_is_uppercased() -> None:
    get = build_step(api(), api_handler, FILE)
    post = build_step(api(method="post"), api_handler, FILE)
    assert get.api is not None and post.api is not None
    assert (get.api.method, post.api.method) == ("GET", "POST")


def test_api_unknown_method_is_rejected_with_a_suggestion() -> None:
    err = config_error(api(method="PATH"), api_handler)
    assert err.field == "method"
    assert err.hint == "did you mean 'PATCH'?"


def test_api_method_must_be_a_string() -> None:
    assert config_error(api(method=5), api_handler).field == "method"


def test_api_response_schema_keys_may_be_ints_or_strings() -> None:
    ok = {"type": "object"}
    spec = build_step(api(responseSchema={200: ok, "404": {"type": "object", "required": ["error"]}, 500: Job}),
                      api_handler, FILE)
    assert spec.api is not None
    assert set(spec.api.response_schema) == {200, 404, 500}
    assert spec.api.response_schema[404].json["required"] == ["error"]
    assert spec.api.response_schema[500].model is Job


def test_api_response_schema_key_that_is_not_a_status_is_rejected() -> None:
    assert config_error(api(responseSchema={"ok": {"type": "object"}}), api_handler).field == "responseSchema"


def test_api_body_schema_invalid_json_schema_is_rejected() -> None:
    assert config_error(api(bodySchema={"type": 5}), api_handler).field == "bodySchema"


def test_api_query_params_and_middleware_are_checked() -> None:
    async def mw(req: Any, ctx: Any, nxt: Any) -> Any:
        return await nxt()

    spec = build_step(api(queryParams=["page", {"name": "size", "description": "page size"}], middleware=[mw]),
                      api_handler, FILE)
    assert spec.api is not None
    assert spec.api.query_params == (QueryParam("page"), QueryParam("size", description="page size"))
    assert spec.api.middleware == (mw,)
    assert config_error(api(queryParams=[5]), api_handler).field == "queryParams[0]"
    assert config_error(api(queryParams="page"), api_handler).field == "queryParams"
    assert config_error(api(middleware=["auth"]), api_handler).field == "middleware[0]"


# --- common keys ---------------------------------------------------------------------------------------


def test_common_keys_are_kept_on_the_spec() -> None:
    spec = build_step(event(description="Processes jobs", flows=["jobs", "audit"]), event_handler, FILE, 7)
    assert spec.description == "Processes jobs"
    assert spec.flows == ("jobs", "audit")
    assert spec.file == FILE
    assert spec.line == 7
    assert spec.type is StepType.EVENT


@pytest.mark.parametrize(("key", "value"), [("flows", "jobs"), ("description", 5), ("virtualSubscribes", [3])])
def test_common_keys_with_wrong_types_are_rejected(key: str, value: Any) -> None:
    assert config_error(event(**{key: value})).field == key


def test_config_key_that_is_not_a_string_is_rejected() -> None:
    with pytest.raises(StepConfigError):
        build_step({**event(), 5: "x"}, event_handler, FILE)


# --- typed configs ---------------------------------------------------------------------------------------


def test_typed_event_config_gives_the_same_spec_as_the_dict() -> None:
    typed = EventConfig(name="Worker", subscribes=["job.enqueued"], virtualEmits=["audit"], emits=["job.done"],
                        flows=["jobs"], input=Job, infrastructure={"queue": {"maxRetries": 1}})
    as_dict = event(virtualEmits=["audit"], emits=["job.done"], flows=["jobs"], input=Job,
                    infrastructure={"queue": {"maxRetries": 1}})
    from_typed, from_dict = build_step(typed, event_handler, FILE, 2), build_step(as_dict, event_handler, FILE, 2)
    assert fields_of(from_typed) == fields_of(from_dict)


def test_typed_config_accepts_snake_case_too() -> None:
    camel = EventConfig(name="W", subscribes=["t"], virtualEmits=["a"])
    snake = EventConfig(name="W", subscribes=["t"], virtual_emits=["a"])
    assert fields_of(build_step(camel, event_handler, FILE)) == fields_of(build_step(snake, event_handler, FILE))


def test_typed_cron_api_and_noop_configs_match_their_dicts() -> None:
    pairs = [
        (CronConfig(name="Tick", cron="*/10 * * * * *", timezone="Europe/Paris"),
         {"type": "cron", "name": "Tick", "cron": "*/10 * * * * *", "timezone": "Europe/Paris"}, cron_handler),
        (ApiConfig(name="Get", path="/jobs/:id", method="post", bodySchema=Job, responseSchema={200: Job}),
         {"type": "api", "name": "Get", "path": "/jobs/:id", "method": "post", "bodySchema": Job,
          "responseSchema": {200: Job}}, api_handler),
        (NoopConfig(name="Human", virtualSubscribes=["review"]),
         {"type": "noop", "name": "Human", "virtualSubscribes": ["review"]}, None),
    ]
    for typed, as_dict, handler in pairs:
        assert fields_of(build_step(typed, handler, FILE)) == fields_of(build_step(as_dict, handler, FILE))


def test_typed_config_unknown_kwarg_raises_step_config_error_with_a_hint() -> None:
    with pytest.raises(StepConfigError) as info:
        EventConfig(name="Worker", subscribe=["job.enqueued"])
    assert info.value.field == "subscribe"
    assert info.value.hint == "did you mean 'subscribes'?"


def test_typed_config_unknown_camel_kwarg_suggests_camel_case() -> None:
    with pytest.raises(StepConfigError) as info:
        CronConfig(name="Tick", cron="* * * * *", timezon="UTC")
    assert info.value.hint == "did you mean 'timezone'?"


def test_typed_config_ignores_motia_cloud_keys() -> None:
    typed = EventConfig(name="Worker", subscribes=["job.enqueued"], includeFiles=["x"])
    assert fields_of(build_step(typed, event_handler, FILE, 1)) == fields_of(build_event())


def test_typed_config_is_still_checked_by_build_step() -> None:
    with pytest.raises(CronExpressionError):
        build_step(CronConfig(name="Tick", cron="61 * * * *"), cron_handler, FILE)
    with pytest.raises(StepConfigError) as info:
        build_step(EventConfig(name="Worker", subscribes=["t"]), _one, FILE)
    assert info.value.field == "handler"


def test_typed_config_missing_required_field_raises_step_config_error() -> None:
    with pytest.raises(MotiaError) as info:
        EventConfig(name="Worker")  # type: ignore[call-arg]
    assert isinstance(info.value, StepConfigError)
    assert info.value.field == "subscribes"


# --- hostile values: each is a StepConfigError naming the field, never another exception (issue 13) ------


def test_a_path_parameter_named_twice_is_a_config_error() -> None:
    for path in ("/a/:id/b/:id", "/a/{id}/b/:id", "/a/{id}/{id}"):
        err = config_error(api(path=path), api_handler)
        assert err.field == "path" and "'id' appears twice" in str(err)


@pytest.mark.parametrize("path", ["/jobs?x=1", "/jobs#top", "/jo bs", "/jobs/\u00e9", "/a\x00"])
def test_a_path_that_cannot_be_routed_is_a_config_error(path: str) -> None:
    assert config_error(api(path=path), api_handler).field == "path"


@pytest.mark.parametrize("zone", ["America", "Europe/", "A" * 300, "UTC\x00", "../../etc/passwd"])
def test_a_time_zone_that_is_a_folder_or_too_long_is_a_config_error(zone: str) -> None:
    err = config_error({"type": "cron", "name": "Tick", "cron": "* * * * *", "timezone": zone}, cron_handler)
    assert isinstance(err, CronExpressionError)
    assert err.field == "timezone" and "unknown time zone" in str(err)


@pytest.mark.parametrize(("key", "value"), [
    ("visibilityTimeout", 10**400), ("visibilityTimeout", float("inf")), ("delaySeconds", float("nan")),
    ("delaySeconds", 10 * 366 * 86_400), ("maxRetries", 2**31), ("concurrency", 10**5000),
], ids=["timeout-10**400", "timeout-inf", "delay-nan", "delay-11-years", "retries-2**31", "concurrency-5000-digits"])
def test_numbers_that_no_backend_can_hold_are_config_errors(key: str, value: Any) -> None:
    err = config_error(event(infrastructure={"queue": {key: value}}))
    assert err.field == f"infrastructure.queue.{key}"
    assert len(str(err)) < 300  # a 5,000-digit int is not printed whole (its repr would even raise)


def test_a_nan_handler_timeout_is_a_config_error() -> None:
    err = config_error(event(infrastructure={"handler": {"timeout": float("nan")}}))
    assert err.field == "infrastructure.handler.timeout"


@pytest.mark.parametrize("status", [float("inf"), float("nan"), 99, 600, "2xx", True, 10**400],
                         ids=["inf", "nan", "99", "600", "2xx", "true", "10**400"])
def test_response_schema_keys_must_be_http_statuses(status: Any) -> None:
    err = config_error(api(responseSchema={status: {"type": "object"}}), api_handler)
    assert err.field == "responseSchema"


def test_response_schema_keys_may_be_ints_strings_or_whole_floats() -> None:
    spec = build_step(api(responseSchema={200: {}, "404": {}, 500.0: {}}), api_handler, FILE)
    assert spec.api is not None and sorted(spec.api.response_schema) == [200, 404, 500]


def test_base_model_itself_and_a_dangling_ref_are_config_errors() -> None:
    err = config_error(api(bodySchema=pydantic.BaseModel), api_handler)
    assert err.field == "bodySchema" and "BaseModel" in str(err)
    err = config_error(api(bodySchema={"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}}),
                       api_handler)
    assert err.field == "bodySchema" and "#/$defs/Missing" in str(err)


@pytest.mark.parametrize("name", ["", "  ", "a\x00b", "job\nrun", "\ud800"])
def test_names_topics_and_flows_must_be_printable_text(name: str) -> None:
    assert config_error(event(name=name)).field == "name"
    assert config_error(event(subscribes=[name])).field == "subscribes"
    assert config_error(event(flows=[name])).field == "flows"
    assert config_error(event(emits=[{"topic": name or "\x01"}])).field == "emits[0].topic"


@pytest.mark.parametrize("value", [10**5000, object(), b"event", ["event"], {"event"}, float("nan")],
                         ids=["5000-digits", "object", "bytes", "list", "set", "nan"])
def test_a_type_that_is_no_string_is_a_config_error(value: Any) -> None:
    assert config_error({**event(), "type": value}).field == "type"


class _Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_a_value_whose_repr_raises_is_still_reported() -> None:
    err = config_error(event(infrastructure={"queue": {"maxRetries": _Unprintable()}}))
    assert err.field == "infrastructure.queue.maxRetries" and "<_Unprintable>" in str(err)


# --- query parameters -------------------------------------------------------------------------------------


def test_query_params_take_a_schema_a_default_and_required() -> None:
    spec = build_step(api(queryParams=[
        {"name": "limit", "description": "how many", "schema": {"type": "integer", "minimum": 1}, "default": 50},
        {"name": "owner", "required": True},
    ]), api_handler, FILE)
    assert spec.api is not None
    limit, owner = spec.api.query_params
    assert (limit.name, limit.description, limit.default, limit.has_default) == ("limit", "how many", 50, True)
    assert limit.schema is not None and limit.schema.json == {"type": "integer", "minimum": 1}
    assert (owner.required, owner.schema) == (True, None)


@pytest.mark.parametrize(("entry", "field"), [
    ({"name": "limit", "schema": {"type": "integer"}, "default": "fifty"}, "queryParams[0].default"),
    ({"name": "limit", "schema": {"type": "object"}}, "queryParams[0].schema"),
    ({"name": "limit", "schema": {"type": "array", "items": {"type": "object"}}}, "queryParams[0].schema"),
    ({"name": "limit", "schema": Job}, "queryParams[0].schema"),
    ({"name": "limit", "shema": {"type": "integer"}}, "queryParams[0].shema"),
    ({"name": "limit", "required": "yes"}, "queryParams[0].required"),
    ({"name": "limit", "required": True, "default": 1}, "queryParams[0].required"),
    ({"name": ""}, "queryParams[0].name"),
])
def test_bad_query_param_entries_are_config_errors(entry: dict[str, Any], field: str) -> None:
    assert config_error(api(queryParams=[entry]), api_handler).field == field


def test_a_query_param_declared_twice_is_a_config_error() -> None:
    assert config_error(api(queryParams=["page", {"name": "page"}]), api_handler).field == "queryParams[1]"
