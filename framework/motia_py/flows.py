"""Flow settings from ``flows/<name>.toml``: description, state namespace, entry and exit topics."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from msgspec import Struct

from .findings import Finding, Severity
from .suggest import did_you_mean

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FLOW_KEYS = {"description", "state_namespace", "entry_topics", "exit_topics"}


class FlowSpec(Struct, frozen=True):
    """One flow's settings (a flow with no file gets the defaults)."""

    name: str
    description: str = ""
    state_namespace: str = ""
    entry_topics: tuple[str, ...] = ()
    exit_topics: tuple[str, ...] = ()
    file: Path | None = None

    @property
    def namespace(self) -> str:
        """The state namespace: ``state_namespace`` or the flow's own name."""
        return self.state_namespace or self.name


def load_flows(flows_dir: Path) -> tuple[dict[str, FlowSpec], list[Finding]]:
    """Read every ``*.toml`` in ``flows_dir``; return the flows and a finding per broken file."""
    flows: dict[str, FlowSpec] = {}
    problems: list[Finding] = []
    if not flows_dir.is_dir():
        return flows, problems
    for path in sorted(flows_dir.glob("*.toml")):
        name = path.stem
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            problems.append(Finding("invalid-flow-file", Severity.ERROR, f"cannot parse: {exc}", file=path))
            continue
        except RecursionError:  # tomllib is recursive: arrays nested thousands deep
            problems.append(Finding("invalid-flow-file", Severity.ERROR, "cannot parse: values nested too deeply",
                                    file=path))
            continue
        except OSError as exc:  # a directory named x.toml, an unreadable file
            problems.append(Finding("invalid-flow-file", Severity.ERROR,
                                    f"cannot read: {exc.strerror or exc}", file=path,
                                    hint="flows/ holds one <flow-name>.toml file per flow"))
            continue
        bad = False
        for key in data:
            if key not in _FLOW_KEYS:

                problems.append(Finding("invalid-flow-file", Severity.ERROR, f"unknown key '{key}'", file=path,
                                        field=key, hint=did_you_mean(key, _FLOW_KEYS)))
                bad = True
        for key in ("entry_topics", "exit_topics"):
            v = data.get(key, [])
            if not isinstance(v, list) or not all(isinstance(t, str) and t.strip() and not _CONTROL.search(t)
                                                  for t in v):
                problems.append(Finding("invalid-flow-file", Severity.ERROR, f"'{key}' must be a list of topics",
                                        file=path, field=key))
                bad = True
        for key in ("description", "state_namespace"):
            if not isinstance(data.get(key, ""), str):
                problems.append(Finding("invalid-flow-file", Severity.ERROR, f"'{key}' must be a string",
                                        file=path, field=key))
                bad = True
        if bad:
            continue
        flows[name] = FlowSpec(
            name=name,
            description=data.get("description", ""),
            state_namespace=data.get("state_namespace", ""),
            entry_topics=tuple(data.get("entry_topics", [])),
            exit_topics=tuple(data.get("exit_topics", [])),
            file=path,
        )
    return flows, problems
