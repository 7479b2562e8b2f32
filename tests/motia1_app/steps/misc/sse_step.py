"""POST /events (form-encoded): answers with server-sent events, written while the handler runs."""

import asyncio
import json
from typing import Any
from urllib.parse import parse_qsl

from motia import FlowContext, MotiaHttpArgs, http

config = {
    "name": "Events",
    "description": "Stream items back as server-sent events",
    "flows": ["misc"],
    "triggers": [http("POST", "/events")],
    "enqueues": [],
}


async def handler(args: MotiaHttpArgs[Any], ctx: FlowContext[Any]) -> None:
    response = args.response
    await response.status(200)
    await response.headers({"content-type": "text/event-stream", "cache-control": "no-cache"})
    raw = b""
    async for chunk in args.request.request_body.stream:
        raw += chunk
    fields = dict(parse_qsl(raw.decode()))
    for i in range(int(fields.get("count", "3"))):
        response.writer.stream.write(f"event: item\ndata: {json.dumps({'i': i, 'word': fields.get('word')})}\n\n")
        await asyncio.sleep(0)
    response.writer.stream.write("event: done\ndata: {}\n\n")
    response.close()
