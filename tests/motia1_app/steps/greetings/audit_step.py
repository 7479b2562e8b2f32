"""Counts greetings per name (an async handler: the helpers are awaited)."""

from typing import Any

from motia import FlowContext, queue, stateManager


async def handler(input: dict[str, Any], ctx: FlowContext[Any]) -> None:
    result = await stateManager.update("audit", input["name"], [{"type": "increment", "path": "count", "by": 1},
                                                                {"type": "set", "path": "topic",
                                                                 "value": ctx.trigger.topic}])
    ctx.logger.info("audited", {"count": result["new_value"]["count"]})


config = {
    "name": "AuditGreeting",
    "description": "Count greetings per name",
    "flows": ["greetings"],
    "triggers": [queue("greeting.created")],
    "enqueues": [],
}
