"""The greetings stream: browsers subscribe to it; its items are checked against this schema."""

from motia import StreamConfig

config = StreamConfig(
    name="greetings",
    schema={"type": "object", "required": ["name", "message"],
            "properties": {"name": {"type": "string"}, "message": {"type": "string"}}},
    base_config={"storageType": "default"},
)
