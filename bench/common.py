"""Shared helpers: results as JSON under bench/results/, a plain table, percentiles, machine info."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0-100) by nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
            "loadavg_1m": round(load[0], 2), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def save(name: str, rows: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> Path:
    """Write ``bench/results/<name>.json``."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), "rows": rows, **(extra or {})}, indent=2))
    return path


def table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain-text table."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    out = [title, "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(out)


def median(values: list[float]) -> float:
    """The median (NaN when empty)."""
    return statistics.median(values) if values else float("nan")
