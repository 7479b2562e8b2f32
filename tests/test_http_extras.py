"""Project-level HTTP conveniences against a real server: CORS on API steps only, global middleware, the
access log of dev."""

from __future__ import annotations

from pathlib import Path

import httpx

from motia_py.http import start_server
from motia_py.runtime import Runtime, backend_for, load_project
from motia_py.settings import load_settings
from motia_py.workbench import install_workbench

from .conftest import ProjectFactory

STEPS = {
    "steps/hello.step.py": """
        config = {"type": "api", "name": "Hello", "path": "/hello", "method": "POST", "emits": [], "flows": ["f"]}
        async def handler(req, ctx):
            return {"status": 200, "body": {"seen": req.get("seen", [])}}
    """,
    "webhooks/__init__.py": "",
    "webhooks/mw.py": """
        async def stamp(req, ctx, nxt):
            req["seen"] = [*req.get("seen", []), "global"]
            response = await nxt()
            response["headers"] = {**(response.get("headers") or {}), "x-global": "yes"}
            return response
    """,
}


async def serve(root: Path, dev: bool = False) -> tuple[Runtime, object, list[dict[str, object]]]:
    settings = load_settings(root, env={})
    project, _ = load_project(settings)
    logs: list[dict[str, object]] = []
    runtime = Runtime(project, backend_for(settings), log_sink=logs.append, cron=False)
    await runtime.start()
    server = await start_server(runtime.router, settings, dev=dev, port=0)
    install_workbench(server.app, runtime, settings, dev=True)
    return runtime, server, logs


async def test_cors_answers_allowed_origins_on_api_steps_and_never_on_admin_routes(
        make_project: ProjectFactory) -> None:
    root = make_project({**STEPS, "motia_py.toml": '[backend]\nurl = "memory://"\n[cors]\n'
                                                   'origins = ["https://app.example"]\ncredentials = true\n'})
    runtime, server, _ = await serve(root)
    base = f"http://127.0.0.1:{server.port}"  # type: ignore[attr-defined]
    try:
        async with httpx.AsyncClient(base_url=base) as http:
            pre = await http.options("/hello", headers={"origin": "https://app.example",
                                                        "access-control-request-method": "POST",
                                                        "access-control-request-headers": "content-type"})
            assert pre.status_code == 204
            assert pre.headers["access-control-allow-origin"] == "https://app.example"
            assert "POST" in pre.headers["access-control-allow-methods"]
            assert pre.headers["access-control-allow-credentials"] == "true"
            ok = await http.post("/hello", json={}, headers={"origin": "https://app.example"})
            assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://app.example"
            other = await http.post("/hello", json={}, headers={"origin": "https://evil.example"})
            assert "access-control-allow-origin" not in other.headers
            refused = await http.options("/hello", headers={"origin": "https://evil.example",
                                                            "access-control-request-method": "POST"})
            assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers
            admin = await http.get("/__workbench/api/flows", headers={"origin": "https://app.example"})
            assert "access-control-allow-origin" not in admin.headers
    finally:
        await server.stop()  # type: ignore[attr-defined]
        await runtime.stop()


async def test_without_cors_settings_no_cors_header_is_sent(make_project: ProjectFactory) -> None:
    root = make_project({**STEPS})
    runtime, server, _ = await serve(root)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:  # type: ignore[attr-defined]
            r = await http.post("/hello", json={}, headers={"origin": "https://app.example"})
            assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    finally:
        await server.stop()  # type: ignore[attr-defined]
        await runtime.stop()


async def test_global_middleware_runs_around_every_api_step_and_dev_logs_each_request(
        make_project: ProjectFactory) -> None:
    root = make_project({**STEPS, "motia_py.toml": '[backend]\nurl = "memory://"\n[server]\n'
                                                   'middleware = ["webhooks.mw:stamp"]\n'})
    runtime, server, logs = await serve(root, dev=True)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:  # type: ignore[attr-defined]
            r = await http.post("/hello", json={})
        assert r.status_code == 200 and r.json() == {"seen": ["global"]} and r.headers["x-global"] == "yes"
        assert any(line.get("msg", "").startswith("POST /hello 200 ") for line in logs)  # type: ignore[union-attr]
    finally:
        await server.stop()  # type: ignore[attr-defined]
        await runtime.stop()
