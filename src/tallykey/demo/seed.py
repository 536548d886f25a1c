"""Seed the demo: an account in this region with two workspaces, an admin and a member
who sees fewer employees, a dozen employees, and a second tenant for isolation checks.

Idempotent: existing data is reused. The store keeps token secrets only hashed, so the
demo remembers the tokens it printed in its data dir (`demo_files.py`, demo-only): a
second run prints the same live tokens and never rotates them under a running demo; a
demo token it cannot find there (or that stopped working) is replaced by a new one.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from tallykey import demo_files as local
from tallykey.accounts.models import Account, User, Workspace
from tallykey.accounts.service import PolicyChanges
from tallykey.actor import Actor
from tallykey.demo.models import Employee
from tallykey.errors import NotFound, TokenFormatError
from tallykey.runtime import Runtime
from tallykey.tokens import format as token_format
from tallykey.tokens.models import Token, TokenSecret
from tallykey.tokens.requests import IssuedToken, TokenDraft

DEMO_TOKEN_DAYS = 30


@dataclass(frozen=True)
class DemoUser:
    email: str
    password: str
    role: str


ADMIN = DemoUser("admin@demo.example", "demo-admin-password", "admin")
MEMBER = DemoUser("member@demo.example", "demo-member-password", "member")
OTHER_ADMIN = DemoUser("admin@other.example", "other-admin-password", "admin")

WORKSPACES = (("hq", "Headquarters", "Europe/Madrid"), ("field", "Field Office", "UTC"))
EMPLOYEES = (
    ("hq", "Ada Lovelace", "CTO"), ("hq", "Grace Hopper", "Engineer"),
    ("hq", "Alan Turing", "Researcher"), ("hq", "Katherine Johnson", "Analyst"),
    ("hq", "Edsger Dijkstra", "Architect"), ("hq", "Barbara Liskov", "Engineer"),
    ("field", "Margaret Hamilton", "Field Lead"), ("field", "Linus Torvalds", "Technician"),
    ("field", "Radia Perlman", "Network Engineer"), ("field", "Ken Thompson", "Technician"),
    ("field", "Frances Allen", "Planner"), ("field", "Donald Knuth", "Writer"),
)


def seed(runtime: Runtime, base_url: str, *, data_dir: Path | None = None,
         retrievable: bool = False, register: bool = True) -> dict[str, Any]:
    """Seed (or reuse) the demo data; returns SPEC §9's JSON object.

    With `data_dir`, the printed tokens and the demo's URL are kept there (demo-only) and
    reused next time. With `retrievable` (the demo has its own key-encryption key), the
    demo account keeps application tokens retrievable. `register` records `base_url` as
    this region's local URL (only a demo that serves it should). One unit of work: an
    interrupted seed leaves nothing half made."""
    region = runtime.settings.region
    known = local.known_tokens(data_dir) if data_dir else {}
    with runtime.database.transaction():  # the whole demo lands, or none of it
        demo = _account(runtime, "demo", "Demo Company", region)
        operator = Actor.operator(demo.id)
        if retrievable and not demo.retrievable_application_tokens:
            runtime.accounts.update_policies(operator, PolicyChanges(
                retrievable_application_tokens=True))
        workspaces = {slug: _workspace(runtime, demo.id, slug, name, tz)
                      for slug, name, tz in WORKSPACES}
        admin = _user(runtime, operator, ADMIN, {})
        member = _user(runtime, operator, MEMBER, {workspaces["hq"].id: ["employees:read"]})
        _employees(runtime, demo.id, workspaces)
        admin_token = _demo_token(runtime, admin, "Demo admin token",
                                  list(runtime.catalog.names), known)
        member_token = _demo_token(runtime, member, "Demo member token", ["employees:read"],
                                   known)

        other = _account(runtime, "other", "Other Company", region)
        other_workspace = _workspace(runtime, other.id, "main", "Main", "UTC")
        other_admin = _user(runtime, Actor.operator(other.id), OTHER_ADMIN, {})
        _employees(runtime, other.id, {"hq": other_workspace, "field": other_workspace}, limit=2)
        other_token = _demo_token(runtime, other_admin, "Other admin token",
                                  list(runtime.catalog.names), known)
    if data_dir is not None:
        local.save_state(data_dir, base_url=base_url if register else None, region=region,
                         tokens={
            t.token.id: t.value for t in (admin_token, member_token, other_token)})
    return {
        "base_url": base_url,
        "region": region,
        "account": demo.slug,
        "admin": {"email": ADMIN.email, "password": ADMIN.password,
                  "token": admin_token.value},
        "member": {"email": MEMBER.email, "password": MEMBER.password,
                   "token": member_token.value},
        "other_account": {"account": other.slug, "admin": {
            "email": OTHER_ADMIN.email, "password": OTHER_ADMIN.password,
            "token": other_token.value}},
    }


def _account(runtime: Runtime, slug: str, name: str, region: str) -> Account:
    try:
        return runtime.accounts.find_account(slug)
    except NotFound:
        return runtime.accounts.create_account(slug, name, region)


def _workspace(runtime: Runtime, account_id: str, slug: str, name: str, tz: str) -> Workspace:
    with runtime.database.reading() as session:
        found = session.scalar(select(Workspace).where(Workspace.account_id == account_id,
                                                       Workspace.slug == slug))
    return found or runtime.accounts.create_workspace(account_id, slug, name, tz)


def _user(runtime: Runtime, operator: Actor, who: DemoUser,
          grants: dict[str, list[str]]) -> User:
    try:
        user = runtime.accounts.find_user(operator.account_id, who.email)
    except NotFound:
        return runtime.accounts.create_user(operator, who.email, role=who.role,
                                            password=who.password, grants=grants)
    if not user.active or user.role != who.role:
        user = runtime.accounts.update_user(operator, user.id, role=who.role, active=True)
    return user


def _employees(runtime: Runtime, account_id: str, workspaces: dict[str, Workspace],
               limit: int = len(EMPLOYEES)) -> None:
    with runtime.database.transaction() as session:
        if session.scalar(select(Employee.id).where(Employee.account_id == account_id)):
            return
        for slug, name, title in EMPLOYEES[:limit]:
            email = name.lower().replace(" ", ".") + "@employees.example"
            session.add(Employee(account_id=account_id, workspace_id=workspaces[slug].id,
                                 name=name, email=email, job_title=title,
                                 created_at=runtime.clock.now()))


def _demo_token(runtime: Runtime, user: User, name: str, scopes: list[str],
                known: dict[str, str]) -> IssuedToken:
    """The demo token printed last time while it still works, else a new one (never a
    rotation: a running demo's integrations keep working)."""
    actor = Actor(user.account_id, user.id, user.role, user.email, None, "demo")
    now = runtime.clock.now()
    with runtime.database.reading() as session:
        existing = session.scalar(select(Token).where(
            Token.account_id == user.account_id, Token.owner_id == user.id, Token.name == name,
            Token.revoked_at.is_(None), Token.expires_at > now + timedelta(days=1)
        ).order_by(Token.created_at.desc()))
        current = session.scalar(select(TokenSecret.secret_hash).where(
            TokenSecret.token_id == existing.id, TokenSecret.retires_at.is_(None))
        ) if existing is not None else None
    value = known.get(existing.id) if existing is not None else None
    if existing is not None and value and current:
        try:
            parsed = token_format.parse(value)
        except TokenFormatError:
            parsed = None
        if parsed is not None and hmac.compare_digest(parsed.secret_hash, current):
            return IssuedToken(existing, parsed)
    return runtime.tokens.issue(actor, TokenDraft(
        name=name, expires_in_days=DEMO_TOKEN_DAYS, scopes=scopes,
        description="Created by `tallykey demo`."))
