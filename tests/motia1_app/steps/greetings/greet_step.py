"""GET /greet?name=...: a greeting with the prefix from .env, kept in state; the audit step hears of it."""

import os
from typing import Any

from motia import ApiRequest, ApiResponse, enqueue, http, logger, stateManager

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
    stateManager.set("greetings", name, greeting)
    enqueue({"topic": "greeting.created", "data": greeting})
    logger.info("Greeting stored", {"name": name})
    return ApiResponse(status=200, body=greeting)
