"""An example platform with an API of its own, whose customers' tokens tallykey issues
and checks: a shop system where each customer (a tallykey account) has shops (tallykey
workspaces) with orders and invoices. Walked through in docs/platform.md.

Run it next to tallykey, on the same store and with the same scope catalog:

    export TALLYKEY_DATABASE_URL=postgresql://…  TALLYKEY_SCOPES_FILE=examples/shop_scopes.toml
    .venv/bin/uvicorn examples.shop_platform:app --port 9000
    curl -H "Authorization: Bearer tlk_eu1_…" http://127.0.0.1:9000/shops/north/orders

Permissions are per workspace: the shop in the path is the workspace the token's scopes
must be held in, so a clerk who may read orders in `north` and write them in `south`
can do exactly that and nothing more, whatever token they use.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel, Field

from tallykey import TallykeyAuth, TallykeyMiddleware, Verdict, Verifier

verifier = Verifier()
_SHOP_PATH = re.compile(r"^/shops/([^/]+)/")


def shop_in_path(request: Request) -> str | None:
    """The workspace a request is for: the shop named in its path (None elsewhere).
    Runs in the middleware, before routing, so it reads the path itself."""
    found = _SHOP_PATH.match(request.url.path)
    return found.group(1) if found else None


def shop_param(request: Request) -> str | None:
    """The same for the per-route dependency, which runs after routing."""
    return request.path_params.get("shop")


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    verifier.close()  # writes the last usage counts


shop_api = FastAPI(title="Shop API (an example platform protected by tallykey)",
                   lifespan=lifespan)
#: The platform's own data: orders per (account, shop). tallykey never sees it.
ORDERS: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)

ReadOrders = Annotated[Verdict, Depends(TallykeyAuth(verifier, ["orders:read"],
                                                     workspace=shop_param))]
WriteOrders = Annotated[Verdict, Depends(TallykeyAuth(verifier, ["orders:write"],
                                                      workspace=shop_param))]
ReadInvoices = Annotated[Verdict, Depends(TallykeyAuth(verifier, ["invoices:read"],
                                                       workspace=shop_param))]


class OrderIn(BaseModel):
    item: str = Field(min_length=1, max_length=200)
    quantity: int = Field(ge=1, le=10_000)


@shop_api.get("/whoami")
def whoami(request: Request) -> dict[str, Any]:
    """Any valid token: who it is and what it may do where."""
    verdict: Verdict = request.state.tallykey
    return {"account": verdict.account, "token": verdict.token_id, "kind": verdict.kind,
            "workspaces": {ws: sorted(held) for ws, held in verdict.workspaces.items()}}


@shop_api.get("/shops/{shop}/orders")
def list_orders(shop: str, verdict: ReadOrders) -> dict[str, Any]:
    assert verdict.account is not None
    orders = ORDERS[(verdict.account, shop)]
    return {"shop": shop, "workspace_id": verdict.workspace, "orders": orders}


@shop_api.post("/shops/{shop}/orders", status_code=201)
def create_order(shop: str, order: OrderIn, verdict: WriteOrders) -> dict[str, Any]:
    assert verdict.account is not None
    made = {"id": len(ORDERS[(verdict.account, shop)]) + 1, **order.model_dump(),
            "by_token": verdict.token_id}
    ORDERS[(verdict.account, shop)].append(made)
    return made


@shop_api.get("/shops/{shop}/invoices")
def list_invoices(shop: str, verdict: ReadInvoices) -> dict[str, Any]:
    return {"shop": shop, "invoices": []}


#: Every request needs a valid token; one for a shop needs access to that shop.
app = TallykeyMiddleware(shop_api, verifier=verifier, workspace=shop_in_path)
