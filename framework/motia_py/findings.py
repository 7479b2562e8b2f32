"""Findings: the problems discovery and graph validation report, each with code, severity, file and hint."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any, overload

from msgspec import Struct


class Severity(str, enum.Enum):
    """How bad a finding is. Errors fail ``validate``; warnings fail it only with ``--strict``."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class Finding(Struct, frozen=True):
    """One problem (or note) about the project."""

    code: str
    severity: Severity
    message: str
    file: Path | None = None
    step: str | None = None
    line: int | None = None
    field: str | None = None
    hint: str | None = None

    def _relative(self, root: Path | None) -> str:
        assert self.file is not None
        if root is not None:
            try:
                return str(self.file.resolve().relative_to(root.resolve()))
            except ValueError:
                pass
        return str(self.file)

    def location(self, root: Path | None = None) -> str:
        """``steps/a.step.py:12`` relative to ``root`` when possible."""
        if self.file is None:
            return "(project)"
        path = self._relative(root)
        return f"{path}:{self.line}" if self.line else path

    def to_json(self, root: Path | None = None) -> dict[str, Any]:
        """A JSON-ready dict (``file`` relative to ``root`` when possible); every string is valid UTF-8."""
        return {
            "code": self.code,
            "severity": self.severity.value,
            "message": _clean(self.message),
            "file": _clean(self._relative(root)) if self.file else None,
            "line": self.line,
            "step": _clean(self.step),
            "field": _clean(self.field),
            "hint": _clean(self.hint),
        }

    def render(self, root: Path | None = None) -> str:
        """One human line: ``error[unknown-topic] steps/a.step.py:3 (step 'A'): ... hint``."""
        step = f" (step '{self.step}')" if self.step else ""
        field = f" [{self.field}]" if self.field else ""
        hint = f" -- {self.hint}" if self.hint else ""
        line = f"{self.severity.value}[{self.code}] {self.location(root)}{step}{field}: {self.message}{hint}"
        return _clean(line)


@overload
def _clean(text: str) -> str: ...
@overload
def _clean(text: None) -> None: ...
def _clean(text: str | None) -> str | None:
    """``text`` printable to any UTF-8 terminal or JSON reader: a lone surrogate from a user's file name
    or exception message is shown as ``\\udXXX`` instead of failing the whole output."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
