"""Remembered results of the slow, pure checks of step configs, kept in ``.motia/checks.json``.

Checking a JSON-schema dict (``jsonschema``: the schema itself, its ``$ref`` targets, that it can be
used) and a cron expression (``croniter``) costs importing those libraries, tens of milliseconds of
every ``validate`` and every worker's boot. Both checks are pure functions of what they check, so a
value that passed once passes again: discovery remembers the ones that passed, keyed by the value itself
(a digest of its exact ``repr``, for values made of plain JSON types only), and the next discovery
skips the check for them. Step files are still imported and their configs still read every time; a
changed schema or expression is a new key and is checked. Failures are never remembered (their error
messages come from the check itself).

The file holds a stamp of the checking code (motia-py's version, the modification times of the
checking modules and of the installed libraries): when any of them changes, the remembered results are
dropped. A project directory that cannot be written simply gets no cache.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CACHE_FILE = Path(".motia") / "checks.json"
MAX_ENTRIES = 4096
"""Per kind of check; past it the oldest entries are dropped (hot reload keeps adding edited schemas)."""
_LIBRARIES = ("jsonschema", "referencing", "jsonschema_specifications", "croniter")
_EXACT = (dict, list, str, int, float, bool, type(None))


class CheckCache:
    """The checks that passed, by kind (``json-schema``, ``cron``), for one project."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stamp = _stamp()
        self.entries: dict[str, dict[str, None]] = {}
        self.changed = False
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("stamp") == self.stamp:
                self.entries = {kind: dict.fromkeys(keys) for kind, keys in data["checks"].items()
                                if isinstance(keys, list) and all(isinstance(k, str) for k in keys)}

    def passed(self, kind: str, key: str) -> bool:
        """Whether the check ``kind`` passed for ``key`` before."""
        return key in self.entries.get(kind, {})

    def remember(self, kind: str, key: str) -> None:
        """Note that the check ``kind`` passed for ``key``."""
        keys = self.entries.setdefault(kind, {})
        if key in keys:
            return
        keys[key] = None
        while len(keys) > MAX_ENTRIES:
            del keys[next(iter(keys))]
        self.changed = True

    def save(self) -> None:
        """Write the file when something was added (atomically; errors are ignored: no cache then)."""
        if not self.changed:
            return
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"stamp": self.stamp, "checks": {k: list(v) for k, v in self.entries.items()}}),
                           encoding="utf-8")
            os.replace(tmp, self.path)
            self.changed = False
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()


_current: CheckCache | None = None
_by_root: dict[Path, CheckCache] = {}


@contextlib.contextmanager
def session(root: Path) -> Iterator[CheckCache]:
    """Use (and afterwards save) the project's cache while a discovery checks its step files."""
    global _current
    cache = _by_root.get(root)
    if cache is None or cache.stamp != _stamp():
        cache = _by_root[root] = CheckCache(root / CACHE_FILE)
    previous, _current = _current, cache
    try:
        yield cache
    finally:
        _current = previous
        cache.save()


def key_of(value: Any) -> str | None:
    """A key for ``value`` when it is made only of plain JSON types (exactly ``dict``, ``list``, ``str``,
    numbers, ``bool``, ``None``; no subclass, no tuple), else None (it is then always checked). Two
    values with the same key are equal and of the same types throughout. A container met twice (a
    cycle, or one shared) gives None too."""
    stack = [value]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        kind = type(node)
        if kind not in _EXACT:
            return None
        if kind is dict or kind is list:
            if id(node) in seen:
                return None
            seen.add(id(node))
        if kind is dict:
            stack.extend(node.keys())
            stack.extend(node.values())
        elif kind is list:
            stack.extend(node)
    import hashlib

    return hashlib.sha256(repr(value).encode("utf-8", "surrogatepass")).hexdigest()


def passed(kind: str, key: str | None) -> bool:
    """Whether the check ``kind`` passed for ``key`` in an earlier discovery (never outside one)."""
    return key is not None and _current is not None and _current.passed(kind, key)


def remember(kind: str, key: str | None) -> None:
    """Note, inside a discovery, that the check ``kind`` passed for ``key``."""
    if key is not None and _current is not None:
        _current.remember(kind, key)


def _stamp() -> str:
    """What the remembered results depend on: this package's version and checking modules, and the
    installed checking libraries (their modification times change when they are upgraded)."""
    import importlib.util

    from . import _version

    here = Path(__file__).resolve().parent
    parts = [_version.__version__, sys.version.split()[0]]
    for name in ("schema.py", "cron.py", "check_cache.py"):
        parts.append(_mtime(here / name))
    for lib in _LIBRARIES:
        try:
            spec = importlib.util.find_spec(lib)
        except (ImportError, ValueError):
            spec = None
        parts.append(f"{lib}:{_mtime(Path(spec.origin)) if spec is not None and spec.origin else '-'}")
    return "|".join(parts)


def _mtime(path: Path) -> str:
    try:
        return str(path.stat().st_mtime_ns)
    except OSError:
        return "-"
