"""Stream types of Motia 1.0: ``StreamConfig`` (what a stream file exports as ``config``) and the inputs of
its hooks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel


class StreamConfig(dict[str, Any]):
    """A stream's config: ``name``, ``schema`` (a JSON schema or a pydantic model), ``base_config``
    (``{"storageType": "default"}``) and the ``on_join``/``on_leave`` hooks (accepted, not called).

    It is also the dict a stream file exports as ``config`` (``name``, ``schema``, ``baseConfig``)."""

    def __init__(self, name: str, description: str | None = None, schema: Any = None,
                 base_config: dict[str, Any] | None = None, on_join: Callable[..., Any] | None = None,
                 on_leave: Callable[..., Any] | None = None) -> None:
        super().__init__(name=name)
        if schema is not None:
            self["schema"] = schema
        if base_config is not None:
            self["baseConfig"] = base_config
        self.name = name
        self.description = description
        self.schema = schema
        self.base_config = base_config
        self.on_join = on_join
        self.on_leave = on_leave


class StreamSubscription(BaseModel):
    """A client's subscription: a group, or one item of it."""

    group_id: str
    id: str | None = None


class StreamAuthInput(BaseModel):
    """What a stream authentication hook gets."""

    headers: dict[str, str]
    path: str
    query_params: dict[str, list[str]]
    addr: str


class StreamAuthResult(BaseModel):
    """What a stream authentication hook answers."""

    authorized: bool
    context: Any = None
