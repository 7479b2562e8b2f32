"""multi_trigger_step: one function per trigger type."""

from typing import Any

from motia import ApiResponse, FlowContext, http, multi_trigger_step, queue


def on_http(request: Any, ctx: FlowContext[Any]) -> ApiResponse[Any]:
    ctx.enqueue({"topic": "builder.run", "data": {"n": int(request.query_params.get("n", "1"))}})
    return ApiResponse(status=200, body={"ok": True})


async def on_queue(data: dict[str, Any], ctx: FlowContext[Any]) -> None:
    await ctx.state.set("builder", "last", data)


config = multi_trigger_step({
    "name": "Builder",
    "description": "Built with multi_trigger_step",
    "flows": ["misc"],
    "triggers": [http("GET", "/builder"), queue("builder.run")],
    "enqueues": ["builder.run"],
}).on_http(on_http).on_queue(on_queue).handlers()
