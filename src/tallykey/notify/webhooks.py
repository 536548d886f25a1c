"""Signed webhooks: an account's endpoints, the JSON event bodies, the signature, and the
HTTP channel that delivers outbox rows of kind `webhook`.

Every request carries `Tallykey-Signature: t=<unix seconds>,d=<delivery id>,v1=<hex>`
where the hex is HMAC-SHA256, keyed with the endpoint's secret (the whole `whsec_…`
string, UTF-8), over `f"{t}.{d}.{body}"`: the delivery id (also sent as
`Tallykey-Delivery`, the receiver's de-duplication key) is signed with the body, so a
replayed body cannot pose as a new delivery. Receivers recompute it, compare in constant
time and refuse a `t` more than a few minutes old (`verify_signature` does all three and
checks the `Tallykey-Delivery` header against `d`). The timestamp is taken at each
attempt, so a retried delivery is signed afresh; `Tallykey-Delivery` stays the same.

Endpoints on private, loopback, link-local or otherwise non-public addresses (a database
port, a cloud metadata service) are refused when added and again when a delivery is made
(names are resolved then), unless the operator allows them
(`TALLYKEY_WEBHOOK_PRIVATE_TARGETS=true`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from tallykey.actor import Actor
from tallykey.audit import trail
from tallykey.clock import Clock
from tallykey.db.engine import Database
from tallykey.errors import NotFound, PermissionDenied, ValidationFailed
from tallykey.notify.models import WEBHOOK, OutboxMessage, WebhookEndpoint
from tallykey.notify.outbox import DeliveryError, Draft
from tallykey.tokens.models import Token

SIGNATURE_HEADER = "Tallykey-Signature"
SECRET_PREFIX = "whsec_"  # noqa: S105 - a label, not a secret
DEFAULT_TOLERANCE_SECONDS = 300
TIMEOUT_SECONDS = 10.0
MAX_URL_LENGTH = 2048

# Events the scheduler raises (the token service raises the others, see tallykey.tokens.events).
TOKEN_EXPIRING = "token.expiring"  # noqa: S105 - an event name
TOKEN_EXPIRED = "token.expired"  # noqa: S105 - an event name
# Alerts raised from aggregated usage (`tallykey.monitor.alerts`).
TOKEN_NEW_NETWORK = "token.new_network"  # noqa: S105 - an event name
TOKEN_DENIED_SPIKE = "token.denied_spike"  # noqa: S105 - an event name
TOKEN_OLD_SECRET_USED = "token.old_secret_used"  # noqa: S105 - an event name
TOKEN_MANY_NETWORKS = "token.many_networks"  # noqa: S105 - an event name
# A decoy token was used (`tallykey.monitor.decoys`, SPEC §17).
TOKEN_DECOY_USED = "token.decoy_used"  # noqa: S105 - an event name


class SignatureInvalid(ValueError):
    """A webhook request whose signature header is missing, malformed, stale or wrong."""


def sign(secret: str, body: str, timestamp: int, delivery: str | None = None) -> str:
    """The `Tallykey-Signature` header value for `body` sent at `timestamp` as
    `delivery` (the delivery id is signed too)."""
    signed = f"{timestamp}.{body}" if delivery is None else f"{timestamp}.{delivery}.{body}"
    digest = hmac.new(secret.encode(), signed.encode(), hashlib.sha256)
    if delivery is None:
        return f"t={timestamp},v1={digest.hexdigest()}"
    return f"t={timestamp},d={delivery},v1={digest.hexdigest()}"


def verify_signature(secret: str, header: str, body: str | bytes, now: datetime,
                     tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
                     delivery: str | None = None) -> None:
    """Check a received webhook; raises `SignatureInvalid` saying what is wrong. Pass the
    `Tallykey-Delivery` header as `delivery`: it must be the one the signature covers."""
    text = body.decode() if isinstance(body, bytes) else body
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if sep:
            fields.setdefault(key, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        raise SignatureInvalid("the signature header has no valid t=<unix seconds>") from None
    candidates = fields.get("v1", [])
    if not candidates:
        raise SignatureInvalid("the signature header has no v1=<hex> signature")
    if abs(now.timestamp() - timestamp) > tolerance_seconds:
        raise SignatureInvalid(f"the signature timestamp is more than {tolerance_seconds} "
                               "seconds away from now (replayed or clock skew)")
    signed_delivery = fields.get("d", [None])[0]
    if delivery is not None and (signed_delivery is None or not hmac.compare_digest(
            delivery.encode(), signed_delivery.encode())):
        raise SignatureInvalid("the Tallykey-Delivery header is not the signed delivery id")
    expected = sign(secret, text, timestamp, signed_delivery).rpartition("v1=")[2]
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise SignatureInvalid("the signature does not match the body")


def event_body(*, notice: str, event: str, occurred_at: datetime, token: Token,
               actor: Actor | None, details: dict[str, Any]) -> str:
    """The JSON body of a webhook (compact, stable key order). Never holds a secret."""
    payload = {
        "id": notice,
        "type": event,
        "occurred_at": occurred_at.isoformat(),
        "account_id": token.account_id,
        "data": {
            "token": {
                "id": token.id, "name": token.name, "kind": token.kind,
                "prefix": token.prefix, "scopes": list(token.scopes),
                "workspace_id": token.workspace_id, "created_by_id": token.created_by_id,
                "created_at": token.created_at.isoformat(),
                "expires_at": token.expires_at.isoformat(),
                "revoked_at": token.revoked_at.isoformat() if token.revoked_at else None,
            },
            "actor": None if actor is None else {
                "type": actor.kind, "id": actor.user_id, "label": actor.label, "ip": actor.ip},
            "details": details,
        },
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)


def drafts_for(session: Session, token: Token, *, notice: str, event: str,
               occurred_at: datetime, actor: Actor | None,
               details: dict[str, Any]) -> list[Draft]:
    """One outbox draft per active endpoint of the token's account."""
    endpoints = session.scalars(select(WebhookEndpoint).where(
        WebhookEndpoint.account_id == token.account_id, WebhookEndpoint.active.is_(True))
        .order_by(WebhookEndpoint.created_at))
    body = None
    drafts = []
    for endpoint in endpoints:
        body = body or event_body(notice=notice, event=event, occurred_at=occurred_at,
                                  token=token, actor=actor, details=details)
        drafts.append(Draft(channel=WEBHOOK, event=event, notice=notice,
                            recipient=shown_url(endpoint.url), body=body, subject=event,
                            token_id=token.id, endpoint_id=endpoint.id))
    return drafts


def clean_url(url: str, allow_private: bool = False) -> str:
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValidationFailed(f"Webhook URL {url!r} must be an http:// or https:// URL.",
                               "For example https://hooks.example.com/tallykey", field="url")
    if len(url) > MAX_URL_LENGTH:
        raise ValidationFailed(f"A webhook URL is at most {MAX_URL_LENGTH} characters.",
                               field="url")
    if not allow_private and _names_a_private_host(parts.hostname):
        raise ValidationFailed(
            f"Webhook URL {shown_url(url)!r} points at a private, loopback or link-local "
            "address; webhooks go to public endpoints only.",
            "Use a public https:// URL, or have the operator set "
            "TALLYKEY_WEBHOOK_PRIVATE_TARGETS=true for internal receivers.", field="url")
    return url


def shown_url(url: str) -> str:
    """A webhook URL as lists and logs show it: without its query string or fragment
    (receivers often put a credential there)."""
    cut = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=len(url))
    return url[:cut] + ("?…" if cut < len(url) else "")


def _is_public(address: str) -> bool:
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    return parsed.is_global and not parsed.is_multicast


def _names_a_private_host(host: str) -> bool:
    """An IP literal that is not public, or a name that is local by definition."""
    host = host.rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False  # a name: resolved and checked when a delivery is made
    return not _is_public(host)


def private_addresses(host: str, port: int) -> list[str]:
    """The non-public addresses `host` resolves to now (empty when all are public).
    Raises `OSError` when it does not resolve."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos if not _is_public(str(info[4][0]))})


class WebhookService:
    """Verbs on an account's webhook endpoints (admins only, audited)."""

    def __init__(self, database: Database, clock: Clock, *, allow_private: bool = False
                 ) -> None:
        self.database = database
        self.clock = clock
        self.allow_private = allow_private

    def add(self, actor: Actor, url: str) -> tuple[WebhookEndpoint, str]:
        """Register an endpoint; returns it with its signing secret (shown this once)."""
        _require_admin(actor)
        url = clean_url(url, self.allow_private)
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        now = self.clock.now()
        with self.database.transaction() as session:
            endpoint = WebhookEndpoint(account_id=actor.account_id, url=url, secret=secret,
                                       active=True, created_at=now)
            session.add(endpoint)
            session.flush()
            trail.record(session, actor=actor, action="webhook.created", at=now,
                         target_type="webhook", target_id=endpoint.id,
                         details={"url": shown_url(url)})
            return endpoint, secret

    def list(self, actor: Actor) -> list[WebhookEndpoint]:
        _require_admin(actor)
        with self.database.reading() as session:
            return list(session.scalars(select(WebhookEndpoint).where(
                WebhookEndpoint.account_id == actor.account_id)
                .order_by(WebhookEndpoint.created_at)))

    def disable(self, actor: Actor, endpoint_id: str) -> WebhookEndpoint:
        """Stop sending to an endpoint; deliveries still queued for it are dropped (dead)."""
        _require_admin(actor)
        with self.database.transaction() as session:
            endpoint = session.get(WebhookEndpoint, endpoint_id)
            if endpoint is None or endpoint.account_id != actor.account_id:
                raise NotFound("No such webhook endpoint in this account.", field="webhook")
            if endpoint.active:
                endpoint.active = False
                trail.record(session, actor=actor, action="webhook.disabled",
                             at=self.clock.now(), target_type="webhook",
                             target_id=endpoint.id)
            return endpoint


def _require_admin(actor: Actor) -> None:
    if not actor.is_admin:
        raise PermissionDenied("Only account administrators can manage webhooks.")


class WebhookChannel:
    """Delivers outbox rows of kind `webhook` with httpx; any 2xx is success."""

    def __init__(self, database: Database, clock: Clock,
                 client: httpx.Client | None = None, *, allow_private: bool = False) -> None:
        self.database = database
        self.clock = clock
        self.allow_private = allow_private
        self.client = client or httpx.Client(timeout=TIMEOUT_SECONDS, follow_redirects=False,
                                             headers={"User-Agent": "tallykey-webhooks/1"})

    def deliver(self, messages: Sequence[OutboxMessage]
                ) -> Iterator[tuple[OutboxMessage, DeliveryError | None]]:
        ids = {m.endpoint_id for m in messages if m.endpoint_id}
        with self.database.reading() as session:
            endpoints = {e.id: e for e in session.scalars(
                select(WebhookEndpoint).where(WebhookEndpoint.id.in_(ids)))}
        for message in messages:
            endpoint = endpoints.get(message.endpoint_id or "")
            if endpoint is None or not endpoint.active:
                yield message, DeliveryError("webhook endpoint disabled", permanent=True)
                continue
            yield message, self._post(endpoint, message)

    def _post(self, endpoint: WebhookEndpoint, message: OutboxMessage) -> DeliveryError | None:
        refused = None if self.allow_private else self._refused_target(endpoint.url)
        if refused is not None:
            return refused
        timestamp = int(self.clock.now().timestamp())
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(endpoint.secret, message.body, timestamp, message.id),
            "Tallykey-Event": message.event,
            "Tallykey-Delivery": message.id,
        }
        try:
            response = self.client.post(endpoint.url, content=message.body.encode(),
                                        headers=headers)
        except httpx.HTTPError as error:
            return DeliveryError(f"{error.__class__.__name__}: {str(error)[:200]}")
        if 200 <= response.status_code < 300:
            return None
        # 410 Gone: the receiver says this endpoint is no more.
        return DeliveryError(f"HTTP {response.status_code}",
                             permanent=response.status_code == 410)

    @staticmethod
    def _refused_target(url: str) -> DeliveryError | None:
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            private = private_addresses(host, port)
        except (OSError, ValueError) as error:
            return DeliveryError(f"cannot resolve {host}: {error.__class__.__name__}")
        if private or _names_a_private_host(host):
            return DeliveryError(f"{host} resolves to a non-public address "
                                 f"({', '.join(private) or host}); refused", permanent=True)
        return None

    def close(self) -> None:
        self.client.close()
