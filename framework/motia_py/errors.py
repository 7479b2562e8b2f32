"""The one error tree of motia-py.

Every exception the framework raises on purpose derives from :class:`MotiaError`, so callers can catch
the framework's errors without catching their own bugs. Backends translate driver exceptions (sqlite3,
redis) into :class:`BackendError` at their boundary.
"""

from __future__ import annotations


class MotiaError(Exception):
    """Base class of every error motia-py raises on purpose."""


class ProjectError(MotiaError):
    """The project cannot be read at all (no such directory, unparsable ``motia_py.toml``)."""


class SettingsError(ProjectError):
    """A setting in ``motia_py.toml``, the environment or a flag has an invalid value."""


class DiscoveryError(MotiaError):
    """One or more step files could not be loaded; ``problems`` lists every one of them."""

    def __init__(self, message: str, problems: list[object] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class StepConfigError(MotiaError):
    """A step's ``config`` is invalid.

    Args:
        message: what is wrong.
        field: the dotted config field at fault, when there is one.
        hint: a suggestion such as ``did you mean 'subscribes'?``.
    """

    def __init__(self, message: str, *, field: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.hint = hint


class StepFormatError(StepConfigError):
    """A step's ``config`` is in neither format: no ``type`` (Motia 0.x) and no ``triggers`` (Motia 1.0)."""


class CronExpressionError(StepConfigError):
    """A cron expression cannot be parsed."""


class GraphError(MotiaError):
    """The topic graph has errors; ``findings`` holds them."""

    def __init__(self, message: str, findings: list[object] | None = None) -> None:
        super().__init__(message)
        self.findings = findings or []


class UnknownTopicError(MotiaError):
    """An event was sent from outside to a topic no step subscribes to and no flow lists as entry."""


class UndeclaredEmitError(MotiaError):
    """A handler emitted a topic that is not in its step's ``emits``."""


class InvalidEmitError(MotiaError):
    """``ctx.emit`` was called with an unknown key, no topic or a bad delay (a bug: never retried)."""


class EmitSchemaError(MotiaError):
    """Emitted data does not match the schema declared on the emit."""


class InputValidationError(MotiaError):
    """Event input or a request body failed its schema.

    ``fields`` is a list of ``{"loc": [...], "msg": "..."}`` dicts, one per bad field.
    """

    def __init__(self, message: str, fields: list[dict[str, object]]) -> None:
        super().__init__(message)
        self.fields = fields


class InvalidJsonError(MotiaError):
    """A request body is not strict JSON (I-JSON): bad syntax, ``NaN``, an overflowing number, a lone
    surrogate, or nesting past the limit. HTTP answers 400."""


class InvalidResponseError(MotiaError):
    """An API handler's response cannot be sent: a body that is not JSON, a status outside 100-599, or a
    header that HTTP cannot carry (CR/LF, non-latin-1). HTTP answers 500 with the trace id."""


class ExposedWorkbenchError(MotiaError):
    """``motia-py dev`` would serve the open Workbench admin API on a non-loopback address (set a token)."""


class ConditionSkipped(MotiaError):
    """A trigger's ``condition`` was false (Motia 1.0 steps): the run is skipped, neither run nor failed.

    Raised by the handler adapter of a 1.0 step (never by user code); the router acknowledges the
    delivery and records the run as skipped, the HTTP layer answers 422 as Motia's engine does.
    """


class NonRetryableError(MotiaError):
    """Raise from a handler to send the event straight to the dead-letter queue, without retries."""


class HandlerTimeoutError(MotiaError):
    """A handler ran past its ``infrastructure.handler.timeout``."""


class PayloadTooLargeError(MotiaError):
    """An event's JSON payload is larger than the configured limit."""


class BackendError(MotiaError):
    """A backend operation failed."""


class BackendUnavailableError(BackendError):
    """The backend cannot be reached (bad URL, refused connection, unwritable file)."""


class UnknownBackendError(BackendError):
    """No backend is registered for a URL's scheme."""


class UnknownEventError(MotiaError):
    """No event has this id (or id prefix): it never existed, or its handle was pruned by retention."""


class AmbiguousIdError(MotiaError):
    """An id prefix matches more than one event or trace; ``candidates`` lists them."""

    def __init__(self, message: str, candidates: list[str]) -> None:
        super().__init__(message)
        self.candidates = candidates


class WaitTimeoutError(MotiaError, TimeoutError):
    """``wait`` gave up: the event had not finished within the timeout (it keeps running)."""
