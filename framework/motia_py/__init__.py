"""motia-py: event-driven Python backends from small step files.

The public API: typed step configs, the errors a step author raises or catches, the client for other
Python code, and the test harness (``motia_py.testing.Harness``).
"""

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    BackendError,
    BackendUnavailableError,
    CronExpressionError,
    DiscoveryError,
    GraphError,
    HandlerTimeoutError,
    MotiaError,
    NonRetryableError,
    StepConfigError,
    UndeclaredEmitError,
    UnknownTopicError,
)

if TYPE_CHECKING:
    from .client import Client
    from .context import Context
    from .typed_config import ApiConfig, CronConfig, EventConfig, NoopConfig

_LAZY = {"Client": "client", "Context": "context", "ApiConfig": "typed_config", "CronConfig": "typed_config",
         "EventConfig": "typed_config", "NoopConfig": "typed_config"}


def __getattr__(name: str) -> Any:
    """``Client``, ``Context`` and the typed configs are imported on first use: the CLI's commands that
    never run events (``validate``, ``graph``, ...) skip the runtime they bring, and projects whose step
    configs are dicts never import pydantic."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'motia_py' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "ApiConfig",
    "BackendError",
    "BackendUnavailableError",
    "Client",
    "Context",
    "CronConfig",
    "CronExpressionError",
    "DiscoveryError",
    "EventConfig",
    "GraphError",
    "HandlerTimeoutError",
    "MotiaError",
    "NonRetryableError",
    "NoopConfig",
    "StepConfigError",
    "UndeclaredEmitError",
    "UnknownTopicError",
    "__version__",
]
