"""AI-assistant rules: ``AGENTS.md``, ``CLAUDE.md`` and ``.cursor/rules/*.mdc`` for a motia-py project.

They teach a coding assistant to write motia-py steps, flows and tests. ``motia-py create`` writes them
and :func:`pull` (``motia-py rules pull``) writes or refreshes them in an existing project.

The text lives in ``templates/rules/``: three sections (``overview.md``, ``steps.md``, ``testing.md``)
make ``AGENTS.md`` together and one Cursor rule each. Every written file ends with a marker line that
holds a digest of the text above it, so :func:`pull` can tell a file it wrote and nobody changed (which
it refreshes) from a file the user edited (which it leaves alone unless ``force``).
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from importlib import resources
from pathlib import Path

from msgspec import Struct

from ._version import __version__
from .errors import ProjectError

_SECTIONS = ("overview", "steps", "testing")
# Cursor rule files: project path -> (section, frontmatter). Cursor reads the frontmatter; alwaysApply
# rules are in every request, the others when a file matching ``globs`` is involved.
_CURSOR: dict[str, tuple[str, str]] = {
    ".cursor/rules/motia-py-overview.mdc": (
        "overview", "description: motia-py project layout, workflow, rules and CLI\nglobs:\nalwaysApply: true"),
    ".cursor/rules/motia-py-steps.mdc": (
        "steps", "description: Writing motia-py step files: config keys, handlers, ctx, state, flows\n"
                 "globs: steps/**/*.py,flows/*.toml\nalwaysApply: false"),
    ".cursor/rules/motia-py-testing.mdc": (
        "testing", "description: Testing motia-py steps with the Harness\nglobs: tests/**/*.py\nalwaysApply: false"),
}
_MARKER = re.compile(r"\n<!-- motia-py rules (?P<version>\S+) sha256:(?P<digest>[0-9a-f]{16})\b[^\n]*-->\n?\Z")


def _template(name: str) -> str:
    return (resources.files("motia_py") / "templates" / "rules" / name).read_text(encoding="utf-8")


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8")).hexdigest()[:16]


def _with_marker(body: str) -> str:
    body = body.rstrip("\n") + "\n"
    return (f"{body}\n<!-- motia-py rules {__version__} sha256:{_digest(body)}: written by motia-py; "
            "'motia-py rules pull' refreshes this file until you edit it -->\n")


@cache
def render_all() -> dict[str, str]:
    """Every rule file, marker included: project-relative path -> text."""
    sections = {name: _template(f"{name}.md").strip("\n") for name in _SECTIONS}
    header = _template("AGENTS.header.md").strip("\n").replace("{version}", __version__)
    files = {"AGENTS.md": _with_marker("\n\n".join([header, *sections.values()])),
             "CLAUDE.md": _with_marker(_template("CLAUDE.md"))}
    for path, (section, front) in _CURSOR.items():
        files[path] = _with_marker(f"---\n{front}\n---\n\n{sections[section]}")
    return files


def is_pristine(text: str) -> bool:
    """Whether ``text`` is a rule file as motia-py wrote it (its marker's digest matches the text)."""
    text = text.replace("\r\n", "\n")  # a checkout with Windows line ends is not an edit
    match = _MARKER.search(text)
    return match is not None and _digest(text[:match.start()]) == match["digest"]


class PullReport(Struct, frozen=True):
    """What :func:`pull` did with each rule file (paths are absolute)."""

    written: tuple[Path, ...]
    unchanged: tuple[Path, ...]
    skipped: tuple[Path, ...]

    def messages(self, root: Path) -> list[str]:
        """One line per file, relative to ``root``, for the CLI to print."""
        def rel(p: Path) -> str:
            return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)

        lines = [f"  wrote {rel(p)}" for p in self.written]
        lines += [f"  up to date {rel(p)}" for p in self.unchanged]
        lines += [f"  skipped {rel(p)}: edited since motia-py wrote it (--force overwrites it)" for p in self.skipped]
        return lines


def pull(project_dir: Path, force: bool = False) -> PullReport:
    """Write or refresh the rule files in ``project_dir``.

    A missing file is written. A file motia-py wrote and nobody edited is refreshed to this version's
    text. A file the user edited (or one without motia-py's marker) is skipped, unless ``force``.

    Args:
        project_dir: the project's root directory.
        force: overwrite edited files too.

    Raises:
        ProjectError: ``project_dir`` is not a directory.
    """
    root = Path(project_dir).resolve()
    if not root.is_dir():
        raise ProjectError(f"no such project directory: {project_dir}")
    written: list[Path] = []
    unchanged: list[Path] = []
    skipped: list[Path] = []
    for rel, text in render_all().items():
        path = root / rel
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current == text:
            unchanged.append(path)
            continue
        if current is not None and not force and not is_pristine(current):
            skipped.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return PullReport(tuple(written), tuple(unchanged), tuple(skipped))
