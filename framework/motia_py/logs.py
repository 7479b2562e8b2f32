"""Structured logging: ``ctx.logger`` for handlers and the framework's own log lines.

Every record carries trace id, step, flow, topic and attempt. Records go to the standard ``logging``
module (logger ``motia_py``), formatted as colourful text on a terminal and JSON lines otherwise.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

LOGGER_NAME = "motia_py"
_log = logging.getLogger(LOGGER_NAME)

LogSink = Callable[[dict[str, Any]], None]


def _to_logging(record: dict[str, Any]) -> None:
    level = getattr(logging, str(record.get("level", "info")).upper(), logging.INFO)
    if _log.isEnabledFor(level):
        _log.log(level, record.get("msg", ""), extra={"motia": record})


RESERVED_FIELDS = frozenset({"ts", "level", "msg", "trace_id", "step", "flow", "topic", "attempt", "source"})
"""Fields every log record carries; a handler's field of the same name is kept as ``user_<name>``."""
_warned: set[str] = set()


class StepLogger:
    """The logger handlers get as ``ctx.logger``: ``info/warning/warn/error/debug(msg, fields=None, **kw)``."""

    __slots__ = ("_base", "_guard", "_sink")

    def __init__(self, base: Mapping[str, Any], sink: LogSink | None = None, *, guard_reserved: bool = True) -> None:
        self._base = dict(base)
        self._sink = sink or _to_logging
        self._guard = guard_reserved  # False for the framework's own logger, which sets those fields itself

    def _emit(self, level: str, msg: Any, fields: Mapping[str, Any] | None, kw: Mapping[str, Any]) -> None:
        record: dict[str, Any] = {"ts": time.time(), "level": level, "msg": str(msg), **self._base}
        if fields:
            self._add(record, fields if isinstance(fields, Mapping) else {"data": fields})
        if kw:
            self._add(record, kw)
        self._sink(record)

    def _add(self, record: dict[str, Any], fields: Mapping[str, Any]) -> None:
        """Add the caller's fields; one named like a field motia-py sets (``attempt``, ``step``...) is kept
        as ``user_<name>`` so neither value is lost, with a warning the first time."""
        clash = RESERVED_FIELDS.intersection(fields) if self._guard else ()
        if not clash:
            record.update(fields)
            return
        for key, value in fields.items():
            if key in clash:
                record[f"user_{key}"] = value
                if key not in _warned:
                    _warned.add(key)
                    _log.warning(f"log field '{key}' is set by motia-py; your value is kept as 'user_{key}'")
            else:
                record[key] = value

    def info(self, msg: Any, fields: Mapping[str, Any] | None = None, **kw: Any) -> None:
        """Log at info level with structured fields."""
        self._emit("info", msg, fields, kw)

    def warning(self, msg: Any, fields: Mapping[str, Any] | None = None, **kw: Any) -> None:
        """Log at warning level."""
        self._emit("warning", msg, fields, kw)

    warn = warning

    def error(self, msg: Any, fields: Mapping[str, Any] | None = None, **kw: Any) -> None:
        """Log at error level."""
        self._emit("error", msg, fields, kw)

    def debug(self, msg: Any, fields: Mapping[str, Any] | None = None, **kw: Any) -> None:
        """Log at debug level."""
        self._emit("debug", msg, fields, kw)

    def bind(self, **fields: Any) -> StepLogger:
        """A logger that adds ``fields`` to every record."""
        return StepLogger({**self._base, **fields}, self._sink, guard_reserved=self._guard)


def framework_logger(sink: LogSink | None = None, **base: Any) -> StepLogger:
    """A structured logger for the framework itself (``step`` unset unless given)."""
    return StepLogger({"source": "motia", **base}, sink, guard_reserved=False)


_COLOURS = {"debug": "\033[2m", "info": "\033[36m", "warning": "\033[33m", "error": "\033[31m"}
_RESET = "\033[0m"
_KNOWN = tuple(sorted(RESERVED_FIELDS))


class TextFormatter(logging.Formatter):
    """``12:00:01 INFO  [Step] message  key=value ... (trace abcd1234)``, coloured on a terminal."""

    def __init__(self, colour: bool) -> None:
        super().__init__()
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        """Render one record."""
        m: dict[str, Any] = getattr(record, "motia", None) or {"msg": record.getMessage(),
                                                                 "level": record.levelname.lower()}
        level = str(m.get("level", "info"))
        ts = time.strftime("%H:%M:%S", time.localtime(m.get("ts", record.created)))
        where = f"[{m['step']}] " if m.get("step") else ""
        extras = " ".join(f"{k}={_short(v)}" for k, v in m.items() if k not in _KNOWN)
        trace = f" (trace {str(m['trace_id'])[:8]})" if m.get("trace_id") else ""
        lvl = level.upper().ljust(5)
        if self.colour:
            lvl = f"{_COLOURS.get(level, '')}{lvl}{_RESET}"
            trace = f"\033[2m{trace}{_RESET}" if trace else ""
        line = f"{ts} {lvl} {where}{m.get('msg', '')}" + (f"  {extras}" if extras else "") + trace
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _short(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str, separators=(",", ":"))
    return s if len(s) <= 120 else s[:117] + "..."


class JsonFormatter(logging.Formatter):
    """One JSON document per line."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one record."""
        m: dict[str, Any] = dict(getattr(record, "motia", None) or {})
        m.setdefault("ts", record.created)
        m.setdefault("level", record.levelname.lower())
        m.setdefault("msg", record.getMessage())
        if record.exc_info:
            m["exc"] = self.formatException(record.exc_info)
        return json.dumps(m, default=str, separators=(",", ":"))


def configure_logging(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Send ``motia_py`` logs to ``stream`` (stderr): text on a terminal, JSON otherwise (``fmt=auto``)."""
    stream = stream or sys.stderr
    tty = stream.isatty()
    use_json = fmt == "json" or (fmt == "auto" and not tty)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter(colour=tty))
    _log.handlers[:] = [handler]
    _log.setLevel(getattr(logging, level.upper(), logging.INFO))
    _log.propagate = False
