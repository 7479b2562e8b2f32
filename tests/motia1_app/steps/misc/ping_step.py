"""A step built with step(config, handler), three triggers: POST /ping queues a ping, the queue trigger
records it, and a nightly cron (7 fields: seconds first, a year last) clears the record."""

from typing import Any

from motia import FlowContext, cron, stateManager, step


def ping(input_data: Any, ctx: FlowContext[Any]) -> Any:
    if ctx.is_api():
        ctx.enqueue({"topic": "ping", "data": {"from": input_data.body.get("from", "?")}})
        return {"status": 202, "body": {"queued": True}}
    if ctx.is_queue():
        stateManager.set("pings", "last", ctx.get_data())
        return None
    stateManager.delete("pings", "last")
    return None


config = step({
    "name": "Ping",
    "description": "Ping over HTTP, recorded from the queue, cleared nightly",
    "flows": ["misc"],
    "triggers": [
        {"type": "http", "method": "POST", "path": "/ping"},
        {"type": "queue", "topic": "ping", "config": {"maxRetries": 1}},
        cron("0 0 3 * * * *"),
    ],
    "enqueues": ["ping"],
}, ping)
