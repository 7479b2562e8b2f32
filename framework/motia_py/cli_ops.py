"""Operator commands: ``emit``, ``state``, ``dlq``, ``cron``; they work against the configured backend
whether workers run or not."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from .backends.base import Backend
from .cli import EXIT_FAIL, backend_option, echo_json, fail, handle_errors, project_option, run_async, settings_from
from .errors import MotiaError
from .runtime import backend_for
from .suggest import did_you_mean


async def _with_backend(settings: Any, fn: Any) -> Any:
    backend: Backend = backend_for(settings)
    await backend.open()
    try:
        return await fn(backend)
    finally:
        await backend.close()


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def _json_lines(file: Path | str) -> Iterator[Any]:
    try:
        stream = sys.stdin if str(file) == "-" else open(file, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise MotiaError(f"cannot read {file}: {exc.strerror or exc}") from exc
    try:
        for n, line in enumerate(stream, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise MotiaError(f"{file}:{n}: not JSON: {exc.msg}") from exc
    finally:
        if stream is not sys.stdin:
            stream.close()


def register(cli: click.Group) -> None:
    """Add the operator commands to the ``motia-py`` group."""

    @cli.command()
    @click.argument("topic")
    @click.option("--data", default=None, help="The event data as JSON.")
    @click.option("--file", "file", default=None, help="One event per JSON line of FILE ('-' = stdin).")
    @click.option("--group", "group", default=None, help="messageGroupId (FIFO steps).")
    @click.option("--delay", default=None, type=float, help="Seconds before delivery.")
    @backend_option
    @project_option
    @handle_errors
    def emit(topic: str, data: str | None, file: str | None, group: str | None, delay: float | None,
             backend_url: str | None, project: Path) -> None:
        """Enqueue an event on TOPIC as if it came from outside; print its trace id."""
        from .router import Router
        from .runtime import load_project, require_valid

        if (data is None) == (file is None):
            fail("give exactly one of --data JSON or --file F", 2)
        settings = settings_from(project, backend_url=backend_url)
        router_project, findings = load_project(settings)
        require_valid(router_project, findings)  # a broken subscriber here would silently miss its events

        async def go(backend: Backend) -> None:
            router = Router(router_project, backend)
            router.check_external_topic(topic)
            if data is not None:
                try:
                    payloads = [json.loads(data)]
                except json.JSONDecodeError as exc:
                    raise MotiaError(f"--data is not JSON: {exc.msg}") from exc
            else:
                payloads = list(_json_lines(file or "-"))
            for p in payloads:
                click.echo(await router.emit(topic, p, message_group_id=group, delay_s=delay or 0.0))

        run_async(_with_backend(settings, go))

    @cli.group()
    def state() -> None:
        """Read and change state (values are JSON)."""

    @state.command("get")
    @click.argument("namespace")
    @click.argument("group")
    @click.argument("key")
    @backend_option
    @project_option
    @handle_errors
    def state_get(namespace: str, group: str, key: str, backend_url: str | None, project: Path) -> None:
        """Print the value at NAMESPACE GROUP KEY as JSON (exit 1 when absent)."""
        raw = run_async(_with_backend(settings_from(project, backend_url=backend_url),
                                      lambda b: b.state_get(namespace, group, key)))
        if raw is None:
            fail(f"no value at {namespace} / {group} / {key}")
        echo_json(json.loads(raw))

    @state.command("list")
    @click.argument("namespace")
    @click.argument("group", required=False)
    @backend_option
    @project_option
    @handle_errors
    def state_list(namespace: str, group: str | None, backend_url: str | None, project: Path) -> None:
        """Print {key: value} of a GROUP, or {group: {key: value}} of a whole NAMESPACE."""

        async def go(b: Backend) -> Any:
            if group is not None:
                return {k: json.loads(v) for k, v in (await b.state_items(namespace, group)).items()}
            return {g: {k: json.loads(v) for k, v in (await b.state_items(namespace, g)).items()}
                    for g in await b.state_groups(namespace)}

        echo_json(run_async(_with_backend(settings_from(project, backend_url=backend_url), go)))

    @state.command("set")
    @click.argument("namespace")
    @click.argument("group")
    @click.argument("key")
    @click.argument("value")
    @backend_option
    @project_option
    @handle_errors
    def state_set(namespace: str, group: str, key: str, value: str, backend_url: str | None,
                  project: Path) -> None:
        """Store VALUE (JSON) at NAMESPACE GROUP KEY."""
        from .state import dumps

        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise MotiaError(f"VALUE is not JSON: {exc.msg} (quote strings: '\"text\"')") from exc
        run_async(_with_backend(settings_from(project, backend_url=backend_url),
                                lambda b: b.state_set(namespace, group, key, dumps(parsed))))

    @state.command("delete")
    @click.argument("namespace")
    @click.argument("group")
    @click.argument("key")
    @backend_option
    @project_option
    @handle_errors
    def state_delete(namespace: str, group: str, key: str, backend_url: str | None, project: Path) -> None:
        """Delete NAMESPACE GROUP KEY (exit 1 when absent)."""
        if not run_async(_with_backend(settings_from(project, backend_url=backend_url),
                                       lambda b: b.state_delete(namespace, group, key))):
            fail(f"no value at {namespace} / {group} / {key}")

    @cli.command()
    @click.argument("target", metavar="ID|list")
    @click.option("--step", default=None, help="list: only traces that ran this step.")
    @click.option("--status", type=click.Choice(["ok", "retried", "failed"]), default=None,
                  help="list: only traces with this status.")
    @click.option("--limit", default=20, show_default=True, help="list: how many traces.")
    @click.option("--json", "as_json", is_flag=True, help="JSON on stdout.")
    @backend_option
    @project_option
    @handle_errors
    def trace(target: str, step: str | None, status: str | None, limit: int, as_json: bool,
              backend_url: str | None, project: Path) -> None:
        """Show one trace as a tree (which event caused which step run), or `trace list` recent traces."""
        from .tracing import render_tree, summarize

        settings = settings_from(project, backend_url=backend_url)

        async def listing(b: Backend) -> list[dict[str, Any]]:
            out = []
            for tid in await b.traces_recent(max(limit * 10, 200)):
                runs = [json.loads(r) for r in await b.traces_get(tid)]
                summary = summarize(tid, runs)
                if (step is None or step in summary["steps"]) and (status is None or summary["status"] == status):
                    out.append(summary)
                if len(out) >= limit:
                    break
            return out

        if target == "list":
            rows = run_async(_with_backend(settings, listing))
            if as_json:
                echo_json(rows)
                return
            if not rows:
                click.echo("no traces recorded", err=True)
            for r in rows:
                colour = {"ok": "green", "retried": "yellow", "failed": "red"}[r["status"]]
                click.echo(f"{r['trace_id']}  {_iso(r['started_at'])}  {click.style(r['status'], fg=colour):<7}  "
                           f"{r['entry']}  {r['runs']} run(s) {r['duration_ms']:.1f} ms  {', '.join(r['steps'])}")
            return

        async def one(b: Backend) -> list[dict[str, Any]]:
            return [json.loads(r) for r in await b.traces_get(target)]

        runs = run_async(_with_backend(settings, one))
        if not runs:
            fail(f"no trace '{target}' (traces are kept {settings.traces_max_age_s:g} s, "
                 f"at most {settings.traces_max_count})")
        if as_json:
            from .tracing import build_tree

            echo_json({"trace_id": target, "summary": summarize(target, runs), "tree": build_tree(runs)})
            return
        click.echo(render_tree(runs))

    @cli.group()
    def cron() -> None:
        """Cron steps: list them, or fire one now."""

    @cron.command("list")
    @click.option("--json", "as_json", is_flag=True, help="One JSON array on stdout.")
    @backend_option
    @project_option
    @handle_errors
    def cron_list(as_json: bool, backend_url: str | None, project: Path) -> None:
        """Each cron step: expression in words, next fire time, last run and its outcome."""
        from .cron import describe, next_fire
        from .discovery import discover
        from .meta_keys import cron_last as cron_last_key

        settings = settings_from(project, backend_url=backend_url)
        proj = discover(settings)
        crons = [s for s in proj.steps if s.cron is not None]

        async def go(b: Backend) -> list[dict[str, Any]]:
            now = datetime.now(UTC)
            rows = []
            for s in crons:
                assert s.cron is not None
                raw = await b.meta_get(cron_last_key(s.name))
                last = json.loads(raw) if raw else None
                rows.append({"name": s.name, "cron": s.cron.expression, "timezone": s.cron.timezone,
                             "every": describe(s.cron), "next": next_fire(s.cron, now).isoformat(),
                             "overlap": s.cron_policy.overlap.value, "missed": s.cron_policy.missed.value,
                             "last_run": last})
            return rows

        rows = run_async(_with_backend(settings, go))
        if as_json:
            echo_json(rows)
            return
        if not rows:
            click.echo("no cron steps", err=True)
        for r in rows:
            last = r["last_run"]
            last_s = f"last {last['scheduled_at']} {last['outcome']}" if last else "never ran"
            click.echo(f"{r['name']}  '{r['cron']}' ({r['every']})  next {r['next']}  {last_s}")

    @cron.command("run")
    @click.argument("name")
    @backend_option
    @project_option
    @handle_errors
    def cron_run(name: str, backend_url: str | None, project: Path) -> None:
        """Fire cron step NAME now, through its queue (a running worker handles it); print the trace id."""
        from .discovery import discover
        from .router import Router

        settings = settings_from(project, backend_url=backend_url)
        proj = discover(settings)
        spec = proj.step(name)
        if spec is None or spec.cron is None:
            crons = [s.name for s in proj.steps if s.cron is not None]
            hint = did_you_mean(name, crons)
            fail(f"no cron step '{name}'" + (f"; {hint}" if hint else f" (cron steps: {', '.join(crons) or 'none'})"))

        async def go(b: Backend) -> str:
            return await Router(proj, b).fire_cron(name, datetime.now(UTC))

        click.echo(run_async(_with_backend(settings, go)))

    @cli.group()
    def dlq() -> None:
        """Dead letters: list, show, replay, purge."""

    @dlq.command("list")
    @click.option("--json", "as_json", is_flag=True, help="One JSON array on stdout.")
    @click.option("--limit", default=100, show_default=True)
    @backend_option
    @project_option
    @handle_errors
    def dlq_list(as_json: bool, limit: int, backend_url: str | None, project: Path) -> None:
        """List dead letters, newest first."""
        dead = run_async(_with_backend(settings_from(project, backend_url=backend_url),
                                       lambda b: b.dlq_list(limit)))
        if as_json:
            echo_json([d.to_json() for d in dead])
            return
        if not dead:
            click.echo("the dead-letter queue is empty", err=True)
        for d in dead:
            click.echo(f"{d.id}  {_iso(d.failed_at)}  {d.step}  {d.envelope.topic}  attempts={d.attempts}  {d.error}")

    @dlq.command("show")
    @click.argument("dead_id")
    @backend_option
    @project_option
    @handle_errors
    def dlq_show(dead_id: str, backend_url: str | None, project: Path) -> None:
        """Print one dead letter as JSON, traceback included."""
        d = run_async(_with_backend(settings_from(project, backend_url=backend_url), lambda b: b.dlq_get(dead_id)))
        if d is None:
            fail(f"no dead letter '{dead_id}'")
        echo_json(d.to_json())

    def _ids_or_all(backend: Backend, dead_id: str | None, all_: bool) -> Any:
        async def ids() -> list[str]:
            if all_:
                return [d.id for d in await backend.dlq_list(1_000_000)]
            return [dead_id] if dead_id else []

        return ids()

    @dlq.command("replay")
    @click.argument("dead_id", required=False)
    @click.option("--all", "all_", is_flag=True, help="Replay every dead letter.")
    @backend_option
    @project_option
    @handle_errors
    def dlq_replay(dead_id: str | None, all_: bool, backend_url: str | None, project: Path) -> None:
        """Put a dead letter (or --all) back on its queue with fresh attempts."""
        if (dead_id is None) == (not all_):
            fail("give a dead-letter ID or --all", 2)

        async def go(b: Backend) -> tuple[int, int]:
            ids = await _ids_or_all(b, dead_id, all_)
            done = sum([1 for i in ids if await b.dlq_replay(i)])
            return done, len(ids)

        done, _ = run_async(_with_backend(settings_from(project, backend_url=backend_url), go))
        click.echo(f"replayed {done} dead letter(s)", err=True)
        if dead_id and not done:
            fail(f"no dead letter '{dead_id}'", EXIT_FAIL)

    @dlq.command("purge")
    @click.argument("dead_id", required=False)
    @click.option("--all", "all_", is_flag=True, help="Delete every dead letter.")
    @backend_option
    @project_option
    @handle_errors
    def dlq_purge(dead_id: str | None, all_: bool, backend_url: str | None, project: Path) -> None:
        """Delete a dead letter (or --all)."""
        if (dead_id is None) == (not all_):
            fail("give a dead-letter ID or --all", 2)

        async def go(b: Backend) -> int:
            ids = await _ids_or_all(b, dead_id, all_)
            return sum([1 for i in ids if await b.dlq_purge(i)])

        done = run_async(_with_backend(settings_from(project, backend_url=backend_url), go))
        click.echo(f"purged {done} dead letter(s)", err=True)
        if dead_id and not done:
            fail(f"no dead letter '{dead_id}'", EXIT_FAIL)
