"""Schemas: pydantic model classes and JSON-schema dicts, every bad field listed, compatibility checks."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from motia_py.errors import InputValidationError, MotiaError, StepConfigError
from motia_py.schema import Schema, incompatibilities, to_schema


class Address(pydantic.BaseModel):
    city: str
    zip: str


class Person(pydantic.BaseModel):
    name: str
    age: int
    address: Address
    tags: list[str] = []


PERSON_JSON: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
            "required": ["city", "zip"],
        },
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "age", "address"],
}


def fields_of(schema: Schema, data: Any) -> list[dict[str, object]]:
    with pytest.raises(InputValidationError) as info:
        schema.validate(data)
    assert isinstance(info.value, MotiaError)
    return info.value.fields


def locs(schema: Schema, data: Any) -> list[list[object]]:
    return [f["loc"] for f in fields_of(schema, data)]  # type: ignore[misc]


# --- to_schema ---------------------------------------------------------------------------------------


def test_none_gives_no_schema() -> None:
    assert to_schema(None, "input") is None


def test_model_class_keeps_the_model_and_its_json_schema() -> None:
    schema = to_schema(Person, "input")
    assert schema is not None
    assert schema.model is Person
    assert schema.json == Person.model_json_schema()


def test_json_schema_dict_is_kept_as_is() -> None:
    schema = to_schema(PERSON_JSON, "input")
    assert schema is not None
    assert schema.model is None
    assert schema.json is PERSON_JSON


def test_empty_dict_is_a_schema_that_accepts_anything() -> None:
    schema = to_schema({}, "input")
    assert schema is not None
    assert schema.validate([1, "x"]) == [1, "x"]


@pytest.mark.parametrize("bad", [{"type": "nonsense"}, {"type": 5}, {"required": "name"},
                                 {"properties": {"a": {"type": "strng"}}}, {"minimum": "zero"}])
def test_invalid_json_schema_is_rejected_naming_the_field(bad: dict[str, Any]) -> None:
    with pytest.raises(StepConfigError) as info:
        to_schema(bad, "emits[0].schema")
    assert info.value.field == "emits[0].schema"
    assert "not a valid JSON schema" in str(info.value)


@pytest.mark.parametrize("bad", [5, "Person", Person(name="a", age=1, address=Address(city="c", zip="z")), int,
                                 [PERSON_JSON]])
def test_value_that_is_neither_model_nor_dict_is_rejected_with_a_hint(bad: Any) -> None:
    with pytest.raises(StepConfigError) as info:
        to_schema(bad, "bodySchema")
    assert info.value.field == "bodySchema"
    assert info.value.hint == "pass the class itself (Model), or Model.model_json_schema()"


# --- validate: pydantic model --------------------------------------------------------------------------


def test_model_schema_returns_a_model_instance() -> None:
    schema = to_schema(Person, "input")
    assert schema is not None
    person = schema.validate({"name": "Ada", "age": 36, "address": {"city": "London", "zip": "N1"}})
    assert isinstance(person, Person)
    assert person.address.city == "London"
    assert person.tags == []


def test_model_schema_lists_every_bad_field() -> None:
    schema = to_schema(Person, "input")
    assert schema is not None
    fields = fields_of(schema, {"name": 5, "age": "old", "address": {"city": 1}, "tags": ["ok", 2]})
    assert [f["loc"] for f in fields] == [["name"], ["age"], ["address", "city"], ["address", "zip"], ["tags", 1]]
    assert all(isinstance(f["msg"], str) and f["msg"] for f in fields)


def test_model_schema_missing_field_is_located_at_its_name() -> None:
    schema = to_schema(Person, "input")
    assert schema is not None
    fields = fields_of(schema, {"name": "Ada", "address": {"city": "x", "zip": "y"}})
    assert fields == [{"loc": ["age"], "msg": "Field required"}]


def test_model_schema_rejects_non_objects_at_the_root() -> None:
    schema = to_schema(Person, "input")
    assert schema is not None
    assert locs(schema, [1, 2]) == [[]]


def test_validation_error_message_summarises_every_field() -> None:
    schema = to_schema(Person, "input")
    assert schema is not None
    with pytest.raises(InputValidationError) as info:
        schema.validate({"name": "Ada", "age": "x", "address": {"city": "c"}})
    message = str(info.value)
    assert "age: " in message
    assert "address.zip: " in message


# --- validate: JSON schema ------------------------------------------------------------------------------


def test_json_schema_returns_the_data_itself() -> None:
    schema = to_schema(PERSON_JSON, "input")
    assert schema is not None
    data = {"name": "Ada", "age": 36, "address": {"city": "London", "zip": "N1"}}
    assert schema.validate(data) is data


def test_json_schema_lists_every_bad_field() -> None:
    schema = to_schema(PERSON_JSON, "input")
    assert schema is not None
    fields = fields_of(schema, {"name": 5, "age": -1, "address": {"city": 1, "zip": "z"}, "tags": ["a", 2, 3]})
    assert sorted(map(str, (f["loc"] for f in fields))) == sorted(map(str, [
        ["name"], ["age"], ["address", "city"], ["tags", 1], ["tags", 2],
    ]))
    assert all(isinstance(f["msg"], str) and f["msg"] for f in fields)


def test_json_schema_missing_required_property_is_located_at_its_name() -> None:
    schema = to_schema(PERSON_JSON, "input")
    assert schema is not None
    fields = fields_of(schema, {"name": "Ada", "age": 1})
    assert fields == [{"loc": ["address"], "msg": "'address' is a required property"}]


def test_json_schema_nested_missing_property_is_located_at_its_full_path() -> None:
    schema = to_schema(PERSON_JSON, "input")
    assert schema is not None
    assert locs(schema, {"name": "Ada", "age": 1, "address": {"city": "c"}}) == [["address", "zip"]]


def test_json_schema_each_missing_required_property_is_located_at_its_own_name() -> None:
    schema = to_schema(PERSON_JSON, "input")
    assert schema is not None
    assert sorted(map(str, locs(schema, {}))) == sorted(map(str, [["name"], ["age"], ["address"]]))


def test_json_schema_rejects_wrong_root_type_at_the_root() -> None:
    schema = to_schema(PERSON_JSON, "input")
    assert schema is not None
    assert locs(schema, "not an object") == [[]]


def test_json_schema_and_model_agree_on_good_data() -> None:
    data = {"name": "Ada", "age": 36, "address": {"city": "London", "zip": "N1"}, "tags": ["x"]}
    from_model, from_json = to_schema(Person, "input"), to_schema(PERSON_JSON, "input")
    assert from_model is not None and from_json is not None
    assert from_model.validate(data).model_dump() == from_json.validate(data)


# --- incompatibilities -------------------------------------------------------------------------------------


def obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required is not None:
        out["required"] = required
    return out


def test_identical_schemas_are_compatible() -> None:
    assert incompatibilities(PERSON_JSON, PERSON_JSON) == []


def test_required_property_the_emitter_does_not_declare_is_reported() -> None:
    problems = incompatibilities(obj({"a": {"type": "string"}}, ["a"]),
                                 obj({"a": {"type": "string"}, "b": {"type": "string"}}, ["a", "b"]))
    assert problems == ["requires 'b', which the emitter does not declare"]


def test_required_property_the_emitter_declares_optional_is_reported() -> None:
    problems = incompatibilities(obj({"a": {"type": "string"}}), obj({"a": {"type": "string"}}, ["a"]))
    assert problems == ["requires 'a', which the emitter declares optional"]


def test_non_overlapping_types_are_reported() -> None:
    problems = incompatibilities(obj({"a": {"type": "string"}}, ["a"]), obj({"a": {"type": "integer"}}, ["a"]))
    assert problems == ["'a' is string from the emitter but integer for the subscriber"]


@pytest.mark.parametrize(
    ("produced", "expected"),
    [
        ({"type": "integer"}, {"type": "number"}),
        ({"type": "number"}, {"type": "integer"}),
        ({"type": ["string", "null"]}, {"type": "string"}),
        ({"anyOf": [{"type": "string"}, {"type": "null"}]}, {"type": "string"}),
        ({"anyOf": [{"type": "string"}, {}]}, {"type": "integer"}),  # an untyped branch accepts anything
        ({}, {"type": "integer"}),
        ({"type": "string"}, {}),
    ],
)
def test_overlapping_or_unknown_types_are_not_reported(produced: dict[str, Any], expected: dict[str, Any]) -> None:
    assert incompatibilities(obj({"a": produced}, ["a"]), obj({"a": expected}, ["a"])) == []


def test_any_of_with_no_overlap_is_reported() -> None:
    problems = incompatibilities(obj({"a": {"anyOf": [{"type": "string"}, {"type": "null"}]}}, ["a"]),
                                 obj({"a": {"type": "integer"}}, ["a"]))
    assert problems == ["'a' is null/string from the emitter but integer for the subscriber"]


def test_extra_emitted_properties_and_optional_subscriber_properties_are_fine() -> None:
    produced = obj({"a": {"type": "string"}, "extra": {"type": "integer"}}, ["a", "extra"])
    expected = obj({"a": {"type": "string"}, "maybe": {"type": "boolean"}}, ["a"])
    assert incompatibilities(produced, expected) == []


def test_schemas_without_properties_are_not_compared() -> None:
    assert incompatibilities({"type": "object"}, obj({"a": {"type": "string"}}, ["a"])) == []
    assert incompatibilities(obj({"a": {"type": "string"}}), {"type": "object"}) == []


def test_every_incompatibility_is_listed() -> None:
    produced = obj({"a": {"type": "string"}, "b": {"type": "string"}}, ["a"])
    expected = obj({"a": {"type": "integer"}, "b": {"type": "string"}, "c": {"type": "string"}}, ["b", "c"])
    assert incompatibilities(produced, expected) == [
        "requires 'b', which the emitter declares optional",
        "requires 'c', which the emitter does not declare",
        "'a' is string from the emitter but integer for the subscriber",
    ]


def test_model_json_schemas_can_be_compared() -> None:
    class Emitted(pydantic.BaseModel):
        name: str

    problems = incompatibilities(Emitted.model_json_schema(), Person.model_json_schema())
    assert "requires 'age', which the emitter does not declare" in problems
    assert "requires 'address', which the emitter does not declare" in problems


# -- schemas that would fail later are refused when discovered (issue 13) ------------------------------


def _nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return schema


def test_a_schema_nested_1500_deep_is_refused() -> None:
    with pytest.raises(StepConfigError, match="nests deeper than 100 levels") as info:
        to_schema(_nested(1_500), "input")
    assert info.value.field == "input"
    assert to_schema(_nested(90), "input") is not None


def test_a_schema_that_contains_itself_is_refused() -> None:
    cyclic: dict[str, Any] = {"type": "object", "properties": {}}
    cyclic["properties"]["child"] = cyclic
    with pytest.raises(StepConfigError, match="contains itself") as info:
        to_schema(cyclic, "bodySchema")
    assert info.value.field == "bodySchema"


@pytest.mark.parametrize("ref", ["#/$defs/Missing", "#/properties/nope", "other.json", "https://example.com/s.json",
                                 "#anchor"])
def test_a_ref_that_resolves_to_nothing_is_refused(ref: str) -> None:
    schema = {"type": "object", "$defs": {"Name": {"type": "string"}},
              "properties": {"a": {"$ref": "#/$defs/Name"}, "b": {"$ref": ref}}}
    with pytest.raises(StepConfigError, match="points at nothing") as info:
        to_schema(schema, "bodySchema")
    assert ref in str(info.value)


def test_refs_that_resolve_are_accepted_and_used() -> None:
    tree = {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}}}
    schema = to_schema({"$defs": {"Tree": tree}, "$ref": "#/$defs/Tree"}, "input")
    assert schema is not None
    assert schema.validate({"kids": [{"kids": []}]}) == {"kids": [{"kids": []}]}
    with pytest.raises(InputValidationError):
        schema.validate({"kids": [{"kids": 3}]})


def test_a_schema_that_refers_to_itself_without_descending_is_refused() -> None:
    with pytest.raises(StepConfigError, match="refers to itself"):
        to_schema({"anyOf": [{"$ref": "#"}, {"type": "string"}]}, "input")


@pytest.mark.parametrize("bad", [{"type": "object", "default": float("nan")}, {"enum": [{1, 2}]},
                                 {"const": object()}], ids=["nan", "set", "object"])
def test_a_schema_holding_what_json_cannot_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(StepConfigError, match="is not JSON"):
        to_schema(bad, "input")


def test_base_model_itself_is_refused() -> None:
    with pytest.raises(StepConfigError, match="BaseModel") as info:
        to_schema(pydantic.BaseModel, "input")
    assert info.value.field == "input"


def test_data_nested_as_deep_as_a_recursive_schema_allows_is_a_validation_error() -> None:
    schema = to_schema({"type": "array", "items": {"$ref": "#"}}, "input")
    assert schema is not None
    data: list[Any] = []
    for _ in range(5_000):
        data = [data]
    with pytest.raises(InputValidationError, match="nested too deeply"):
        schema.validate(data)
