"""The project's ``.env`` file: variables it defines are loaded into the process environment at start-up,
never overriding a variable that is already set (the real environment always wins).

Loading happens when settings are resolved against the process environment
(:func:`motia_py.settings.load_settings` without an explicit ``env``): every CLI command, ``dev``,
``start``, :meth:`motia_py.Client.from_project`, :func:`motia_py.asgi.create_app` and the Django
command. ``[project] dotenv = false`` (or ``MOTIA_PY_DOTENV=0``) turns it off. Parsing (quotes,
``export``, comments, ``${VAR}`` expansion) is python-dotenv's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ProjectError

ENV_FILE = ".env"
_OFF = {"0", "false", "no", "off"}


def dotenv_enabled(file_settings: Mapping[str, Any], environ: Mapping[str, str]) -> bool:
    """Whether to load ``.env``: ``MOTIA_PY_DOTENV``, else ``[project] dotenv``, else yes.

    A value that is not a boolean counts as on here; settings resolution reports it afterwards.
    """
    raw: Any = environ.get("MOTIA_PY_DOTENV") or file_settings.get("project", {}).get("dotenv", True)
    return raw is not False and str(raw).strip().lower() not in _OFF


def load_env_file(root: Path, file_settings: Mapping[str, Any]) -> list[str]:
    """Load ``root/.env`` into ``os.environ`` without overriding; return the names it set, sorted.

    Args:
        root: the project directory.
        file_settings: the parsed ``motia_py.toml`` (for ``[project] dotenv``).

    Raises:
        ProjectError: the file exists but cannot be read.
    """
    path = root / ENV_FILE
    if not dotenv_enabled(file_settings, os.environ) or not path.is_file():
        return []
    from dotenv import load_dotenv  # only when there is a file to read

    before = set(os.environ)
    try:
        # override=False also makes ${VAR} expand to the value the process actually uses
        load_dotenv(path, override=False, interpolate=True, encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProjectError(f"{path}: cannot read: {exc}") from exc
    return sorted(set(os.environ) - before)
