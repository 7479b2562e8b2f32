"""A stream trigger: runs when an item of the greetings stream is created or changed (not deleted)."""

from typing import Any

from motia import FlowContext, StreamTriggerInput, stateManager, stream


def not_deleted(input: StreamTriggerInput[Any], ctx: FlowContext[Any]) -> bool:
    return input.event.type != "delete"


config = {
    "name": "OnGreeting",
    "description": "Count changes to the greetings stream",
    "flows": ["greetings"],
    "triggers": [stream("greetings", group_id="default", condition=not_deleted)],
    "enqueues": [],
}


def handler(input: StreamTriggerInput[Any], ctx: FlowContext[Any]) -> None:
    seen = stateManager.get("stream-events", input.id) or []
    stateManager.set("stream-events", input.id, [*seen, {"type": input.event.type, "stream": input.stream_name,
                                                         "message": input.event.data["message"]}])
