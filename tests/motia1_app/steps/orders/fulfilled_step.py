"""GET /orders/:customer/fulfilled: the order ids fulfilled for a customer, in fulfilment order, and the
last notice the state trigger wrote."""

from typing import Any

from motia import ApiRequest, ApiResponse, http, stateManager

config = {
    "name": "FulfilledOrders",
    "description": "Orders fulfilled for one customer",
    "flows": ["orders"],
    "triggers": [http("GET", "/orders/:customer/fulfilled")],
    "enqueues": [],
}


def handler(request: ApiRequest[Any]) -> ApiResponse[dict[str, Any]]:
    customer = request.path_params["customer"]
    done = stateManager.get("fulfilled", customer)
    return ApiResponse(status=200, body={"ids": done["ids"] if done else [],
                                         "notice": stateManager.get("notices", customer)})
