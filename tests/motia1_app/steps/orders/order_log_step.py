"""Two queue triggers on one step: ctx.trigger.topic tells them apart."""

from typing import Any

from motia import FlowContext, queue, stateManager

config = {
    "name": "OrderLog",
    "description": "Keep a log of premium and shipped orders",
    "flows": ["orders"],
    "triggers": [queue("order.premium"), queue("order.shipped")],
    "enqueues": [],
}


async def handler(input: dict[str, Any], ctx: FlowContext[Any]) -> None:
    await stateManager.set("log", f"{ctx.trigger.topic}:{input['id']}", {**input, "index": ctx.trigger.index})
