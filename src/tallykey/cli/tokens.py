"""`tallykey tokens …`: create, list, show, update, revoke, rotate, renew, suspend,
resume, approve, deny, secret, import."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from tallykey.actor import Actor
from tallykey.cli.context import operator_for_token, runtime, user_actor
from tallykey.cli.output import AccountOption, JsonOption, emit_json, err, fail, out, print_table
from tallykey.controls.rules import parse_rate_limit
from tallykey.errors import ValidationFailed
from tallykey.feed.propagation import PropagationView
from tallykey.runtime import Runtime
from tallykey.tokens.imports import CREATED, EXISTING, MAX_KEYS, UNAVAILABLE, items_from
from tallykey.tokens.policy import DEFAULT_GRACE_SECONDS
from tallykey.tokens.requests import Renewal, TokenChanges, TokenDraft, TokenQuery
from tallykey.tokens.schemas import IssuedTokenView, TokenView

tokens_app = typer.Typer(help="API tokens.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(tokens_app, name="tokens")


def parse_expiry(value: str) -> datetime | date:
    try:
        return date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
    except ValueError:
        fail(f"--expires {value!r} is not an ISO 8601 date or time.",
             "Write e.g. 2027-03-31 or 2027-03-31T18:00:00+01:00.")


RateLimitOption = Annotated[list[str] | None, typer.Option(
    "--rate-limit", metavar="NAME=LIMIT/SECONDS[:owner|:external_id]",
    help="A rate limit, e.g. default=100/60 (100 requests per 60 s); :owner or "
    ":external_id shares the count with the owner's or the external id's tokens. "
    "Repeat for more.")]
CreditsOption = Annotated[int | None, typer.Option(
    "--credits", help="Usage credits: each request spends 1 (or its Tallykey-Cost).")]
RefillOption = Annotated[str | None, typer.Option(
    "--refill", metavar="AMOUNT/daily|monthly",
    help="Set the credits back to AMOUNT every day (00:00 UTC) or month (the 1st), "
    "e.g. 1000/monthly; needs --credits.")]
MetadataOption = Annotated[str | None, typer.Option(
    "--metadata", metavar="JSON", help="A JSON object (at most 4 KB), returned with "
    "every verification.")]
PlanOption = Annotated[str | None, typer.Option(
    "--plan", help="The plan (id or name, see `tallykey plans list`): its rate limits, "
    "credit refill and scopes ceiling apply (own rate limits and credits win).")]
NoPlanOption = Annotated[bool, typer.Option("--no-plan", metavar="",
                                            help="Take it off its plan.")]
ExternalIdOption = Annotated[str | None, typer.Option(
    "--external-id", help="Your id for the customer or integration (searchable).")]


def key_controls(rate_limit: list[str] | None, credits: int | None, refill: str | None,
                 metadata: str | None, external_id: str | None) -> dict[str, Any]:
    """The key-control options as token service fields (only those given)."""
    found: dict[str, Any] = {}
    if rate_limit:
        try:
            found["rate_limits"] = [parse_rate_limit(text) for text in rate_limit]
        except ValidationFailed as error:
            fail(error.message, error.hint)
    if refill is not None and credits is None:
        fail("--refill needs --credits (the credits to start from).")
    if credits is not None:
        found["credits"] = {"remaining": credits, "refill": parse_refill(refill) if refill
                            else None}
    if metadata is not None:
        try:
            found["metadata"] = json.loads(metadata)
        except ValueError as error:
            fail(f"--metadata is not valid JSON: {error}.", "Pass an object, e.g. "
                 "--metadata '{\"plan\": \"pro\"}'.")
    if external_id is not None:
        found["external_id"] = external_id
    return found


def parse_refill(text: str) -> dict[str, Any]:
    """`AMOUNT/daily|monthly` as `{"amount", "interval"}` (a one-line failure otherwise)."""
    amount, _, interval = text.partition("/")
    if not amount.isdigit() or interval not in ("daily", "monthly"):
        fail(f"--refill {text!r} is not of the form AMOUNT/daily or AMOUNT/monthly.",
             "Write e.g. --refill 1000/monthly.")
    return {"amount": int(amount), "interval": interval}


@tokens_app.command("create")
def tokens_create(
    account: AccountOption,
    user: Annotated[str, typer.Option(help="E-mail of the user creating the token.")],
    name: Annotated[str, typer.Option(help="A descriptive name.")],
    days: Annotated[int | None, typer.Option(help="Valid for D days (7, 30, 60, 90, 365).")]
    = None,
    expires: Annotated[str | None, typer.Option(help="Expiry date (ISO 8601).")] = None,
    kind: Annotated[str, typer.Option(help="personal, application or decoy.")] = "personal",
    scope: Annotated[list[str] | None, typer.Option(help="A scope; repeat for more.")] = None,
    ip: Annotated[list[str] | None, typer.Option(help="Allowed CIDR; repeat for more.")]
    = None,
    workspace: Annotated[str | None, typer.Option(help="Workspace slug or id.")] = None,
    description: Annotated[str, typer.Option(help="What the token is for.")] = "",
    target: Annotated[str | None, typer.Option(help="Target software.")] = None,
    rate_limit: RateLimitOption = None,
    credits: CreditsOption = None,
    refill: RefillOption = None,
    metadata: MetadataOption = None,
    external_id: ExternalIdOption = None,
    identity: Annotated[str | None, typer.Option(
        help="The identity (id or external id) the token belongs to: it spends the "
        "identity's credit pool and counts against its rate limits.")] = None,
    plan: PlanOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", metavar="", help="Print only the token.")]
    = False,
    as_json: JsonOption = False,
) -> None:
    """Create a token. The secret is printed once and never again."""
    if days is None and expires is None:
        fail("an expiry is required: pass --days D or --expires DATE.")
    draft = TokenDraft(name=name, expires_in_days=days,
                       expires_at=parse_expiry(expires) if expires else None, kind=kind,
                       description=description, workspace=workspace, scopes=scope or [],
                       ip_allowlist=ip or [], target=target,
                       identity_id=identity, plan_id=plan,
                       **key_controls(rate_limit, credits, refill, metadata, external_id))
    with runtime() as rt:
        issued = rt.tokens.issue(user_actor(rt, account, user), draft)
        view = IssuedTokenView.of_issued(issued, rt.clock.now())
    print_issued(view, "created", quiet=quiet, as_json=as_json)


def print_issued(view: IssuedTokenView, verb: str, *, quiet: bool, as_json: bool) -> None:
    """A new secret, once: only the token (`--quiet`), JSON, or for a person."""
    if quiet:
        sys.stdout.write(view.token + "\n")
        return
    if as_json:
        emit_json(view)
        return
    out.print(f"{verb} token [bold]{view.name}[/] ({view.id}), expires {view.expires_at:%Y-%m-%d}")
    for warning in view.warnings:
        err.print(f"[yellow]warning:[/] {warning}")
    out.print("Copy it now; it will not be shown again:")
    out.print(view.token, highlight=False, soft_wrap=True)
    if view.username:
        out.print(f"username: {view.username}\npassword: {view.password}", highlight=False)


@tokens_app.command("list")
def tokens_list(
    account: AccountOption,
    status: Annotated[str | None, typer.Option(
        help="active, pending, suspended, expired or revoked.")] = None,
    search: Annotated[str | None, typer.Option(help="Name, description or prefix.")] = None,
    kind: Annotated[str | None, typer.Option(
        help="personal, application, decoy or imported.")] = None,
    target: Annotated[str | None, typer.Option(help="Target software.")] = None,
    external_id: Annotated[str | None, typer.Option(
        "--external-id", help="Only the tokens with this external id.")] = None,
    identity: Annotated[str | None, typer.Option(
        help="Only the tokens of this identity (its id or external id).")] = None,
    limit: Annotated[int, typer.Option(help="Page size.")] = 50,
    after: Annotated[str | None, typer.Option(help="Cursor of the next page.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List tokens (never their secrets)."""
    with runtime() as rt:
        actor = Actor.operator(rt.accounts.find_account(account).id)
        page = rt.tokens.list_tokens(actor, TokenQuery(status=status, search=search, kind=kind,
                                                       target=target, external_id=external_id,
                                                       identity=identity, limit=limit,
                                                       after=after))
        now = rt.clock.now()
    views = [TokenView.of(t, now) for t in page.items]
    if as_json:
        emit_json({"items": [v.model_dump(mode="json") for v in views],
                   "next_cursor": page.next_cursor})
        return
    print_table(["prefix", "name", "kind", "status", "created", "expires", "last used",
                 "creator", "id"],
                [[v.prefix, v.name, v.kind, v.status, f"{v.created_at:%Y-%m-%d}",
                  f"{v.expires_at:%Y-%m-%d}",
                  f"{v.last_used_at:%Y-%m-%d %H:%M} {v.last_used_ip or ''}".strip()
                  if v.last_used_at else "never", v.created_by or "", v.id] for v in views])
    if page.next_cursor:
        out.print(f"more: --after {page.next_cursor}")


TokenRef = Annotated[str, typer.Argument(help="Token id or prefix (tlk_…).")]
OptionalAccount = Annotated[str | None, typer.Option(
    "--account", "-a", help="Refuse unless the token belongs to this account (slug or id).")]


@tokens_app.command("show")
def tokens_show(ref: TokenRef, account: OptionalAccount = None,
                as_json: JsonOption = False) -> None:
    """Show one token."""
    with runtime() as rt:
        actor, token_id = operator_for_token(rt, ref, account)
        view = TokenView.of(rt.tokens.get(actor, token_id), rt.clock.now())
    if as_json:
        emit_json(view)
        return
    for key, value in view.model_dump(mode="json").items():
        out.print(f"[bold]{key}[/]: {value}", highlight=False)


@tokens_app.command("update")
def tokens_update(
    ref: TokenRef,
    account: OptionalAccount = None,
    name: Annotated[str | None, typer.Option(help="A new name.")] = None,
    description: Annotated[str | None, typer.Option(help="A new description.")] = None,
    ip: Annotated[list[str] | None, typer.Option(help="Replace the allow-list.")] = None,
    clear_ips: Annotated[bool, typer.Option("--clear-ips", metavar="",
            help="Allow every IP.")] = False,
    target: Annotated[str | None, typer.Option(help="A new target software.")] = None,
    scope: Annotated[list[str] | None, typer.Option(
        help="Replace the scopes; repeat for more (see `tallykey scopes`).")] = None,
    rate_limit: Annotated[list[str] | None, typer.Option(
        "--rate-limit", metavar="NAME=LIMIT/SECONDS[:owner|:external_id]",
        help="Replace the rate limits, e.g. default=100/60; repeat for more.")] = None,
    no_rate_limits: Annotated[bool, typer.Option(
        "--no-rate-limits", metavar="", help="Remove every rate limit.")] = False,
    credits: Annotated[int | None, typer.Option(
        "--credits", help="Set the usage credits left (replaces the refill too).")] = None,
    refill: RefillOption = None,
    no_credits: Annotated[bool, typer.Option(
        "--no-credits", metavar="", help="Remove the credits: requests are no longer "
        "costed.")] = False,
    metadata: Annotated[str | None, typer.Option(
        "--metadata", metavar="JSON", help="Replace the metadata ('{}' clears it).")] = None,
    external_id: Annotated[str | None, typer.Option(
        "--external-id", help="A new external id ('' clears it).")] = None,
    identity: Annotated[str | None, typer.Option(
        help="Move the token to this identity (id or external id).")] = None,
    no_identity: Annotated[bool, typer.Option(
        "--no-identity", metavar="", help="Take the token out of its identity.")] = False,
    plan: PlanOption = None,
    no_plan: NoPlanOption = False,
    as_json: JsonOption = False,
) -> None:
    """Edit a token's name, description, allow-list, target, scopes, rate limits, credits,
    metadata, external id or identity (expiry cannot be extended)."""
    controls = key_controls(rate_limit, credits, refill, metadata, external_id)
    if no_rate_limits:
        controls["rate_limits"] = []
    changes = TokenChanges(name=name, description=description,
                           ip_allowlist=[] if clear_ips else ip, target=target, scopes=scope,
                           remove_credits=no_credits, identity_id=identity,
                           detach_identity=no_identity, plan_id=plan, detach_plan=no_plan,
                           **controls)
    _token_action(ref, account, as_json, "updated",
                  lambda rt, actor, tid: rt.tokens.update(actor, tid, changes))


@tokens_app.command("revoke")
def tokens_revoke(ref: TokenRef, account: OptionalAccount = None,
                  reason: Annotated[str, typer.Option(
                      help="Why (shown in Expired & Revoked and the audit log).")] = "",
                  as_json: JsonOption = False) -> None:
    """Revoke a token: it stops working immediately. Irreversible. Answers once every
    running node refuses it (or says which node has not confirmed, and by when it stops)."""
    _token_action(ref, account, as_json, "revoked",
                  lambda rt, actor, tid: rt.tokens.revoke(actor, tid, reason))


@tokens_app.command("rotate")
def tokens_rotate(
    ref: TokenRef,
    account: OptionalAccount = None,
    grace: Annotated[int, typer.Option(
        help="Seconds the old secret keeps working (0-604800); the console's default too.")]
    = DEFAULT_GRACE_SECONDS,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", metavar="",
            help="Print only the new token.")]
    = False,
    as_json: JsonOption = False,
) -> None:
    """Give a token a new secret; the old one works for the grace period."""
    with runtime() as rt:
        actor, token_id = operator_for_token(rt, ref, account)
        issued = rt.tokens.rotate(actor, token_id, grace)
        view = IssuedTokenView.of_issued(issued, rt.clock.now())
        done = rt.propagation.settle(token_id)
    if grace == 0 and not quiet and not as_json:
        err.print(f"the old secret {done.summary()}", highlight=False)
    print_issued(view, "rotated", quiet=quiet, as_json=as_json)


@tokens_app.command("renew")
def tokens_renew(
    ref: TokenRef,
    account: OptionalAccount = None,
    days: Annotated[int | None, typer.Option(
        help="The successor is valid for D days (within the account's maximum).")] = None,
    expires: Annotated[str | None, typer.Option(help="The successor's expiry (ISO 8601).")]
    = None,
    grace: Annotated[int, typer.Option(
        help="Seconds the renewed token's secret keeps working (0-604800), as for rotate.")]
    = DEFAULT_GRACE_SECONDS,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", metavar="",
            help="Print only the successor's token.")]
    = False,
    as_json: JsonOption = False,
) -> None:
    """Issue a successor with a new expiry and every other setting of this token; its
    secret is printed once. This token's expiry is never extended: its secret stops
    after the grace period."""
    if days is None and expires is None:
        fail("an expiry is required: pass --days D or --expires DATE.")
    renewal = Renewal(expires_in_days=days, expires_at=parse_expiry(expires) if expires
                      else None, grace_seconds=grace)
    with runtime() as rt:
        actor, token_id = operator_for_token(rt, ref, account)
        issued = rt.tokens.renew(actor, token_id, renewal)
        view = IssuedTokenView.of_issued(issued, rt.clock.now())
        done = rt.propagation.settle(token_id)
    print_issued(view, "renewed: successor", quiet=quiet, as_json=as_json)
    if not quiet and not as_json:
        retires = view.previous_secret_expires_at
        err.print(f"the renewed token's secret {done.summary()}" if grace == 0
                  else f"the renewed token's secret stops at {retires}", highlight=False)


@tokens_app.command("suspend")
def tokens_suspend(ref: TokenRef, account: OptionalAccount = None,
                   as_json: JsonOption = False) -> None:
    """Suspend a token: it is refused (token_suspended) until resumed. Answers once every
    running node refuses it (or says which node has not confirmed, and by when it stops)."""
    _token_action(ref, account, as_json, "suspended",
                  lambda rt, actor, tid: rt.tokens.suspend(actor, tid))


@tokens_app.command("resume")
def tokens_resume(ref: TokenRef, account: OptionalAccount = None,
                  as_json: JsonOption = False) -> None:
    """Resume a suspended token: it works again on every running node."""
    _token_action(ref, account, as_json, "resumed",
                  lambda rt, actor, tid: rt.tokens.resume(actor, tid))


@tokens_app.command("approve")
def tokens_approve(ref: TokenRef, account: OptionalAccount = None,
                   as_json: JsonOption = False) -> None:
    """Approve a token awaiting approval (account policy token_approval): it works on
    every running node once answered. Exit 1 (409) unless it is pending."""
    _token_action(ref, account, as_json, "approved",
                  lambda rt, actor, tid: rt.tokens.approve(actor, tid))


@tokens_app.command("deny")
def tokens_deny(ref: TokenRef, account: OptionalAccount = None,
                as_json: JsonOption = False) -> None:
    """Deny a token awaiting approval: it is revoked (reason denied) and never works."""
    _token_action(ref, account, as_json, "denied",
                  lambda rt, actor, tid: rt.tokens.deny(actor, tid))


def _token_action(ref: str, account: str | None, as_json: bool, verb: str,
                  action: Callable[[Runtime, Actor, str], Any]) -> None:
    """Change a token, wait until every node applied it, and say so."""
    with runtime() as rt:
        actor, token_id = operator_for_token(rt, ref, account)
        view = TokenView.of(action(rt, actor, token_id), rt.clock.now())
        done = rt.propagation.settle(token_id)
    effect = {"resumed": "works again", "approved": "works again",
              "updated": "applied"}.get(verb, "stopped")
    if as_json:
        emit_json({**view.model_dump(mode="json"),
                   "propagation": PropagationView.of(done, effect).model_dump(mode="json")})
    else:
        out.print(f"{verb} {view.prefix} ({view.name}): {done.summary(effect)}",
                  highlight=False)


@tokens_app.command("secret")
def tokens_secret(ref: TokenRef, account: OptionalAccount = None,
                  as_json: JsonOption = False) -> None:
    """Retrieve a retrievable application token's username and password (audited)."""
    with runtime() as rt:
        actor, token_id = operator_for_token(rt, ref, account)
        issued = rt.tokens.retrieve_secret(actor, token_id)
    result = {"id": issued.token.id, "username": issued.secret.prefix,
              "password": issued.secret.password, "token": issued.value}
    if as_json:
        emit_json(result)
    else:
        out.print(f"username: {result['username']}\npassword: {result['password']}",
                  highlight=False)


@tokens_app.command("import")
def tokens_import(
    file: Annotated[str, typer.Argument(
        help="JSON lines, one key per line: {\"key\": …} or {\"hash\": \"sha256:…\"} with "
        "name, expires_in_days or expires_at, scopes, description, metadata, external_id, "
        "identity_id (an identity's id or external id). "
        "'-' reads standard input.")],
    account: AccountOption,
    as_json: JsonOption = False,
) -> None:
    """Import keys your platform issued before (SPEC §16): each keeps verifying with its
    original string; only its SHA-256 is stored. Re-importing a key changes nothing."""
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except OSError as error:
        fail(f"cannot read {file}: {error.strerror}.")
    objects: list[Any] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            objects.append(json.loads(line))
        except ValueError:
            fail(f"line {number} is not JSON.", "Write one JSON object per line.")
    if len(objects) > MAX_KEYS:
        fail(f"{len(objects)} keys; at most {MAX_KEYS} are imported at once.",
             f"Split the file into files of up to {MAX_KEYS} lines.")
    with runtime() as rt:
        actor = Actor.operator(rt.accounts.find_account(account).id)
        report = rt.tokens.import_keys(actor, items_from(objects))
    counts = {outcome: report.count(outcome) for outcome in (CREATED, EXISTING, UNAVAILABLE)}
    if as_json:
        emit_json({**counts, "keys": [
            {"index": r.index, "outcome": r.outcome, "id": r.token_id, "prefix": r.prefix,
             "message": r.message} for r in report.results]})
        return
    out.print(f"imported {counts[CREATED]} keys, {counts[EXISTING]} already there, "
              f"{counts[UNAVAILABLE]} unavailable")
    for result in report.results:
        if result.outcome == UNAVAILABLE:
            err.print(f"line {result.index + 1}: {result.prefix}: {result.message}")
