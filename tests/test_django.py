"""Django: a minimal Django project in tmp_path (SQLite) whose view enqueues after the transaction commits,
served by ``manage.py runserver``, and ``manage.py motia_worker`` processing the event with the ORM."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from motia_py.client import Client

from .processes import stop, wait_until

pytestmark = pytest.mark.slow

SITE = {
    "manage.py": """
        import os, sys
        if __name__ == "__main__":
            os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop_site.settings")
            from django.core.management import execute_from_command_line
            execute_from_command_line(sys.argv)
    """,
    "shop_site/__init__.py": "",
    "shop_site/settings.py": """
        from pathlib import Path
        BASE_DIR = Path(__file__).resolve().parent.parent
        SECRET_KEY = "not-a-secret"
        DEBUG = False
        ALLOWED_HOSTS = ["127.0.0.1"]
        INSTALLED_APPS = ["motia_py.django", "shop"]
        MIDDLEWARE = []
        ROOT_URLCONF = "shop_site.urls"
        DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}
        DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
        USE_TZ = True
        MOTIA_PY_PROJECT = BASE_DIR.parent / "motia"
    """,
    "shop_site/urls.py": """
        from django.urls import path
        from shop.views import place_order
        urlpatterns = [path("orders/", place_order)]
    """,
    "shop/__init__.py": "",
    "shop/models.py": """
        from django.db import models
        class Order(models.Model):
            item = models.CharField(max_length=50)
            status = models.CharField(max_length=20, default="new")
    """,
    "shop/views.py": """
        import json
        from django.db import transaction
        from django.http import JsonResponse
        from django.views.decorators.csrf import csrf_exempt
        from motia_py.django import emit_on_commit
        from .models import Order

        class Declined(Exception):
            pass

        @csrf_exempt
        def place_order(request):
            body = json.loads(request.body)
            try:
                with transaction.atomic():
                    order = Order.objects.create(item=body["item"])
                    trace_id = emit_on_commit("order.placed", {"id": order.pk})
                    if body.get("decline"):
                        raise Declined("payment declined")
            except Declined as exc:
                return JsonResponse({"error": str(exc)}, status=402)
            return JsonResponse({"id": order.pk, "traceId": trace_id}, status=201)
    """,
}

MOTIA = {
    "motia_py.toml": '[backend]\nurl = "sqlite:///.motia/motia.db"\n[worker]\ngrace_period = 5\n',
    "flows/orders.toml": 'entry_topics = ["order.placed"]\n',
    "steps/fulfil.step.py": """
        config = {"type": "event", "name": "Fulfil", "subscribes": ["order.placed"], "emits": [], "flows": ["orders"],
                  "input": {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}}}

        def handler(input, ctx):  # plain def: runs in a worker thread, where Django's ORM may be called
            from shop.models import Order  # here, not at the top: `motia-py validate` imports steps without Django

            Order.objects.filter(pk=input["id"]).update(status="fulfilled")
            ctx.logger.info("fulfilled", order=input["id"])
    """,
}


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def manage(site: Path, *args: str, log: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "MOTIA_PY_LOG_FORMAT": "json"}
    env.pop("MOTIA_PY_BACKEND_URL", None)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "manage.py", *args], cwd=site, env=env, text=True,
                                stdout=subprocess.DEVNULL, stderr=err)
    proc.log_path = log  # type: ignore[attr-defined]
    return proc


def orders(site: Path) -> list[tuple[int, str, str]]:
    with sqlite3.connect(site / "db.sqlite3") as db:
        return [tuple(row) for row in db.execute("SELECT id, item, status FROM shop_order ORDER BY id")]


def queued(motia: Path) -> dict[str, int]:
    async def read() -> dict[str, int]:
        client = Client.from_project(motia)
        try:
            await client.backend.open()
            return (await client.backend.stats()).per_step
        finally:
            await client.aclose()

    return asyncio.run(read())


def test_view_enqueues_after_commit_and_the_django_worker_processes_it(tmp_path: Path) -> None:
    site, motia = tmp_path / "site", tmp_path / "motia"
    write(site, SITE)
    write(motia, MOTIA)
    subprocess.run([sys.executable, "manage.py", "migrate", "--run-syncdb"], cwd=site, check=True,
                   capture_output=True, env={k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"})
    port = free_port()
    server = manage(site, "runserver", "--noreload", f"127.0.0.1:{port}", log=tmp_path / "runserver.log")
    base = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            try:
                return httpx.get(f"{base}/", timeout=5).status_code == 404
            except httpx.TransportError:
                return False

        wait_until(up, 30, "runserver", server)  # type: ignore[arg-type]
        placed = httpx.post(f"{base}/orders/", json={"item": "book"}, timeout=10)
        assert placed.status_code == 201, placed.text
        declined = httpx.post(f"{base}/orders/", json={"item": "pen", "decline": True}, timeout=10)
        assert declined.status_code == 402
    finally:
        stop(server)
    order_id = placed.json()["id"]
    assert orders(site) == [(order_id, "book", "new")]  # the declined order rolled back
    assert queued(motia) == {"Fulfil": 1}  # ... and so did its event: only the committed order's is queued
    worker = manage(site, "motia_worker", "--no-cron", log=tmp_path / "worker.log")
    try:
        wait_until(lambda: orders(site) == [(order_id, "book", "fulfilled")], 30, "the worker to fulfil the order",
                   worker)  # type: ignore[arg-type]
    finally:
        assert stop(worker) == 0
    logs = [json.loads(line) for line in (tmp_path / "worker.log").read_text().splitlines() if line.startswith("{")]
    fulfilled = [r for r in logs if r.get("msg") == "fulfilled"]
    assert [(r["order"], r["trace_id"]) for r in fulfilled] == [(order_id, placed.json()["traceId"])]
    assert not any(queued(motia).values())  # acknowledged: nothing left queued


def test_motia_py_imports_without_django_configured() -> None:
    code = ("import sys, motia_py, motia_py.django, motia_py.asgi; "
            "print(sorted(m for m in sys.modules if m == 'django' or m.startswith('django.')))")
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "[]"
