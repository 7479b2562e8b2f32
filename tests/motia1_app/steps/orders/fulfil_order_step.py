"""Fulfils orders one at a time per customer (a FIFO queue); a flaky order fails once and is retried."""


from motia import QueueConfig, enqueue, queue, stateManager

from .models import OrderIn

config = {
    "name": "FulfilOrder",
    "description": "Fulfil orders in order per customer",
    "flows": ["orders"],
    "triggers": [
        queue("order.created", input=OrderIn,
              config=QueueConfig(type="fifo", max_retries=2, visibility_timeout=30, backoff_type="fixed",
                                 backoff_delay_ms=10)),
    ],
    "enqueues": ["order.shipped"],
}


def handler(order: OrderIn) -> None:
    tries = stateManager.update("tries", order.id, [{"type": "increment", "path": "count", "by": 1}])
    if order.note == "flaky" and tries["new_value"]["count"] == 1:
        raise RuntimeError("the warehouse did not answer")
    done = stateManager.get("fulfilled", order.customer) or {"ids": []}
    stateManager.set("fulfilled", order.customer, {"ids": [*done["ids"], order.id]})
    enqueue({"topic": "order.shipped", "data": {"id": order.id, "customer": order.customer}})
