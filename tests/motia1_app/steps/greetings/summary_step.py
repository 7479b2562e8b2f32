"""One step, two triggers: GET /greetings/summary answers at once, the cron keeps a summary in state."""

from typing import Any

from motia import ApiRequest, ApiResponse, FlowContext, Stream, cron, http, stateManager

greetings: Stream[dict[str, Any]] = Stream("greetings")

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
        latest = stateManager.get("summaries", "latest")  # what the cron trigger wrote last
        count = len(greetings.get_group("default"))
        streamed = len(stateManager.list("stream-events"))  # names the stream trigger has seen
        return ApiResponse(status=200, body={"count": count, "trigger": ctx.trigger.type, "latest": latest,
                                             "streamed": streamed})

    def on_tick() -> None:
        count = len(greetings.get_group("default"))
        stateManager.set("summaries", "latest", {"count": count, "expression": ctx.trigger.expression})

    return ctx.match({"http": on_request, "cron": on_tick})
