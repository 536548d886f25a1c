"""`tallykey outbox …`, `tallykey webhooks …` and `tallykey worker`: thin adapters over the
outbox, the webhook service and the worker. `register(app)` adds them to the main CLI."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType
from typing import Annotated, Any

import typer

from tallykey.actor import Actor
from tallykey.cli.context import runtime
from tallykey.cli.output import AccountOption, JsonOption, emit_json, err, fail, out, print_table
from tallykey.jobs import Worker
from tallykey.notify import outbox
from tallykey.notify.models import WEBHOOK, OutboxMessage, WebhookEndpoint

outbox_app = typer.Typer(help="The notification outbox: mails and webhook calls to make.",
                         no_args_is_help=True)
webhooks_app = typer.Typer(help="Signed webhooks of an account.", no_args_is_help=True)



def register(app: typer.Typer) -> None:
    """Add the notification commands to the `tallykey` command."""
    app.add_typer(outbox_app, name="outbox")
    app.add_typer(webhooks_app, name="webhooks")
    app.command("worker")(worker)


def message_dict(message: OutboxMessage) -> dict[str, Any]:
    """An outbox row for listing (no bodies; a webhook URL without its query string)."""
    recipient = (message.recipient.split("?", 1)[0] if message.channel == WEBHOOK
                 else message.recipient)
    return {
        "id": message.id, "account_id": message.account_id, "channel": message.channel,
        "event": message.event, "recipient": recipient,
        "subject": outbox.for_display(message.subject),
        "status": message.status, "attempts": message.attempts,
        "next_attempt_at": message.next_attempt_at.isoformat(),
        "last_error": message.last_error, "created_at": message.created_at.isoformat(),
        "sent_at": message.sent_at.isoformat() if message.sent_at else None,
    }


# --- outbox -------------------------------------------------------------------------------


@outbox_app.command("list")
def outbox_list(
    status: Annotated[str | None, typer.Option(
        help="pending, sending, sent or dead.")] = None,
    account: Annotated[str | None, typer.Option(
        "--account", "-a", help="Only this account's messages (slug or id).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """List outbox messages, newest first (mails wait here while SMTP is not configured)."""
    with runtime() as rt:
        account_id = rt.accounts.find_account(account).id if account else None
        rows = [message_dict(m) for m in outbox.list_messages(
            rt.database, status=status, account_id=account_id, limit=limit)]
        smtp = rt.settings.smtp_url
    if as_json:
        emit_json(rows)
        return
    print_table(["created", "channel", "event", "recipient", "status", "tries", "id"],
                [[row["created_at"][:16], row["channel"], row["event"], row["recipient"],
                  row["status"], str(row["attempts"]), row["id"]] for row in rows])
    if not smtp and any(r["channel"] == "email" and r["status"] == "pending" for r in rows):
        err.print("note: TALLYKEY_SMTP_URL is not set; mails stay in the outbox until it is.")


@outbox_app.command("show")
def outbox_show(message_id: Annotated[str, typer.Argument(help="Outbox message id.")],
                as_json: JsonOption = False) -> None:
    """Show one message with its text (a mail's plain-text body, a webhook's JSON)."""
    with runtime() as rt:
        message = outbox.get_message(rt.database, message_id)
    body = outbox.for_display(message.body)  # one-time links are for the recipient only
    row = message_dict(message) | {"body": body}
    if as_json:
        emit_json(row)
        return
    for key, value in row.items():
        if key != "body":
            out.print(f"[bold]{key}[/]: {value}", highlight=False)
    sys.stdout.write("\n" + body.rstrip("\n") + "\n")


@outbox_app.command("retry")
def outbox_retry(
    message_id: Annotated[str | None, typer.Argument(help="Outbox message id.")] = None,
    dead: Annotated[bool, typer.Option("--dead", metavar="",
            help="Retry every dead message.")] = False,
) -> None:
    """Send a dead or waiting message again now (attempts start over)."""
    if (message_id is None) == (not dead):
        fail("name one message id, or pass --dead to retry every dead message.")
    with runtime() as rt:
        count = outbox.retry(rt.database, rt.clock.now(), message_id=message_id,
                             all_dead=dead)
    out.print(f"{count} message{'s' if count != 1 else ''} queued again")


# --- worker -------------------------------------------------------------------------------


def worker(
    once: Annotated[bool, typer.Option("--once", metavar="",
            help="Run one pass, then exit.")] = False,
    interval: Annotated[float | None, typer.Option(
        help="Seconds between passes (default TALLYKEY_WORKER_INTERVAL).")] = None,
) -> None:
    """Deliver the outbox (SMTP, webhooks), schedule expiry reminders, revoke tokens the
    inactivity policy stops and send the weekly digest, until stopped."""
    with runtime() as rt:
        logging.basicConfig(level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s %(message)s")
        try:
            runner = Worker.from_settings(rt.database, rt.clock, rt.settings, rt.notifier)
        except ValueError as error:
            fail(f"invalid settings: {error}")
        try:
            if once:
                report = runner.run_once()
                emit_json({"scheduled": report.scheduled, "sent": report.sent,
                           "retrying": report.retrying, "dead": report.dead,
                           "revoked_inactive": report.revoked_inactive})
                return
            stop = threading.Event()

            def on_signal(_signum: int, _frame: FrameType | None) -> None:
                stop.set()

            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
            runner.run(stop, interval or rt.settings.worker_interval)
        finally:
            runner.close()


# --- webhooks -----------------------------------------------------------------------------


def endpoint_dict(endpoint: WebhookEndpoint) -> dict[str, Any]:
    """An endpoint for listing: never its secret."""
    return {"id": endpoint.id, "url": endpoint.url, "description": endpoint.description,
            "events": list(endpoint.events), "enabled": endpoint.active,
            "active": endpoint.active,  # the name before `enabled`; kept for scripts
            "created_at": endpoint.created_at.isoformat(),
            "rotated_at": (endpoint.secret_rotated_at.isoformat()
                                  if endpoint.secret_rotated_at else None)}


EventOption = Annotated[list[str] | None, typer.Option(
    "--event", "-e", help="Send only this event type (repeat for several; none: every "
    "event). E.g. token.revoked.")]
EndpointArgument = Annotated[str, typer.Argument(help="Endpoint id.")]


def _operator(rt: Any, account: str) -> Actor:
    return Actor.operator(rt.accounts.find_account(account).id)


def _print_secret(endpoint: WebhookEndpoint, secret: str, verb: str, as_json: bool) -> None:
    if as_json:
        emit_json(endpoint_dict(endpoint) | {"secret": secret})
        return
    out.print(f"{verb} webhook {endpoint.id} -> {endpoint.url}", highlight=False)
    out.print("Signing secret (copy it now; it will not be shown again):")
    out.print(secret, highlight=False, soft_wrap=True)


@webhooks_app.command("add")
def webhooks_add(account: AccountOption,
                 url: Annotated[str, typer.Option(help="https:// URL that receives events.")],
                 event: EventOption = None,
                 description: Annotated[str, typer.Option(help="What receives it.")] = "",
                 disabled: Annotated[bool, typer.Option(
                     "--disabled", metavar="", help="Add it without sending to it yet.")
                 ] = False,
                 as_json: JsonOption = False) -> None:
    """Register an endpoint; its signing secret is printed once and never again."""
    with runtime() as rt:
        endpoint, secret = rt.webhooks.add(_operator(rt, account), url,
                                           description=description, events=event or [],
                                           enabled=not disabled)
    _print_secret(endpoint, secret, "added", as_json)


@webhooks_app.command("list")
def webhooks_list(account: AccountOption, as_json: JsonOption = False) -> None:
    """List an account's webhook endpoints (never their secrets)."""
    with runtime() as rt:
        endpoints = rt.webhooks.list(_operator(rt, account))
    rows = [endpoint_dict(e) for e in endpoints]
    if as_json:
        emit_json(rows)
        return
    print_table(["url", "enabled", "events", "id"],
                [[row["url"], "yes" if row["enabled"] else "no",
                  ", ".join(row["events"]) or "all", row["id"]] for row in rows])


@webhooks_app.command("show")
def webhooks_show(account: AccountOption, endpoint_id: EndpointArgument,
                  as_json: JsonOption = False) -> None:
    """Show one endpoint (never its secret)."""
    with runtime() as rt:
        row = endpoint_dict(rt.webhooks.get(_operator(rt, account), endpoint_id))
    if as_json:
        emit_json(row)
        return
    for key, value in row.items():
        out.print(f"[bold]{key}[/]: {value}", highlight=False)


@webhooks_app.command("update")
def webhooks_update(account: AccountOption, endpoint_id: EndpointArgument,
                    url: Annotated[str | None, typer.Option(help="A new URL.")] = None,
                    description: Annotated[str | None, typer.Option(
                        help="A new description.")] = None,
                    event: EventOption = None,
                    all_events: Annotated[bool, typer.Option(
                        "--all-events", metavar="", help="Drop the event filter.")] = False,
                    as_json: JsonOption = False) -> None:
    """Change an endpoint's URL, description or event filter."""
    if event and all_events:
        fail("give --event or --all-events, not both.")
    events = [] if all_events else event
    with runtime() as rt:
        endpoint = rt.webhooks.update(_operator(rt, account), endpoint_id, url=url,
                                      description=description, events=events)
    if as_json:
        emit_json(endpoint_dict(endpoint))
        return
    out.print(f"updated webhook {endpoint.id} ({endpoint.url})", highlight=False)


@webhooks_app.command("enable")
def webhooks_enable(account: AccountOption, endpoint_id: EndpointArgument) -> None:
    """Send events to an endpoint again."""
    with runtime() as rt:
        endpoint = rt.webhooks.update(_operator(rt, account), endpoint_id, enabled=True)
    out.print(f"enabled webhook {endpoint.id} ({endpoint.url})", highlight=False)


@webhooks_app.command("disable")
def webhooks_disable(account: AccountOption, endpoint_id: EndpointArgument) -> None:
    """Stop sending events to an endpoint."""
    with runtime() as rt:
        endpoint = rt.webhooks.disable(_operator(rt, account), endpoint_id)
    out.print(f"disabled webhook {endpoint.id} ({endpoint.url})", highlight=False)


@webhooks_app.command("delete")
def webhooks_delete(account: AccountOption, endpoint_id: EndpointArgument) -> None:
    """Delete an endpoint: nothing more is sent to it and its secrets are forgotten."""
    with runtime() as rt:
        endpoint = rt.webhooks.delete(_operator(rt, account), endpoint_id)
    out.print(f"deleted webhook {endpoint.id} ({endpoint.url})", highlight=False)


@webhooks_app.command("rotate-secret")
def webhooks_rotate_secret(account: AccountOption, endpoint_id: EndpointArgument,
                           as_json: JsonOption = False) -> None:
    """A new signing secret, printed once; the old one keeps signing beside it for 24 h."""
    with runtime() as rt:
        endpoint, secret = rt.webhooks.rotate_secret(_operator(rt, account), endpoint_id)
    _print_secret(endpoint, secret, "rotated the secret of", as_json)
    if not as_json:
        err.print("note: for 24 hours deliveries carry two v1= signatures (new and old); "
                  "put the new secret in the receiver before then.")


@webhooks_app.command("deliveries")
def webhooks_deliveries(account: AccountOption, endpoint_id: EndpointArgument,
                        limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
                        as_json: JsonOption = False) -> None:
    """An endpoint's delivery log, newest first."""
    with runtime() as rt:
        rows = [message_dict(m) for m in rt.webhooks.deliveries(
            _operator(rt, account), endpoint_id, limit)]
    if as_json:
        emit_json(rows)
        return
    print_table(["created", "event", "status", "tries", "last error", "id"],
                [[row["created_at"][:16], row["event"], row["status"], str(row["attempts"]),
                  row["last_error"] or "", row["id"]] for row in rows])


@webhooks_app.command("retry")
def webhooks_retry(account: AccountOption, endpoint_id: EndpointArgument,
                   delivery_id: Annotated[str, typer.Argument(help="Delivery id.")]) -> None:
    """Queue a dead or waiting delivery again now (the worker sends it)."""
    with runtime() as rt:
        message = rt.webhooks.retry(_operator(rt, account), endpoint_id, delivery_id)
    out.print(f"delivery {message.id} ({message.event}) queued again")
