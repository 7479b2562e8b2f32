"""motia-py: event-driven Python backends from small step files.

The public API: typed step configs, the errors a step author raises or catches, the client for other
Python code, and the test harness (``motia_py.testing.Harness``).
"""

from ._version import __version__
from .client import Client
from .config import ApiConfig, CronConfig, EventConfig, NoopConfig
from .context import Context
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
