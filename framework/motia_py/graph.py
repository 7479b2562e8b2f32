"""The topic graph of a project, the findings of ``motia-py validate``, and the graph's exports.

Nodes are steps (``step:NAME``) and topics (``topic:T``). An emit is an edge step -> topic and a
subscription an edge topic -> step; ``virtualEmits`` and ``virtualSubscribes`` give the same edges
marked ``virtual``. Cron, API and noop steps without ``virtualSubscribes`` start the graph, and so do the
topics a flow lists in ``entry_topics``. Topic rules are project-wide. networkx stays inside this module:
callers get a :class:`TopicGraph`, :class:`~motia_py.findings.Finding` lists and text or JSON exports.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from msgspec import Struct

from .config import StepSpec, StepType
from .discovery import Project
from .errors import GraphError
from .findings import Finding, Severity
from .flow_findings import flow_findings
from .motia1_checks import collapse, motia1_findings, v1_field, watch_label
from .realtime_checks import realtime_findings
from .schema import Schema, incompatibilities
from .suggest import did_you_mean
from .topology import has_cycle, reachable, successors
from .transactions import unsupported_transactions

if TYPE_CHECKING:
    import networkx as nx  # imported by the queries that need it (cycles, the exports), not by validation's
    # errors and warnings: ``start`` validates a project without ever loading networkx

# simple_cycles can list exponentially many loops; a loop of more than 12 steps is reported as part of
# the shorter ones it contains, if any, and the list itself is capped.
_CYCLE_LENGTH_BOUND = 24
_MAX_CYCLES = 100
_RANK = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
_ENTRY_TYPES = (StepType.CRON, StepType.API, StepType.STATE)


def step_node(name: str) -> str:
    """The graph node id of step ``name``."""
    return f"step:{name}"


def topic_node(topic: str) -> str:
    """The graph node id of ``topic``."""
    return f"topic:{topic}"


class GraphEdge(Struct, frozen=True):
    """One edge: a step emitting a topic (``emit``) or a topic delivered to a step (``subscribe``)."""

    step: str
    topic: str
    kind: Literal["emit", "subscribe"]
    virtual: bool = False
    label: str | None = None
    conditional: bool = False

    @property
    def source(self) -> str:
        """The node the edge leaves."""
        return step_node(self.step) if self.kind == "emit" else topic_node(self.topic)

    @property
    def target(self) -> str:
        """The node the edge enters."""
        return topic_node(self.topic) if self.kind == "emit" else step_node(self.step)


def _edges_of(step: StepSpec) -> Iterator[GraphEdge]:
    for emits, virtual in ((step.emits, False), (step.virtual_emits, True)):
        for e in emits:
            yield GraphEdge(step.name, e.topic, "emit", virtual, e.label, e.conditional)
    for topics, virtual in ((step.subscribes, False), (step.virtual_subscribes, True)):
        for t in topics:
            yield GraphEdge(step.name, t, "subscribe", virtual)


class TopicGraph:
    """A project's steps and topics as a networkx ``MultiDiGraph``, with the queries validation needs.

    Attributes:
        project: the project the graph was built from.
        edges: every emit and subscription, virtual ones included, in discovery order.
        entry_topics: topics some flow lists in ``entry_topics``.
        exit_topics: topics some flow lists in ``exit_topics``.
        nx_graph: the networkx graph. Nodes carry ``kind`` (step/topic) and ``name``; edges carry
            ``topic``, ``virtual``, ``label`` and ``conditional``. Steps that share a name share a node.
    """

    def __init__(self, project: Project) -> None:
        self.project = project
        self.edges: tuple[GraphEdge, ...] = tuple(e for s in project.steps for e in _edges_of(s))
        self.entry_topics: frozenset[str] = frozenset(project.entry_topics())
        self.exit_topics: frozenset[str] = frozenset(t for f in project.flows.values() for t in f.exit_topics)

    @functools.cached_property
    def nx_graph(self) -> nx.MultiDiGraph:
        """The networkx graph (built on first use)."""
        import networkx as nx

        project = self.project
        g = nx.MultiDiGraph()
        for s in project.steps:
            g.add_node(step_node(s.name), kind="step", name=s.name, type=s.type.value)
        for t in sorted(self.topics()):
            g.add_node(topic_node(t), kind="topic", name=t, entry=t in self.entry_topics,
                       exit=t in self.exit_topics)
        for e in self.edges:
            g.add_edge(e.source, e.target, topic=e.topic, virtual=e.virtual, label=e.label,
                       conditional=e.conditional)
        return g

    def topics(self) -> set[str]:
        """Every topic: emitted, subscribed, or listed by a flow."""
        return {e.topic for e in self.edges} | self.entry_topics | self.exit_topics

    def emitted(self) -> set[str]:
        """Topics some step emits, really or virtually."""
        return {e.topic for e in self.edges if e.kind == "emit"}

    def subscribed(self) -> set[str]:
        """Topics some step subscribes to, really or virtually."""
        return {e.topic for e in self.edges if e.kind == "subscribe"}

    def entry_points(self) -> set[str]:
        """Nodes where work starts: cron and API steps, noop steps with no inputs, flow entry topics."""
        starts = {step_node(s.name) for s in self.project.steps
                  if s.type in _ENTRY_TYPES or (s.type is StepType.NOOP and not s.virtual_subscribes)}
        return starts | {topic_node(t) for t in self.entry_topics}

    def reachable(self) -> set[str]:
        """Every node some entry point leads to, the entry points included."""
        return reachable(successors((e.source, e.target) for e in self.edges), self.entry_points())

    def has_cycle(self) -> bool:
        """Whether any loop exists (without networkx)."""
        return has_cycle(successors((e.source, e.target) for e in self.edges))

    def cycles(self) -> list[tuple[tuple[str, str], ...]]:
        """Each simple loop once, as ``((step, topic it emits), ...)`` from its smallest step name."""
        if not self.has_cycle():
            return []  # the usual case, found without loading networkx
        import networkx as nx

        found: set[tuple[tuple[str, str], ...]] = set()
        loops = nx.simple_cycles(nx.DiGraph(self.nx_graph), length_bound=_CYCLE_LENGTH_BOUND)
        for loop in itertools.islice(loops, _MAX_CYCLES):
            names = [self.nx_graph.nodes[n]["name"] for n in loop]
            if self.nx_graph.nodes[loop[0]]["kind"] != "step":  # loops alternate step, topic: start on a step
                names = names[1:] + names[:1]
            pairs = list(zip(names[::2], names[1::2], strict=True))
            first = min(range(len(pairs)), key=lambda i: pairs[i])
            found.add(tuple(pairs[first:] + pairs[:first]))
        return sorted(found)


def build_graph(project: Project) -> TopicGraph:
    """Build the topic graph of ``project`` (see :class:`TopicGraph`)."""
    return TopicGraph(project)


# ---------------------------------------------------------------------------------------------------
# Validation.


def validate(project: Project, *, cycles: bool = True) -> list[Finding]:
    """Every finding about ``project``: discovery's problems first, then the graph's.

    Errors, then warnings, then info; the order within a severity is stable. See ARCHITECTURE.md §6.
    ``cycles=False`` skips the cycle findings (info only, never failing), and with them networkx.
    """
    graph = build_graph(project)
    unknown = list(_unknown_topics(graph))
    findings = [
        *project.problems,
        *_duplicate_steps(project),
        *unknown,
        *_schema_mismatches(project),
        *_unknown_flows(project),
        *_unconsumed_topics(graph),
        *_steps_without_flow(project),
        *_unreachable_steps(graph, skip={f.step for f in unknown}),
        *(_cycles(graph) if cycles else ()),
        *motia1_findings(project),
        *flow_findings(project),
        *realtime_findings(project),
        *unsupported_transactions(project),
    ]
    return sorted(collapse(project, findings), key=lambda f: _RANK[f.severity])


def exit_code(findings: Iterable[Finding], strict: bool = False) -> int:
    """1 when a finding fails validation (any error, or any warning when ``strict``), else 0.

    Info findings never fail.
    """
    failing = {Severity.ERROR, Severity.WARNING} if strict else {Severity.ERROR}
    return 1 if any(f.severity in failing for f in findings) else 0


def _rel(project: Project, path: Path | None) -> str:
    if path is None:
        return "(project)"
    try:
        return path.resolve().relative_to(project.root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _about(code: str, severity: Severity, step: StepSpec, message: str, *, field: str | None = None,
           hint: str | None = None) -> Finding:
    """A finding located at ``step``'s config (its file, name and line)."""
    return Finding(code, severity, message, file=step.file, step=step.name, line=step.line, field=field,
                   hint=hint)


def _duplicate_steps(project: Project) -> Iterator[Finding]:
    """Two files defining a step of one name (a Motia 1.0 step's name covers all its triggers)."""
    first: dict[str, StepSpec] = {}
    reported: set[tuple[Path, str]] = set()
    for s in project.steps:
        for name in dict.fromkeys((s.display_name, s.name)):
            owner = first.setdefault(name, s)
            if owner is s or (owner.file == s.file and owner.origin is not None):
                continue  # the triggers of one 1.0 step share its name
            if (s.file, owner.display_name) in reported:
                continue
            reported.add((s.file, owner.display_name))
            yield _about("duplicate-step", Severity.ERROR, s,
                         f"two steps are named '{name}': {_rel(project, owner.file)} and {_rel(project, s.file)}",
                         field="name", hint="step names must be unique in a project; rename one of them")


def _unknown_topics(graph: TopicGraph) -> Iterator[Finding]:
    known = graph.emitted() | graph.entry_topics
    fallback = "emit it from a step, or list it in a flow's entry_topics"
    for s in graph.project.steps:
        for field, topics in (("subscribes", s.subscribes), ("virtualSubscribes", s.virtual_subscribes)):
            how = "subscribes" if field == "subscribes" else "virtually subscribes"
            for t in dict.fromkeys(topics):
                if t not in known:
                    # Motia 1.0 steps take topics other workers enqueue (another language, `motia-py emit`)
                    severity = Severity.WARNING if s.origin is not None else Severity.ERROR
                    yield _about("unknown-topic", severity, s,
                                 f"{how} to '{t}', which no step emits and no flow lists in entry_topics",
                                 field=v1_field(s, field), hint=did_you_mean(t, known) or fallback)


def _schema_mismatches(project: Project) -> Iterator[Finding]:
    takers: dict[str, list[tuple[StepSpec, Schema]]] = defaultdict(list)
    for s in project.steps:
        if s.type is StepType.EVENT and s.input is not None:
            for t in dict.fromkeys(s.subscribes):
                takers[t].append((s, s.input))
    for s in project.steps:
        for field, emits in (("emits", s.emits), ("virtualEmits", s.virtual_emits)):
            for i, e in enumerate(emits):
                if e.schema is None:
                    continue
                for sub, expected in takers.get(e.topic, []):
                    problems = incompatibilities(e.schema.json, expected.json)
                    if problems:
                        where = _rel(project, sub.file)
                        yield _about("schema-mismatch", Severity.ERROR, s,
                                     f"step '{s.name}' emits '{e.topic}' with a schema that subscriber "
                                     f"'{sub.name}' cannot accept: {'; '.join(problems)}",
                                     field=f"{field}[{i}].schema",
                                     hint=f"make it match the input of '{sub.name}' ({where})")


def _unknown_flows(project: Project) -> Iterator[Finding]:
    used = {f for s in project.steps for f in s.flows}
    fallback = "add the flow to a step's 'flows', or delete the file"
    for name, flow in sorted(project.flows.items()):
        if name not in used:
            yield Finding("unknown-flow", Severity.ERROR,
                          f"{_rel(project, flow.file)} configures flow '{name}', which no step lists in "
                          "'flows'", file=flow.file, hint=did_you_mean(name, used) or fallback)


def _unconsumed_topics(graph: TopicGraph) -> Iterator[Finding]:
    consumed = graph.subscribed() | graph.exit_topics
    fallback = "subscribe a step to it, or list it in a flow's exit_topics"
    for s in graph.project.steps:
        for t in dict.fromkeys(e.topic for e in s.emits):
            if t not in consumed:
                yield _about("unconsumed-topic", Severity.WARNING, s,
                             f"emits '{t}', which no step subscribes to and no flow lists in exit_topics",
                             field=v1_field(s, "emits"), hint=did_you_mean(t, consumed) or fallback)


def _steps_without_flow(project: Project) -> Iterator[Finding]:
    names = sorted({f for s in project.steps for f in s.flows} | set(project.flows))
    example = names[0] if names else "my-flow"
    for s in project.steps:
        if not s.flows:
            yield _about("no-flow", Severity.WARNING, s, "the step is in no flow", field="flows",
                         hint=f"add 'flows': ['{example}'] to its config")


def _unreachable_steps(graph: TopicGraph, skip: set[str | None]) -> Iterator[Finding]:
    reachable = graph.reachable()
    for s in graph.project.steps:
        # A step with an unknown topic already has an error that names the topic; fixing that topic is
        # likely to make it reachable, so a second finding would be noise.
        if s.type is not StepType.EVENT or s.name in skip or step_node(s.name) in reachable:
            continue
        topics = ", ".join(f"'{t}'" for t in dict.fromkeys(s.subscribes + s.virtual_subscribes))
        yield _about("unreachable-step", Severity.WARNING, s,
                     f"no cron step, API step, noop step or flow entry topic leads to {topics}, so the step "
                     "can never run", field="subscribes",
                     hint="emit one of its topics from a reachable step, or list it in a flow's entry_topics")


def _cycles(graph: TopicGraph) -> Iterator[Finding]:
    for loop in graph.cycles():
        first = loop[0][0]
        path = " ".join(f"{name} -[{topic}]->" for name, topic in loop) + f" {first}"
        step = graph.project.step(first)
        yield Finding("cycle", Severity.INFO, f"cycle: {path}", file=step.file if step else None, step=first,
                      line=step.line if step else None,
                      hint="fine when intended; make sure the loop has a condition that ends it")


# ---------------------------------------------------------------------------------------------------
# Exports.


class _View(Struct, frozen=True):
    steps: tuple[StepSpec, ...]
    edges: tuple[GraphEdge, ...]
    topics: tuple[str, ...]
    flows: tuple[str, ...]


def _view(project: Project, flow: str | None) -> _View:
    known = sorted({f for s in project.steps for f in s.flows} | set(project.flows))
    if flow is not None and flow not in known:
        hint = did_you_mean(flow, known) or f"known flows: {', '.join(known) or '(none)'}"
        raise GraphError(f"unknown flow '{flow}'; {hint}")
    steps = tuple(s for s in project.steps if flow is None or flow in s.flows)
    edges = tuple(dict.fromkeys(e for s in steps for e in _edges_of(s)))
    topics = tuple(sorted({e.topic for e in edges}))
    return _View(steps, edges, topics, tuple(known) if flow is None else (flow,))


class _Ids:
    """Unique, sanitized node ids (topic names contain dots; Mermaid and DOT ids must not)."""

    _UNSAFE = re.compile(r"[^0-9A-Za-z_]")

    def __init__(self) -> None:
        self._ids: dict[str, str] = {}
        self._taken: set[str] = set()

    def __call__(self, node: str) -> str:
        if node not in self._ids:
            kind, _, name = node.partition(":")
            base = f"{kind[0]}_{self._UNSAFE.sub('_', name)}"
            out, n = base, 1
            while out in self._taken:
                n += 1
                out = f"{base}_{n}"
            self._taken.add(out)
            self._ids[node] = out
        return self._ids[node]


def _unique(steps: Iterable[StepSpec]) -> list[StepSpec]:
    """One step per name (duplicates are a validation error; the first one is drawn)."""
    first: dict[str, StepSpec] = {}
    for s in steps:
        first.setdefault(s.name, s)
    return list(first.values())


def _detail(step: StepSpec) -> str:
    kind = step.origin.kind if step.origin is not None else step.type.value
    if step.api is not None:
        return f"{kind} {step.api.method} {step.api.path}"
    if step.cron is not None:
        return f"{kind} {step.cron.expression}"
    if step.watch is not None:
        return f"{kind} {watch_label(step.watch)}"
    if step.origin is not None and step.subscribes:
        return f"{kind} {', '.join(step.subscribes)}"
    return kind


def _edge_label(e: GraphEdge) -> str:
    return " ".join(p for p in (e.label, "(conditional)" if e.conditional else None) if p)


def to_mermaid(project: Project, flow: str | None = None) -> str:
    """The graph as a Mermaid ``flowchart LR``: steps as boxes, topics as rounded nodes.

    Virtual edges are dotted. With ``flow``, only that flow's steps and the topics they touch.

    Raises:
        GraphError: ``flow`` is not a flow of the project (the message suggests the nearest name).
    """
    view, ids = _view(project, flow), _Ids()

    def text(s: str) -> str:
        return '"' + s.replace('"', "#quot;") + '"'

    lines = ["flowchart LR"]
    for s in _unique(view.steps):
        lines.append(f"    {ids(step_node(s.name))}[{text(f'{s.name}<br/>{_detail(s)}')}]")
    for t in view.topics:
        lines.append(f"    {ids(topic_node(t))}({text(t)})")
    for e in view.edges:
        arrow = "-.->" if e.virtual else "-->"
        label = _edge_label(e)
        lines.append(f"    {ids(e.source)} {arrow}{f'|{text(label)}|' if label else ''} {ids(e.target)}")
    lines.append("    classDef topic fill:#f5f5f5,stroke:#999")
    if view.topics:
        lines.append(f"    class {','.join(ids(topic_node(t)) for t in view.topics)} topic")
    return "\n".join(lines) + "\n"


def to_dot(project: Project, flow: str | None = None) -> str:
    """The graph in Graphviz DOT: steps as boxes, topics as rounded boxes, virtual edges dashed.

    Raises:
        GraphError: ``flow`` is not a flow of the project (the message suggests the nearest name).
    """
    view, ids = _view(project, flow), _Ids()

    def text(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["digraph motia {", "    rankdir=LR;"]
    for s in _unique(view.steps):
        label = text(f"{s.name}\n{_detail(s)}").replace("\n", "\\n")
        lines.append(f"    {ids(step_node(s.name))} [shape=box, label={label}];")
    for t in view.topics:
        lines.append(f'    {ids(topic_node(t))} [shape=box, style="rounded,filled", fillcolor="#f5f5f5", '
                     f"label={text(t)}];")
    for e in view.edges:
        label = _edge_label(e)
        attrs = ([f"label={text(label)}"] if label else []) + (["style=dashed"] if e.virtual else [])
        shown = ", ".join(attrs)
        lines.append(f"    {ids(e.source)} -> {ids(e.target)}{f' [{shown}]' if shown else ''};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_json(project: Project, flow: str | None = None) -> dict[str, Any]:
    """The graph as a JSON-ready dict: ``flows``, ``steps``, ``topics``, step-to-step ``edges`` and the
    project's ``streams`` (``{"name", "file", "line", "schema"}``).

    An edge ``{"from", "to", "topic", "virtual", "label", "conditional"}`` goes from a step emitting
    ``topic`` to a step subscribed to it; it is virtual when either side is.

    Raises:
        GraphError: ``flow`` is not a flow of the project (the message suggests the nearest name).
    """
    view = _view(project, flow)
    steps = [{
        "name": s.name,
        "type": s.type.value,
        "step": s.display_name,  # a Motia 1.0 step's own name (each of its triggers is one entry)
        "trigger": s.origin.kind if s.origin is not None else None,
        "file": _rel(project, s.file),
        "line": s.line,
        "flows": list(s.flows),
        "subscribes": list(s.subscribes),
        "emits": [{"topic": e.topic, "label": e.label, "conditional": e.conditional} for e in s.emits],
        "virtualEmits": [{"topic": e.topic, "label": e.label, "conditional": e.conditional}
                         for e in s.virtual_emits],
        "virtualSubscribes": list(s.virtual_subscribes),
        "cron": s.cron.expression if s.cron else None,
        "path": s.api.path if s.api else None,
        "method": s.api.method if s.api else None,
    } for s in view.steps]
    takers: dict[str, list[GraphEdge]] = defaultdict(list)
    for e in view.edges:
        if e.kind == "subscribe":
            takers[e.topic].append(e)
    edges: dict[tuple[Any, ...], dict[str, Any]] = {}
    for e in view.edges:
        for sub in takers.get(e.topic, []) if e.kind == "emit" else []:
            edge = {"from": e.step, "to": sub.step, "topic": e.topic, "virtual": e.virtual or sub.virtual,
                    "label": e.label, "conditional": e.conditional}
            edges.setdefault(tuple(edge.values()), edge)
    streams = [{"name": s.name, "file": _rel(project, s.file), "line": s.line,
                "schema": s.schema.json if s.schema is not None else None} for s in project.streams]
    return {"flows": list(view.flows), "steps": steps, "topics": list(view.topics),
            "edges": list(edges.values()), "streams": streams}
