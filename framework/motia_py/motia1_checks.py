"""Validation findings about Motia 1.0 step files that the topic graph does not cover: which ``motia``
package they import (see :mod:`motia_py.motia_sdk`)."""

from __future__ import annotations

from collections.abc import Iterator

from . import motia_sdk
from .discovery import Project
from .findings import Finding, Severity
from .settings import SETTINGS_FILE


def motia1_findings(project: Project) -> Iterator[Finding]:
    """A warning when 1.0 steps import an installed ``motia`` (Motia's SDK, whose helpers need Motia's
    engine), a note when motia-py's built-in SDK stands in for an installed one."""
    v1 = [s for s in project.steps if s.origin is not None]
    if not v1:
        return
    installed = motia_sdk.installed_sdk(project.root)
    mode = motia_sdk.resolve(project.settings.motia_sdk, project.root)
    first = v1[0]
    if mode == "installed" and installed is not None:
        yield Finding("motia-sdk", Severity.WARNING,
                      f"step files import the installed motia package ({installed}): Motia's SDK, whose enqueue, "
                      "stateManager, Stream and logger need Motia's engine (iii), which motia-py does not run",
                      file=first.file, step=first.display_name, line=first.line,
                      hint=f"set [project] motia_sdk = \"builtin\" in {SETTINGS_FILE} to run them with motia-py's "
                           "own implementation of the SDK")
    elif mode == "builtin" and installed is not None:
        yield Finding("motia-sdk", Severity.INFO,
                      f"step files import motia-py's built-in Motia SDK; the installed motia package ({installed}) "
                      "is not used in this process", file=first.file, step=first.display_name, line=first.line,
                      hint=f"[project] motia_sdk = \"installed\" in {SETTINGS_FILE} would use it")
