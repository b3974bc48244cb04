"""A GraphQL endpoint and a list+detail pair, for a :class:`tests.support.servers.TestServer`.

``FakeGraphQL`` answers POSTed ``{"query", "variables"}`` bodies with cursor pages in two
shapes, chosen by the request path:

    .../graphql       GitHub v4: ``data.repository.issues {nodes, pageInfo}``
    .../graphql.json  Shopify Admin: ``data.orders {edges [{cursor, node}], pageInfo}``

``variables.first`` is the page size and ``variables.after`` the opaque cursor of the last item
of the previous page. ``errors`` (a list) makes every answer a 200 with that ``errors`` array.

``FakeDetailAPI`` serves ``/orders`` (summaries) and ``/orders/<id>`` (``{"order": {...}}``),
counting detail requests per id; ``fail_detail`` makes chosen ids answer an error.
"""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

from tests.support.servers import Reply, Request


def _cursor(index: int) -> str:
    return base64.b64encode(f"cursor:{index}".encode()).decode()


def _index(cursor: str) -> int:
    return int(base64.b64decode(cursor).decode().removeprefix("cursor:"))


class FakeGraphQL:
    """The handler; edit ``nodes`` (a list of dicts, each with an ``id``) under ``lock``."""

    def __init__(self, count: int = 25) -> None:
        self.lock = threading.Lock()
        self.nodes: list[dict[str, Any]] = [
            {"id": f"I_{i}", "number": i, "title": f"issue {i}", "state": "OPEN"}
            for i in range(1, count + 1)
        ]
        self.errors: list[dict[str, Any]] | None = None
        self.bodies: list[dict[str, Any]] = []
        """Every request body received, decoded."""

    def __call__(self, req: Request) -> Reply:
        if req.method != "POST":
            return Reply(405, {"message": "GraphQL needs POST"})
        if not req.headers.get("content-type", "").startswith("application/json"):
            return Reply(415, {"message": "expected application/json"})
        body = json.loads(req.body)
        with self.lock:
            self.bodies.append(body)
            errors = self.errors
            nodes = [dict(n) for n in self.nodes]
        if set(body) != {"query", "variables"} or not isinstance(body["query"], str):
            return Reply(400, {"errors": [{"message": f"bad request body keys {sorted(body)}"}]})
        if errors:
            return Reply(200, {"data": None, "errors": errors})
        variables = body["variables"] or {}
        size = int(variables.get("first") or 10)
        after = variables.get("after")
        start = 0 if after is None else _index(after) + 1
        chunk = nodes[start : start + size]
        last = start + len(chunk) - 1
        page_info = {
            "hasNextPage": start + size < len(nodes),
            "endCursor": _cursor(last) if chunk else None,
        }
        if req.path.endswith(".json"):
            edges = [{"cursor": _cursor(start + i), "node": n} for i, n in enumerate(chunk)]
            return Reply(200, {"data": {"orders": {"edges": edges, "pageInfo": page_info}}})
        issues = {"nodes": chunk, "pageInfo": page_info}
        return Reply(200, {"data": {"repository": {"issues": issues}}})


class FakeDetailAPI:
    """A list of order summaries and one detail URL per order."""

    def __init__(self, count: int = 5) -> None:
        self.lock = threading.Lock()
        self.orders: dict[int, dict[str, Any]] = {
            i: {"id": i, "updated_at": f"2024-05-01T00:00:0{i % 10}Z", "total": 10 * i, "note": ""}
            for i in range(1, count + 1)
        }
        self.detail_requests: dict[int, int] = {}
        self.fail_detail: dict[int, Reply] = {}

    def summary(self, order: dict[str, Any]) -> dict[str, Any]:
        return {"id": order["id"], "updated_at": order["updated_at"]}

    def __call__(self, req: Request) -> Reply:
        with self.lock:
            if req.path == "/orders":
                return Reply(200, {"orders": [self.summary(o) for o in self.orders.values()]})
            head, _, tail = req.path.rpartition("/")
            if head != "/orders" or not tail.isdigit() or int(tail) not in self.orders:
                return Reply(404, {"error": f"no order at {req.path}"})
            number = int(tail)
            self.detail_requests[number] = self.detail_requests.get(number, 0) + 1
            failure = self.fail_detail.get(number)
            if failure is not None:
                return failure
            return Reply(200, {"order": dict(self.orders[number])})
