"""Premium orders: from the queue when the amount is high, over HTTP when the user is verified.
Each trigger has its own condition; a delivery whose condition is false is skipped, not run."""

from typing import Any

from motia import ApiRequest, ApiResponse, FlowContext, enqueue, http, logger, queue


def is_high_value(input: Any, ctx: FlowContext[Any]) -> bool:
    return isinstance(input, dict) and input.get("amount", 0) > 1000


def is_verified(input: Any, ctx: FlowContext[Any]) -> bool:
    body = input.body if isinstance(input, ApiRequest) else None
    return bool(isinstance(body, dict) and body.get("user", {}).get("verified"))


config = {
    "name": "PremiumOrder",
    "description": "Flag premium orders",
    "flows": ["orders"],
    "triggers": [
        queue("order.created", condition=is_high_value),
        http("POST", "/orders/premium", condition=is_verified),
    ],
    "enqueues": [{"topic": "order.premium", "conditional": True}],
}


def handler(input_data: Any, ctx: FlowContext[Any]) -> Any:
    def on_order(order: dict[str, Any]) -> None:
        logger.info("premium order", {"id": order["id"], "topic": ctx.trigger.topic})
        enqueue({"topic": "order.premium", "data": {"id": order["id"], "via": "queue"}})

    def on_request(request: Any) -> ApiResponse[dict[str, Any]]:
        enqueue({"topic": "order.premium", "data": {"id": request.body["id"], "via": "http"}})
        return ApiResponse(status=200, body={"premium": True, "path": ctx.trigger.path})

    return ctx.match({"queue": on_order, "http": on_request})
