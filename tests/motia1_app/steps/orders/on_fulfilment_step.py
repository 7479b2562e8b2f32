"""A state trigger: when the fulfilled orders of a customer change, the customer is notified.
Writes to other groups of the namespace (this step's own included) are skipped by the condition."""

from typing import Any

from motia import FlowContext, StateTriggerInput, enqueue, state, stateManager

config = {
    "name": "OnFulfilment",
    "description": "Notify customers as their orders are fulfilled",
    "flows": ["orders"],
    "triggers": [state(condition=lambda input, ctx: input.group_id == "fulfilled")],
    "enqueues": ["customer.notified"],
}


def handler(input: StateTriggerInput[Any], ctx: FlowContext[Any]) -> None:
    before = len(input.old_value["ids"]) if input.old_value else 0
    stateManager.set("notices", input.item_id, {"orders": len(input.new_value["ids"]), "before": before})
    enqueue({"topic": "customer.notified", "data": {"customer": input.item_id}})
