"""The decoys page (administrators, SPEC §17): the account's decoy tokens and their last
trips — when, how often, from which address, with which user agent and path."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sqlalchemy import select

from tallykey.console.web import AdminDep, ConsoleRoute, RuntimeDep, render
from tallykey.monitor.decoys import recent_trips
from tallykey.tokens.models import DECOY, Token

router = APIRouter(route_class=ConsoleRoute)


@router.get("/decoys")
def decoys_page(request: Request, viewer: AdminDep, runtime: RuntimeDep) -> Response:
    account_id = viewer.actor.account_id
    with runtime.database.reading() as session:
        decoys = list(session.scalars(select(Token).where(
            Token.account_id == account_id, Token.kind == DECOY)
            .order_by(Token.created_at.desc(), Token.id)))
        trips = recent_trips(session, account_id)
    return render(request, "decoys.html", decoys=decoys, trips=trips,
                  now=runtime.clock.now())
