"""Plain searches over directed edges, for the topic graph's queries that do not need networkx:
what a set of start nodes reaches, and whether any loop exists. (Enumerating loops stays with
networkx, in :mod:`.graph`, and is asked for only when this module finds one.)"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable


def successors(edges: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    """``source -> {targets}`` of ``(source, target)`` edges."""
    after: dict[str, set[str]] = defaultdict(set)
    for source, target in edges:
        after[source].add(target)
    return after


def reachable(after: dict[str, set[str]], starts: Iterable[str]) -> set[str]:
    """Every node some start leads to, the starts included (breadth first)."""
    seen = set(starts)
    todo = deque(seen)
    while todo:
        for nxt in after.get(todo.popleft(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def has_cycle(after: dict[str, set[str]]) -> bool:
    """Whether the edges hold a loop (depth first, iterative)."""
    done: set[str] = set()
    for root in list(after):
        if root in done:
            continue
        path, stack = {root}, [(root, iter(after.get(root, ())))]
        while stack:
            node, nexts = stack[-1]
            nxt = next(nexts, None)
            if nxt is None:
                stack.pop()
                path.discard(node)
                done.add(node)
            elif nxt in path:
                return True
            elif nxt not in done:
                path.add(nxt)
                stack.append((nxt, iter(after.get(nxt, ()))))
    return False
