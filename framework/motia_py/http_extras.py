"""Project-level HTTP conveniences for API steps: CORS from ``[cors]`` in ``motia_py.toml``, global middleware
from ``[server] middleware``, and the access log line ``dev`` prints per request.

CORS applies to API steps only: admin routes (the Workbench, ``/metrics``) never answer cross-origin
requests whatever the settings say.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from msgspec import Struct

from .errors import MotiaError
from .settings import Settings


class CorsPolicy(Struct, frozen=True):
    """Which origins may call the API steps from a browser, with what."""

    origins: tuple[str, ...]  # "*" allows any origin (never together with credentials)
    methods: tuple[str, ...]
    headers: tuple[str, ...]
    credentials: bool
    max_age_s: int

    @classmethod
    def from_settings(cls, settings: Settings) -> CorsPolicy | None:
        """The policy of ``[cors]``; None when no origin is allowed (the default: CORS off)."""
        if not settings.cors_origins:
            return None
        return cls(origins=settings.cors_origins, methods=settings.cors_methods, headers=settings.cors_headers,
                   credentials=settings.cors_credentials, max_age_s=600)

    def allows(self, origin: str) -> bool:
        """Whether a request from ``origin`` may read the answer."""
        return "*" in self.origins or origin in self.origins

    def response_headers(self, origin: str) -> dict[str, str]:
        """The headers an allowed origin's answer carries."""
        allow = "*" if "*" in self.origins and not self.credentials else origin
        headers = {"access-control-allow-origin": allow}
        if allow != "*":
            headers["vary"] = "Origin"
        if self.credentials:
            headers["access-control-allow-credentials"] = "true"
        return headers

    def preflight_headers(self, origin: str, requested_headers: str | None) -> dict[str, str]:
        """The headers of the answer to a preflight (``OPTIONS`` with ``Access-Control-Request-Method``)."""
        headers = self.response_headers(origin)
        headers["access-control-allow-methods"] = ", ".join(self.methods)
        if "*" in self.headers:
            headers["access-control-allow-headers"] = requested_headers or "*"
        elif self.headers:
            headers["access-control-allow-headers"] = ", ".join(self.headers)
        headers["access-control-max-age"] = str(self.max_age_s)
        return headers


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A request header, case-insensitively."""
    return next((v for k, v in headers.items() if k.lower() == name), None)


def load_middleware(settings: Settings) -> tuple[Any, ...]:
    """The project's global middleware, ``"module:function"`` each, imported from the project.

    Raises:
        MotiaError: a name that does not import, or a function that is not ``async def (req, ctx, next)``.
    """
    out = []
    for spec in settings.middleware:
        module_name, _, attr = spec.partition(":")
        if not module_name or not attr:
            raise MotiaError(f"[server] middleware entry '{spec}' must be 'module:function'")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise MotiaError(f"[server] middleware '{spec}' cannot be loaded: {exc}") from exc
        if not inspect.iscoroutinefunction(fn):
            raise MotiaError(f"[server] middleware '{spec}' must be 'async def {attr}(req, ctx, next)'")
        out.append(fn)
    return tuple(out)
