"""Validation of Motia 1.0 step files beyond the topic graph: which ``motia`` package they import (see
:mod:`motia_py.motia_sdk`), the config fields findings name as 1.0 files spell them, and one finding
where every trigger of a step gave the same one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from msgspec import structs

from . import motia_sdk
from .discovery import Project
from .findings import Finding, Severity
from .settings import SETTINGS_FILE
from .spec import StepSpec
from .state_watch import StateWatch
from .stream_config import NAMESPACE_PREFIX
from .suggest import did_you_mean


def motia1_findings(project: Project) -> Iterator[Finding]:
    """A stream trigger on a stream the project does not have (an error), a warning when 1.0 steps import
    an installed ``motia`` (Motia's SDK, whose helpers need Motia's engine), a note when motia-py's
    built-in SDK stands in for an installed one."""
    v1 = [s for s in project.steps if s.origin is not None]
    if not v1:
        return
    yield from _unknown_streams(project, v1)
    installed = motia_sdk.installed_sdk(project.root)
    mode = motia_sdk.resolve(project.settings.motia_sdk, project.root)
    first = v1[0]
    if mode == "installed" and installed is not None:
        yield Finding("motia-sdk", Severity.WARNING,
                      f"step files import the installed motia package ({installed}): Motia's SDK, whose enqueue, "
                      "stateManager, Stream and logger need Motia's engine (iii), which motia-py does not run",
                      file=first.file, step=first.display_name, line=first.line,
                      hint=f"set [project] motia_sdk = \"builtin\" in {SETTINGS_FILE} to run them with motia-py's "
                           "own implementation of the SDK")
    elif mode == "builtin" and installed is not None:
        yield Finding("motia-sdk", Severity.INFO,
                      f"step files import motia-py's built-in Motia SDK; the installed motia package ({installed}) "
                      "is not used in this process", file=first.file, step=first.display_name, line=first.line,
                      hint=f"[project] motia_sdk = \"installed\" in {SETTINGS_FILE} would use it")


def _unknown_streams(project: Project, steps: list[StepSpec]) -> Iterator[Finding]:
    names = sorted({s.name for s in project.streams})
    for s in steps:
        if s.origin is None or s.origin.kind != "stream" or s.watch is None or s.watch.namespace is None:
            continue
        name = s.watch.namespace.removeprefix(NAMESPACE_PREFIX)
        if name not in names:
            yield Finding("unknown-stream", Severity.ERROR,
                          f"its stream trigger watches stream '{name}', which no stream file defines and no step "
                          "declares with Stream(...)", file=s.file, step=s.display_name, line=s.line,
                          field=f"triggers[{s.origin.index}].streamName",
                          hint=did_you_mean(name, names) or f"streams: {', '.join(names) or 'none'}")


def watch_label(watch: StateWatch) -> str:
    """What a state step watches, as ``namespace/group`` (a Motia 1.0 stream trigger's: ``stream/group``)."""
    namespace = (watch.namespace or "(flow)").removeprefix(NAMESPACE_PREFIX)
    return f"{namespace}/{watch.group or '*'}"


def v1_field(step: StepSpec, field: str) -> str:
    """The config field a finding names, as a Motia 1.0 step file spells it."""
    if step.origin is None:
        return field
    return {"subscribes": f"triggers[{step.origin.index}].topic", "emits": "enqueues",
            "virtualEmits": "virtualEnqueues"}.get(field, field)


def collapse(project: Project, findings: list[Finding]) -> list[Finding]:
    """One finding where the triggers of one Motia 1.0 step each gave the same one (``no-flow``, an
    unconsumed enqueue), named after the step itself."""
    display = {s.name: s.display_name for s in project.steps if s.origin is not None}
    seen: dict[tuple[Any, ...], int] = {}
    out: list[Finding] = []
    for f in findings:
        group = display.get(f.step or "")
        key = (f.code, f.severity, f.message, f.file, f.field, f.hint, group)
        if group is None or key not in seen:
            if group is not None:
                seen[key] = len(out)
            out.append(f)
        else:
            out[seen[key]] = structs.replace(out[seen[key]], step=group)
    return out
