"""Find a backend by URL scheme through the ``motia_py.backends`` entry-point group.

The built-in backends are registered the same way (see ``pyproject.toml``, mirrored by :data:`BUILTIN` so
that their schemes are found without reading every distribution's metadata), so a separate package adds
a scheme by declaring an entry point; nothing here changes. An entry point names a factory
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
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from msgspec import Struct

from ..errors import UnknownBackendError
from ..suggest import did_you_mean
from ..types import Clock

if TYPE_CHECKING:
    from .stores import Backend

GROUP = "motia_py.backends"


class BackendOptions(Struct, frozen=True):
    """What a backend factory gets besides the URL."""

    root: Path
    clock: Clock | None = None
    prefix: str = "motia"


BUILTIN = {
    "memory": "motia_py.backends.memory:create_backend",
    "sqlite": "motia_py.backends.sqlite:create_backend",
    "redis": "motia_py.backends.redis:create_backend",
    "postgres": "motia_py.backends.postgres:create_backend",
    "postgresql": "motia_py.backends.postgres:create_backend",
}
"""The built-in backends' entry points, as ``pyproject.toml`` registers them: their schemes are found
without reading the installed distributions' metadata (importing ``importlib.metadata`` and scanning
every distribution costs a worker's boot tens of milliseconds). Other schemes go through the entry points."""


class _Builtin:
    """A built-in backend's entry point (``name``, ``value``, ``load()``) without ``importlib.metadata``."""

    def __init__(self, name: str, value: str) -> None:
        self.name, self.value = name, value

    def load(self) -> Any:
        """The factory the entry point names."""
        import importlib

        module, _, attr = self.value.partition(":")
        return getattr(importlib.import_module(module), attr)


def _factories() -> dict[str, Any]:
    from importlib.metadata import entry_points  # not at import: the commands that never open a backend skip it

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
    ep: Any = _Builtin(scheme, BUILTIN[scheme]) if scheme in BUILTIN else None
    if ep is None:
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
    from .compose import complete_backend  # not at import: validate reads BUILTIN without the stores

    return complete_backend(factory(url, options), options.clock)


async def open_backend(url: str, options: BackendOptions) -> Backend:
    """Build and open the backend for ``url``."""
    backend = create_backend(url, options)
    await backend.open()
    return backend
