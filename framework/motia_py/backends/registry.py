"""Find a backend by URL scheme through the ``motia_py.backends`` entry-point group.

The built-in backends are registered the same way (see ``pyproject.toml``), so a separate package adds
``postgres://`` by declaring an entry point; nothing here changes. An entry point names a factory
``create_backend(url, options)`` that returns a backend object (not opened)::

    [project.entry-points."motia_py.backends"]
    postgres = "motia_postgres:create_backend"

The object must implement at least the queue and state stores with ``url``, ``open`` and ``close``
(:class:`~.stores.CoreBackend`). When it lacks any method of the lease store (``acquire``, ``release``,
``meta_get``, ``meta_set``, ``meta_cas``) or of the trace store (``traces_*``), :func:`create_backend`
completes it with the store built on its state store (:mod:`.derived`, records in the reserved state
namespace ``__motia_py__``, lease expiry on ``options.clock``), through :func:`.compose.complete_backend`.
A store is taken whole from the object or whole from the defaults, never mixed method by method. Without
``complete_tx`` (:class:`~.stores.TxStore`) it gets a stand-in that is not atomic (:mod:`.derived_tx`),
and ``motia-py validate`` reports transactional steps as unsupported on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import UnknownBackendError
from ..suggest import did_you_mean
from ..types import Clock
from .compose import complete_backend
from .stores import Backend

GROUP = "motia_py.backends"


@dataclass(frozen=True, slots=True)
class BackendOptions:
    """What a backend factory gets besides the URL."""

    root: Path
    clock: Clock | None = None
    prefix: str = "motia"


def _factories() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def available_schemes() -> list[str]:
    """URL schemes with a registered backend."""
    return sorted(_factories())


def create_backend(url: str, options: BackendOptions) -> Backend:
    """Build (not open) the backend for ``url``, completed with the derived lease and trace stores when
    the factory's object lacks them (see the module docstring).

    Raises:
        UnknownBackendError: no backend registered for the scheme, its factory failed to load, or its
            object lacks a method of the queue or state store.
    """
    scheme = urlsplit(url).scheme or url.split(":", 1)[0]
    eps = _factories()
    ep = eps.get(scheme)
    if ep is None:
        hint = did_you_mean(scheme, list(eps))
        raise UnknownBackendError(
            f"no backend for '{scheme}://' (known: {', '.join(sorted(eps)) or 'none'})" + (f"; {hint}" if hint else "")
        )
    try:
        factory: Callable[[str, BackendOptions], object] = ep.load()
    except Exception as exc:  # a broken plug-in: one clear error, not a traceback
        raise UnknownBackendError(f"the '{scheme}' backend ({ep.value}) failed to load: "
                                  f"{type(exc).__name__}: {exc}") from exc
    return complete_backend(factory(url, options), options.clock)


async def open_backend(url: str, options: BackendOptions) -> Backend:
    """Build and open the backend for ``url``."""
    backend = create_backend(url, options)
    await backend.open()
    return backend
