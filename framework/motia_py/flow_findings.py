"""Validation findings about flow control: a key path (``rateLimit.key``, ``concurrencyKey``) that the
step's input schema does not have is a warning, with the nearest field the schema has as a hint.

Every event whose data lacks the field would share the key ``""``: one limit for all of them, which is
rarely what was meant. A key function, a step without an input schema, or a schema that allows any
field (no ``properties`` where the path goes) cannot be checked and gives nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from .discovery import Project
from .findings import Finding, Severity
from .flow_control import FlowKey
from .spec import StepSpec
from .suggest import did_you_mean

CODE = "flow-key-field"


def _resolve(schema: Any, root: Mapping[str, Any]) -> Any:
    """``schema`` with a local ``$ref`` (``#/$defs/X``, ``#/definitions/X``) followed, up to 20 hops."""
    for _ in range(20):
        ref = schema.get("$ref") if isinstance(schema, Mapping) else None
        if not isinstance(ref, str) or not ref.startswith("#/"):
            return schema
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, Mapping) else None
        schema = target
    return schema


def _fields(schema: Any, root: Mapping[str, Any], prefix: str = "", depth: int = 3) -> Iterator[str]:
    """Every dotted field path of ``schema`` down to ``depth`` levels."""
    props = _resolve(schema, root).get("properties") if isinstance(_resolve(schema, root), Mapping) else None
    if not isinstance(props, Mapping) or depth == 0:
        return
    for name, sub in props.items():
        yield prefix + str(name)
        yield from _fields(sub, root, f"{prefix}{name}.", depth - 1)


def _known(schema: Mapping[str, Any], path: str) -> bool | None:
    """Whether the schema has the field at ``path``; None when it cannot tell (any field is allowed)."""
    node: Any = schema
    for part in path.split("."):
        node = _resolve(node, schema)
        props = node.get("properties") if isinstance(node, Mapping) else None
        if not isinstance(props, Mapping):
            return None
        if part not in props:
            return False
        node = props[part]
    return True


def _check(step: StepSpec, key: FlowKey | None, field: str) -> Iterator[Finding]:
    if key is None or key.path is None or step.input is None:
        return
    schema = step.input.json
    if _known(schema, key.path) is not False:
        return
    hint = did_you_mean(key.path, list(_fields(schema, schema)))
    yield Finding(CODE, Severity.WARNING,
                  f"{field} '{key.path}' is not a field of the step's input: every event would share one key",
                  file=step.file, step=step.name, line=step.line, field=field,
                  hint=hint or "name a field of the input (dotted for nested ones), or use a key function")


def flow_findings(project: Project) -> Iterator[Finding]:
    """Warnings about the flow-control key paths of every step (see the module docstring)."""
    for step in project.steps:
        flow = step.queue.flow
        where = "infrastructure.queue"
        yield from _check(step, flow.rate_limit.key if flow.rate_limit else None, f"{where}.rateLimit.key")
        yield from _check(step, flow.concurrency_key, f"{where}.concurrencyKey")
