"""Project settings from ``motia_py.toml``, resolved once: flag > environment > file > default.

Each setting is declared once in :data:`SETTINGS` with its file key, environment variable and default;
:func:`load_settings` is the only place that reads the file or the environment.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from msgspec import Struct

from .errors import ProjectError, SettingsError
from .suggest import did_you_mean

SETTINGS_FILE = "motia_py.toml"
DEFAULT_BACKEND_URL = "sqlite:///.motia/motia.db"


class _Setting(Struct, frozen=True):
    name: str  # attribute of Settings and the flag name
    section: str
    key: str
    env: str
    default: Any
    parse: Callable[[Any], Any]


def _port(v: Any) -> int:
    if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
        raise ValueError(f"{v!r} is not a port number")
    port = int(v)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    return port


def _int(minimum: int) -> Callable[[Any], int]:
    """A whole number >= ``minimum`` (``inf``, ``nan``, ``1.5`` and ``true`` are refused)."""

    def parse(v: Any) -> int:
        if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):  # False for inf and nan
            raise ValueError("not a whole number")
        n = int(v.strip()) if isinstance(v, str) else int(v)
        if not minimum <= n <= _MAX_INT:
            raise ValueError(f"must be from {minimum} to {_MAX_INT}")
        return n

    return parse


def _seconds(v: Any) -> float:
    """A finite, non-negative number of seconds."""
    if isinstance(v, bool):
        raise ValueError("not a number of seconds")
    s = float(v)
    if not 0 <= s <= _MAX_SECONDS:  # False for nan
        raise ValueError(f"must be a number of seconds from 0 to {_MAX_SECONDS:g}")
    return s


def _text(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"must be a string, not {type(v).__name__}")
    if "\x00" in v:
        raise ValueError("must not contain a NUL byte")
    return v


def _path(v: Any) -> str:
    return _text(os.fspath(v) if isinstance(v, os.PathLike) else v)


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{v!r} is not a boolean")


def _otel(v: Any) -> str:
    s = str(v).strip().lower()
    if s in ("auto", "on", "off"):
        return s
    return "on" if _bool(v) else "off"


def _motia_sdk(v: Any) -> str:
    """``auto``, ``builtin`` or ``installed``: which package ``import motia`` gives step files."""
    s = str(v).strip().lower()
    if s not in ("auto", "builtin", "installed"):
        raise ValueError("must be auto, builtin or installed")
    return s


def _event_loop(v: Any) -> str:
    """``auto``, ``uvloop`` or ``asyncio``: the event loop of ``start`` and ``dev`` (see loops.py)."""
    s = str(v).strip().lower()
    if s not in ("auto", "uvloop", "asyncio"):
        raise ValueError("must be auto, uvloop or asyncio")
    return s


def _opt_str(v: Any) -> str | None:
    return None if v is None or v == "" else _text(v)


def _hosts(v: Any) -> tuple[str, ...]:
    """Host names: a list in the file, comma-separated in the environment."""
    items = v.split(",") if isinstance(v, str) else v
    if not isinstance(items, list | tuple):
        raise ValueError("must be a list of host names")
    out = []
    for item in items:
        name = _text(item).strip().lower().rstrip(".")
        if name:
            if not all(c.isalnum() or c in "-._:" for c in name):
                raise ValueError(f"{item!r} is not a host name")
            out.append(name)
    return tuple(out)


def _names(v: Any) -> tuple[str, ...]:
    """A list of strings in the file, comma-separated in the environment."""
    items = v.split(",") if isinstance(v, str) else v
    if not isinstance(items, list | tuple):
        raise ValueError("must be a list of strings")
    return tuple(s for s in (_text(item).strip() for item in items) if s)


_MAX_INT = 2**63 - 1  # what SQLite and Redis integers hold
_MAX_SECONDS = 10 * 365 * 86_400.0


SETTINGS: tuple[_Setting, ...] = (
    _Setting("steps_dir", "project", "steps_dir", "MOTIA_PY_STEPS_DIR", "steps", _path),
    _Setting("flows_dir", "project", "flows_dir", "MOTIA_PY_FLOWS_DIR", "flows", _path),
    _Setting("dotenv", "project", "dotenv", "MOTIA_PY_DOTENV", True, _bool),
    _Setting("motia_sdk", "project", "motia_sdk", "MOTIA_PY_MOTIA_SDK", "auto", _motia_sdk),
    _Setting("transactional", "project", "transactional", "MOTIA_PY_TRANSACTIONAL", False, _bool),
    _Setting("backend_url", "backend", "url", "MOTIA_PY_BACKEND_URL", DEFAULT_BACKEND_URL, _text),
    _Setting("redis_prefix", "backend", "prefix", "MOTIA_PY_BACKEND_PREFIX", "motia", _text),
    _Setting("max_payload_bytes", "backend", "max_payload_bytes", "MOTIA_PY_MAX_PAYLOAD_BYTES", 1_048_576, _int(1)),
    _Setting("host", "server", "host", "MOTIA_PY_SERVER_HOST", "127.0.0.1", _text),
    _Setting("port", "server", "port", "MOTIA_PY_SERVER_PORT", 3000, _port),
    _Setting("body_limit_bytes", "server", "body_limit_bytes", "MOTIA_PY_SERVER_BODY_LIMIT", 1_048_576, _int(0)),
    _Setting("workbench_token", "server", "workbench_token", "MOTIA_PY_WORKBENCH_TOKEN", None, _opt_str),
    _Setting("metrics", "server", "metrics", "MOTIA_PY_SERVER_METRICS", False, _bool),
    _Setting("metrics_token", "server", "metrics_token", "MOTIA_PY_METRICS_TOKEN", None, _opt_str),
    _Setting("allowed_hosts", "server", "allowed_hosts", "MOTIA_PY_SERVER_ALLOWED_HOSTS", (), _hosts),
    _Setting("middleware", "server", "middleware", "MOTIA_PY_SERVER_MIDDLEWARE", (), _names),
    _Setting("cors_origins", "cors", "origins", "MOTIA_PY_CORS_ORIGINS", (), _names),
    _Setting("cors_methods", "cors", "methods", "MOTIA_PY_CORS_METHODS",
             ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"), _names),
    _Setting("cors_headers", "cors", "headers", "MOTIA_PY_CORS_HEADERS", ("content-type", "authorization"), _names),
    _Setting("cors_credentials", "cors", "credentials", "MOTIA_PY_CORS_CREDENTIALS", False, _bool),
    _Setting("streams_authenticate", "streams", "authenticate", "MOTIA_PY_STREAMS_AUTHENTICATE", None, _opt_str),
    _Setting("grace_period_s", "worker", "grace_period", "MOTIA_PY_GRACE_PERIOD", 30.0, _seconds),
    _Setting("event_loop", "worker", "event_loop", "MOTIA_PY_EVENT_LOOP", "auto", _event_loop),
    _Setting("traces_enabled", "traces", "enabled", "MOTIA_PY_TRACES_ENABLED", True, _bool),
    _Setting("traces_max_age_s", "traces", "max_age", "MOTIA_PY_TRACES_MAX_AGE", 86_400.0, _seconds),
    _Setting("traces_max_count", "traces", "max_count", "MOTIA_PY_TRACES_MAX_COUNT", 10_000, _int(0)),
    _Setting("traces_otel", "traces", "otel", "MOTIA_PY_TRACES_OTEL", "auto", _otel),
    _Setting("handles_max_age_s", "handles", "max_age", "MOTIA_PY_HANDLES_MAX_AGE", 86_400.0, _seconds),
    _Setting("handles_max_count", "handles", "max_count", "MOTIA_PY_HANDLES_MAX_COUNT", 100_000, _int(0)),
    _Setting("log_format", "logging", "format", "MOTIA_PY_LOG_FORMAT", "auto", _text),
    _Setting("log_level", "logging", "level", "MOTIA_PY_LOG_LEVEL", "info", _text),
)
_KNOWN = {(s.section, s.key) for s in SETTINGS}


class Settings(Struct, frozen=True):
    """The resolved settings of one project (paths absolute)."""

    root: Path
    steps_dir: Path
    flows_dir: Path
    dotenv: bool
    motia_sdk: str  # auto | builtin | installed: what `import motia` gives step files (see motia_sdk.py)
    backend_url: str
    redis_prefix: str
    max_payload_bytes: int
    host: str
    port: int
    body_limit_bytes: int
    workbench_token: str | None
    metrics: bool
    metrics_token: str | None
    allowed_hosts: tuple[str, ...]
    middleware: tuple[str, ...]  # "module:function" of the project: run around every API step
    cors_origins: tuple[str, ...]  # empty: CORS off
    cors_methods: tuple[str, ...]
    cors_headers: tuple[str, ...]
    cors_credentials: bool
    streams_authenticate: str | None  # "module:function" of the project: the stream clients' authenticate hook
    grace_period_s: float
    traces_enabled: bool
    traces_max_age_s: float
    traces_max_count: int
    traces_otel: str
    handles_max_age_s: float
    handles_max_count: int
    log_format: str
    log_level: str
    event_loop: str = "auto"  # auto | uvloop | asyncio: the event loop of start and dev (see loops.py)
    transactional: bool = False  # the default of steps without "transactional" in their config

    @property
    def settings_file(self) -> Path:
        """Path of ``motia_py.toml`` (which may not exist)."""
        return self.root / SETTINGS_FILE


def read_settings_file(root: Path) -> dict[str, Any]:
    """Parse ``motia_py.toml`` under ``root`` ({} when absent).

    Raises:
        ProjectError: when the file cannot be parsed or has unknown keys.
    """
    path = root / SETTINGS_FILE
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProjectError(f"{path}: cannot parse: {exc}") from exc
    except RecursionError as exc:  # tomllib is recursive: arrays nested thousands deep
        raise ProjectError(f"{path}: cannot parse: values nested too deeply") from exc
    except OSError as exc:
        raise ProjectError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    for section, table in data.items():
        if not isinstance(table, dict):
            raise ProjectError(f"{path}: '{section}' must be a table ([{section}])")
        for key in table:
            if (section, key) not in _KNOWN:

                known = [f"{s}.{k}" for s, k in _KNOWN]
                hint = did_you_mean(f"{section}.{key}", known)
                raise ProjectError(f"{path}: unknown setting '{section}.{key}'" + (f" ({hint})" if hint else ""))
    return data


def load_settings(
    project: str | os.PathLike[str] = ".",
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve every setting once: flag > environment > file > default.

    Args:
        project: the project directory.
        flags: values given on the command line (``None`` values are ignored).
        env: the environment (defaults to ``os.environ``, read here and nowhere else, after the
            project's ``.env`` filled in the variables it leaves unset: see :mod:`motia_py.env_file`).

    Raises:
        ProjectError: no such directory, or an unreadable ``motia_py.toml``.
        SettingsError: a value that does not parse.
    """
    root = Path(project).expanduser().resolve()
    if not root.is_dir():
        raise ProjectError(f"no such project directory: {root}")
    flags = flags or {}
    env = os.environ if env is None else env
    data = read_settings_file(root)
    if env is os.environ:  # the process environment: the project's .env fills in what it leaves unset
        from .env_file import load_env_file

        load_env_file(root, data)
    values: dict[str, Any] = {}
    for s in SETTINGS:
        origin = "default"
        raw: Any = s.default
        if s.key in data.get(s.section, {}):
            raw, origin = data[s.section][s.key], f"{SETTINGS_FILE} [{s.section}] {s.key}"
        if env.get(s.env) not in (None, ""):
            raw, origin = env[s.env], f"${s.env}"
        if flags.get(s.name) is not None:
            raw, origin = flags[s.name], f"--{s.name.replace('_', '-')}"
        try:
            values[s.name] = s.parse(raw) if raw is not None else None
        except (TypeError, ValueError, OverflowError) as exc:
            raise SettingsError(f"invalid {s.name} from {origin}: {_shown(raw)} ({exc})") from exc
    return Settings(
        root=root,
        steps_dir=_resolve(root, values.pop("steps_dir"), "steps_dir"),
        flows_dir=_resolve(root, values.pop("flows_dir"), "flows_dir"),
        **values,
    )


def _resolve(root: Path, value: str, name: str) -> Path:
    try:
        return (root / value).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        raise SettingsError(f"invalid {name}: {_shown(value)} ({exc})") from exc


def _shown(value: Any) -> str:
    try:
        text = repr(value)
    except ValueError:  # an int past sys.get_int_max_str_digits()
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."
