"""GET /greet?name=...: a greeting with the prefix from .env, written to the greetings stream (subscribed
browsers see it at once); the audit step hears of it through the queue."""

import os
from typing import Any

from motia import ApiRequest, ApiResponse, Stream, enqueue, http, logger

greetings: Stream[dict[str, Any]] = Stream("greetings")

config = {
    "name": "Greet",
    "description": "Greet someone and remember the greeting",
    "flows": ["greetings"],
    "triggers": [
        http("GET", "/greet", query_params=[{"name": "name", "description": "who to greet"}]),
    ],
    "enqueues": ["greeting.created"],
}


def handler(request: ApiRequest[Any]) -> ApiResponse[dict[str, Any]]:
    name = request.query_params.get("name") or "world"
    greeting = {"name": name, "message": f"{os.environ.get('GREETING_PREFIX', 'Hello')}, {name}!"}
    greetings.set("default", name, greeting)
    enqueue({"topic": "greeting.created", "data": greeting})
    logger.info("Greeting stored", {"name": name})
    return ApiResponse(status=200, body=greeting)
