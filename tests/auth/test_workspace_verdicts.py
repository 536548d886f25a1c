"""Per-workspace verdicts (SPEC §11, security review #15 item 2): a personal token's
permissions are checked per workspace, never flattened. The member below may read only
in `sales` and write only in `ops`: their token must never write in `sales` or read in
`ops`, whichever way the request is put."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from tallykey.actor import Actor
from tallykey.auth.middleware import TallykeyMiddleware
from tallykey.auth.verifier import Verifier
from tallykey.clock import FrozenClock
from tallykey.runtime import Runtime
from tallykey.tokens.requests import TokenDraft

from ..conftest import World

IP = "198.51.100.7"
READ, WRITE = "employees:read", "employees:write"


@pytest.fixture
def verifier(rt: Runtime, clock: FrozenClock) -> Iterator[Verifier]:
    made = Verifier(settings=rt.settings, database=rt.database, clock=clock, background=False)
    yield made
    made.close()


@pytest.fixture
def split_member(world: World) -> str:
    """The member reads only in sales and writes only in ops; a personal token of theirs
    with both scopes, pinned to no workspace."""
    world.rt.accounts.update_user(Actor.operator(world.acme_id), world.member.id,
                                  grants={world.sales.id: [READ], world.ops.id: [WRITE]})
    return world.rt.tokens.issue(world.as_member, TokenDraft(
        name="split", expires_in_days=30, scopes=[READ, WRITE])).value


def test_without_a_workspace_a_scope_held_in_one_workspace_does_not_pass(
        world: World, verifier: Verifier, split_member: str) -> None:
    header = f"Bearer {split_member}"
    for scope in (WRITE, READ):
        verdict = verifier.verify(header, IP, [scope])
        assert not verdict.allowed and verdict.status == 403, scope
        assert verdict.error == "insufficient_scope"
        assert "Tallykey-Workspace" in verdict.hint
    plain = verifier.verify(header, IP)
    assert plain.allowed and plain.scopes == frozenset()
    assert plain.workspaces == {world.sales.id: {READ}, world.ops.id: {WRITE}}


def test_each_workspace_answers_for_itself(world: World, verifier: Verifier,
                                           split_member: str) -> None:
    header = f"Bearer {split_member}"
    assert verifier.verify(header, IP, [WRITE], workspace=world.sales.id).status == 403
    assert verifier.verify(header, IP, [READ], workspace="ops").status == 403
    write = verifier.verify(header, IP, [WRITE], workspace=world.ops.id)
    assert write.allowed and write.workspace == world.ops.id and write.scopes == {WRITE}
    assert write.scopes_text == WRITE
    read = verifier.verify(header, IP, [READ], workspace="sales")  # a slug works too
    assert read.allowed and read.workspace == world.sales.id and read.scopes == {READ}
    # answered from the cache the second time: same answers
    assert verifier.verify(header, IP, [WRITE], workspace="sales").status == 403
    assert verifier.verify(header, IP, [WRITE], workspace="ops").allowed


def test_a_workspace_the_token_cannot_see_is_refused(world: World, verifier: Verifier,
                                                    split_member: str) -> None:
    other = world.rt.accounts.create_workspace(world.globex_id, "main", "Main")
    for ref in (other.id, "main", "no-such-workspace"):
        verdict = verifier.verify(f"Bearer {split_member}", IP, workspace=ref)
        assert verdict.status == 403 and verdict.error == "workspace_not_allowed", ref


def test_a_pinned_token_sees_only_its_workspace(world: World, verifier: Verifier) -> None:
    token = world.rt.tokens.issue(world.as_admin, TokenDraft(
        name="pinned app", kind="application", expires_in_days=30, scopes=[READ, WRITE],
        workspace="ops")).value
    header = f"Bearer {token}"
    assert verifier.verify(header, IP, [WRITE]).allowed
    assert verifier.verify(header, IP, [WRITE], workspace="ops").allowed
    assert verifier.verify(header, IP, [READ], workspace="sales").status == 403
    assert verifier.verify(header, IP).workspaces == {world.ops.id: {READ, WRITE}}


def test_an_administrator_holds_every_scope_in_every_workspace(world: World,
                                                               verifier: Verifier) -> None:
    token = world.rt.tokens.issue(world.as_admin, TokenDraft(
        name="admin", expires_in_days=30, scopes=[READ, "tokens:manage"])).value
    header = f"Bearer {token}"
    assert verifier.verify(header, IP, ["tokens:manage"]).allowed
    assert verifier.verify(header, IP, [READ], workspace="sales").allowed
    assert verifier.verify(header, IP, [WRITE], workspace="sales").status == 403


def test_a_regrant_applies_per_workspace_at_once(world: World, verifier: Verifier,
                                                split_member: str) -> None:
    header = f"Bearer {split_member}"
    assert verifier.verify(header, IP, [WRITE], workspace="ops").allowed
    world.rt.accounts.update_user(Actor.operator(world.acme_id), world.member.id,
                                  grants={world.sales.id: [READ, WRITE]})
    verifier.sync()
    assert verifier.verify(header, IP, [WRITE], workspace="ops").status == 403
    assert verifier.verify(header, IP, [WRITE], workspace="sales").allowed
    assert verifier.verify(header, IP, [WRITE]).allowed  # sales is all it sees now


def test_the_embedded_middleware_takes_a_workspace_resolver(
        world: World, verifier: Verifier, split_member: str) -> None:
    async def employees(request: Request) -> JSONResponse:
        verdict = request.state.tallykey
        return JSONResponse({"workspace": verdict.workspace, "scopes": sorted(verdict.scopes)})

    inner = Starlette(routes=[Route("/{ws}/employees", employees, methods=["POST"]),
                              Route("/employees", employees, methods=["POST"])])
    # The middleware runs before routing: the resolver reads the path (or a header).
    app = TallykeyMiddleware(inner, verifier, required_scopes=[WRITE],
                             workspace=lambda request: request.url.path.split("/")[1]
                             if request.url.path.count("/") > 1
                             else request.headers.get("x-project"))
    headers = {"Authorization": f"Bearer {split_member}"}
    with TestClient(app, client=(IP, 50000)) as client:
        assert client.post("/ops/employees", headers=headers).json() == {
            "workspace": world.ops.id, "scopes": [WRITE]}
        refused = client.post("/sales/employees", headers=headers)
        assert refused.status_code == 403 and refused.json()["error"] == "insufficient_scope"
        assert client.post("/employees", headers=headers).status_code == 403
        assert client.post("/employees", headers={**headers, "x-project": "ops"}
                           ).status_code == 200


def test_the_fastapi_dependency_takes_a_workspace_resolver(
        world: World, verifier: Verifier, split_member: str) -> None:
    from fastapi import Depends, FastAPI

    from tallykey.auth.middleware import TallykeyAuth
    from tallykey.auth.verdict import Verdict

    api = FastAPI()
    can_read = TallykeyAuth(verifier, [READ],
                            workspace=lambda request: request.path_params.get("ws"))

    @api.get("/{ws}/employees")
    async def listing(ws: str, verdict: Verdict = Depends(can_read)) -> dict[str, object]:
        return {"workspace": verdict.workspace}

    headers = {"Authorization": f"Bearer {split_member}"}
    with TestClient(api, client=(IP, 50000)) as client:
        assert client.get("/sales/employees", headers=headers).json() == {
            "workspace": world.sales.id}
        refused = client.get("/ops/employees", headers=headers)
        assert refused.status_code == 403
        assert refused.json()["scope"] == READ
