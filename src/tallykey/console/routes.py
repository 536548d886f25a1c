"""Every console page, under `/console`. Mounted by `tallykey.server.app.build_api`."""

from __future__ import annotations

from fastapi import APIRouter

from tallykey.console import (
    pages_admin,
    pages_auth,
    pages_decoys,
    pages_governance,
    pages_identities,
    pages_people,
    pages_plans,
    pages_tokens,
    pages_webhooks,
    pages_workspaces,
)
from tallykey.console.web import PREFIX, STATIC_DIR, STATIC_PATH, ConsoleRoute

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)
router.include_router(pages_auth.router)
router.include_router(pages_tokens.router)
router.include_router(pages_admin.router)
router.include_router(pages_workspaces.router)
router.include_router(pages_decoys.router)
router.include_router(pages_people.router)
router.include_router(pages_governance.router)
router.include_router(pages_webhooks.router)
router.include_router(pages_identities.router)
router.include_router(pages_plans.router)

__all__ = ["STATIC_DIR", "STATIC_PATH", "router"]
