"""One step, two triggers: GET /greetings/summary answers at once, the cron keeps a summary in state."""

from typing import Any

from motia import ApiRequest, ApiResponse, FlowContext, cron, http, stateManager

config = {
    "name": "GreetingsSummary",
    "description": "Summarise greetings over HTTP, and every 2 seconds into state",
    "flows": ["greetings"],
    "triggers": [
        http("GET", "/greetings/summary"),
        cron("*/2 * * * * *"),
    ],
    "enqueues": [],
}


def handler(input_data: Any, ctx: FlowContext[Any]) -> Any:
    def on_request(request: ApiRequest[Any]) -> ApiResponse[dict[str, Any]]:
        greetings = stateManager.list("greetings")
        latest = stateManager.get("summaries", "latest")  # what the cron trigger wrote last
        return ApiResponse(status=200, body={"count": len(greetings), "trigger": ctx.trigger.type, "latest": latest})

    def on_tick() -> None:
        greetings = stateManager.list("greetings")
        stateManager.set("summaries", "latest", {"count": len(greetings), "expression": ctx.trigger.expression})

    return ctx.match({"http": on_request, "cron": on_tick})
