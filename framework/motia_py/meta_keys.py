"""Every framework metadata and lease key, built in one place (a leaf module: imports nothing of ours).

Backends store these as opaque strings (``meta_get``/``meta_set``/``acquire``); nothing else in motia-py
spells them out.
"""

from __future__ import annotations

CRON_ALIVE = "cron-alive"
"""When a cron scheduler last checked its schedules (epoch seconds, JSON)."""


def cron_last(step: str) -> str:
    """A cron step's last run record (written when a run ends)."""
    return f"cron-last:{step}"


def cron_running(step: str) -> str:
    """The overlap lock of a cron step with ``overlap: skip`` (a lease held while a run lasts)."""
    return f"cron-running:{step}"


def cron_running_since(step: str) -> str:
    """When the run holding :func:`cron_running` started (epoch seconds, ``repr`` of a float)."""
    return f"cron-running:{step}:since"


def cron_tick(step: str) -> str:
    """The last tick of a cron step that some scheduler fired (one record per step)."""
    return f"cron-tick:{step}"
