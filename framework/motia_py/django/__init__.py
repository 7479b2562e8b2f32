"""Django integration: enqueue from views once the database transaction commits, and run workers inside a
Django project (its settings configured, so handlers can use the ORM).

```python
# settings.py
INSTALLED_APPS = [..., "motia_py.django"]      # adds `python manage.py motia_worker`
MOTIA_PY_PROJECT = BASE_DIR / "motia"           # the motia-py project (steps/, motia_py.toml)

# views.py
from django.db import transaction
from motia_py.django import emit_on_commit

def place_order(request):
    with transaction.atomic():
        order = Order.objects.create(...)
        emit_on_commit("order.placed", {"id": order.pk})   # published after COMMIT; never on rollback
```

Nothing here imports Django until it is used, so ``motia_py`` itself never needs it.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from typing import Any

from ..client import Client
from ..context import encode_payload
from ..otel import detect
from ..router import Router
from ..runtime import backend_for, load_project, require_valid
from ..settings import Settings, load_settings

__all__ = ["emit_on_commit", "get_client", "project_settings", "run_worker"]


class _Shared:
    """The process's client (built on first use, like Django's own connections)."""

    lock = threading.Lock()
    client: Client | None = None
    router: Router | None = None
    warm = False  # the client's background loop exists (its first emit creates it: under the lock)


def project_settings(project: str | os.PathLike[str] | None = None, backend_url: str | None = None) -> Settings:
    """The motia-py project's settings: ``project`` or ``settings.MOTIA_PY_PROJECT`` (default: the current
    directory), the backend from ``backend_url`` or ``settings.MOTIA_PY_BACKEND_URL``, else the project's own."""
    from django.conf import settings

    project = project if project is not None else getattr(settings, "MOTIA_PY_PROJECT", ".")
    backend_url = backend_url or getattr(settings, "MOTIA_PY_BACKEND_URL", None)
    return load_settings(project, flags={"backend_url": backend_url})


def get_client() -> Client:
    """The process-wide :class:`motia_py.Client` for ``settings.MOTIA_PY_PROJECT`` (created on first use).

    Raises:
        GraphError: the project has validation errors (a broken subscriber would miss its events).
    """
    with _Shared.lock:
        if _Shared.client is None:
            settings = project_settings()
            project, findings = load_project(settings)
            require_valid(project, findings)
            _Shared.router = Router(project, backend_for(settings), otel=detect(settings.traces_otel))
            _Shared.client = Client(_Shared.router)
        return _Shared.client


def _emit(client: Client, topic: str, data: Any, kwargs: dict[str, Any]) -> str:
    if _Shared.warm:
        return client.emit_sync(topic, data, **kwargs)
    with _Shared.lock:  # two threads' first emits must not each start a loop for the one client
        trace_id = client.emit_sync(topic, data, **kwargs)
        _Shared.warm = True
    return trace_id


def emit_on_commit(topic: str, data: Any = None, *, using: str | None = None, message_group_id: str | None = None,
                   delay: float | None = None) -> str:
    """Publish an event once the current database transaction commits; return its trace id now.

    Outside a transaction (autocommit) the event is published at once. On rollback it is never published.
    The topic and the data are checked now, inside the transaction (so a mistake rolls it back), and the
    data is copied now: later changes to it do not travel.

    Args:
        topic: a topic some step subscribes to (or a flow lists in ``entry_topics``).
        data: the event data (JSON; a pydantic model is dumped).
        using: the database alias whose transaction to wait for (Django's ``on_commit(using=)``).
        message_group_id: the FIFO group, for ``fifo`` queues.
        delay: seconds before delivery.

    Returns:
        The trace id the event will carry (``motia-py trace ID`` finds its runs).

    Raises:
        UnknownTopicError: nothing would ever handle the topic.
        EmitSchemaError, PayloadTooLargeError: the data is not JSON or over the payload limit.
    """
    from django.db import transaction

    client = get_client()
    router = _Shared.router
    assert router is not None  # set with the client
    router.check_external_topic(topic)
    snapshot = json.loads(encode_payload(data, router.max_payload_bytes))
    trace_id = os.urandom(16).hex()  # a W3C trace id, known before the event exists
    kwargs = {"message_group_id": message_group_id, "delay": delay, "trace_id": trace_id}
    transaction.on_commit(lambda: _emit(client, topic, snapshot, kwargs), using=using)
    return trace_id


def run_worker(project: str | os.PathLike[str] | None = None, *, cron: bool = True, http: bool = False,
               backend_url: str | None = None) -> int:
    """Run the project's workers (and cron; and its API steps with ``http``) in this process until
    SIGINT/SIGTERM, as ``motia-py start --no-http`` would, with Django set up; return the exit code.

    Raises:
        MotiaError: the project is invalid or its backend cannot be reached.
    """
    from ..logs import configure_logging
    from ..serve import StartOptions, run

    settings = project_settings(project, backend_url)
    configure_logging(settings.log_format, settings.log_level)
    return asyncio.run(run(settings, StartOptions(workers=1, http=http, cron=cron)))
