"""GET /env: variables the project's .env file sets."""

import os

from motia import ApiResponse, http

config = {
    "name": "EnvCheck",
    "description": "What .env set",
    "flows": ["misc"],
    "triggers": [http("GET", "/env")],
    "enqueues": [],
}


def handler(request: object) -> ApiResponse[dict[str, str]]:
    return ApiResponse(status=200, body={"prefix": os.environ.get("GREETING_PREFIX", "NOT_SET"),
                                         "app": os.environ.get("APP_NAME", "NOT_SET")})
