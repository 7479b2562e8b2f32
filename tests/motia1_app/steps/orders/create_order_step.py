"""POST /orders: checked by middleware and the body schema, queued per customer (FIFO group)."""

from typing import Any

from motia import ApiResponse, FlowContext, MotiaHttpArgs, enqueue, http

from .models import OrderIn


async def require_key(request: MotiaHttpArgs[Any], ctx: FlowContext[Any], next_fn: Any) -> Any:
    if request.headers.get("x-api-key") != "secret":
        return {"status": 401, "body": {"error": "missing or wrong x-api-key"}}
    ctx.caller = "key-holder"
    response = await next_fn()
    response.headers["x-caller"] = ctx.caller
    return response


config = {
    "name": "CreateOrder",
    "description": "Accept an order",
    "flows": ["orders"],
    "triggers": [
        http("POST", "/orders", body_schema=OrderIn, middleware=[require_key],
             response_schema={201: {"type": "object", "required": ["id", "queued"]}}),
    ],
    "enqueues": [{"topic": "order.created", "label": "accepted"}],
}


async def handler(request: MotiaHttpArgs[Any], ctx: FlowContext[Any]) -> ApiResponse[dict[str, Any]]:
    order = request.body
    await enqueue({"topic": "order.created", "data": order, "messageGroupId": order["customer"]})
    return ApiResponse(status=201, body={"id": order["id"], "queued": True, "traceId": ctx.trace_id})
