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

After a secret is rotated, the old secret keeps signing beside the new one for 24 hours
(`SECRET_OVERLAP`, judged on the database's clock): the header then carries two `v1=`
values, `t=…,d=…,v1=<with the new secret>,v1=<with the old secret>`, and a receiver that
knows either secret accepts the delivery.

`EVENT_TYPES` is the catalog of every event type a webhook can carry; a delivery of a type
not in it is refused (so a new event cannot ship without its entry, its row in
docs/integrations.md and its test, see tests/notify/test_event_catalog.py).

Signing secrets must be read to sign, so they are kept retrievable: sealed with AES-256-GCM
under the key-encryption key (`TALLYKEY_KEK`) when one is configured, with the endpoint id
as associated data (`tallykey keys rotate` re-seals them, and seals any kept plain from
before a key was configured); without a key they are kept as they are.

Endpoints on private, loopback, link-local or otherwise non-public addresses (a database
port, a cloud metadata service) are refused when added and again when a delivery is made
(names are resolved then, and the request goes to the address checked, not to a second
resolution that a rebinding name could point at loopback), unless the operator allows
them (`TALLYKEY_WEBHOOK_PRIVATE_TARGETS=true`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
import ssl
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from tallykey.actor import Actor
from tallykey.audit import trail
from tallykey.clock import Clock
from tallykey.db.base import new_id
from tallykey.db.engine import Database
from tallykey.errors import (
    DeliveryError,
    KeyConfigError,
    NotFound,
    PermissionDenied,
    SignatureInvalid,
    ValidationFailed,
)
from tallykey.keys.keyring import KeyRing
from tallykey.notify import outbox
from tallykey.notify.models import WEBHOOK, OutboxMessage, WebhookEndpoint
from tallykey.notify.outbox import Draft
from tallykey.tokens import events as token_events
from tallykey.tokens import policy
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

#: Every event type a webhook can carry, with what it announces. docs/integrations.md
#: ("Webhook events") has one row per entry, and tests/notify/test_event_catalog.py one
#: delivery test per entry: add all three together.
EVENT_TYPES: dict[str, str] = {
    token_events.TOKEN_CREATED: "a token was issued",
    token_events.TOKEN_UPDATED: "a token's name, scopes, allow-list or other settings changed",
    token_events.TOKEN_ROTATED: "a token's secret was replaced (the old one may work during "
                                "a grace period)",
    token_events.TOKEN_REVOKED: "a token was revoked (by a person, the operator, a leak "
                                "report or the inactivity policy)",
    token_events.TOKEN_SUSPENDED: "a token was suspended: refused until resumed",
    token_events.TOKEN_RESUMED: "a suspended token works again",
    token_events.TOKEN_RENEWED: "a token was renewed: a successor was issued",
    token_events.TOKEN_SECRET_RETRIEVED: "an administrator retrieved an application "
                                         "token's secret",
    token_events.TOKEN_APPROVED: "an administrator approved a pending token: it works now",
    token_events.TOKEN_DENIED: "an administrator denied a pending token: it is revoked "
                               "for good",
    TOKEN_EXPIRING: "a token expires soon (on each reminder day)",
    TOKEN_EXPIRED: "a token has expired",
    TOKEN_NEW_NETWORK: "a token was used from a network it was never used from",
    TOKEN_DENIED_SPIKE: "many requests with a token were refused",
    TOKEN_OLD_SECRET_USED: "a rotated token's old secret was used during its grace period",
    TOKEN_MANY_NETWORKS: "a token was used from many networks within a minute",
    TOKEN_DECOY_USED: "a decoy token was used (it granted nothing)",
}

#: How long the secret before a rotation keeps signing beside the new one.
SECRET_OVERLAP = timedelta(hours=24)
MAX_DESCRIPTION_LENGTH = 500
DELIVERY_LOG_LIMIT = 100


def sign(secret: str, body: str, timestamp: int, delivery: str | None = None) -> str:
    """The `Tallykey-Signature` header value for `body` sent at `timestamp` as
    `delivery` (the delivery id is signed too)."""
    signed = f"{timestamp}.{body}" if delivery is None else f"{timestamp}.{delivery}.{body}"
    digest = hmac.new(secret.encode(), signed.encode(), hashlib.sha256)
    if delivery is None:
        return f"t={timestamp},v1={digest.hexdigest()}"
    return f"t={timestamp},d={delivery},v1={digest.hexdigest()}"


def secret_aad(endpoint_id: str) -> bytes:
    """What a sealed signing secret is bound to: its endpoint (a copy moved onto another
    endpoint's row does not open)."""
    return f"tallykey/webhook-secret/{endpoint_id}".encode()


def signing_secrets(endpoint: WebhookEndpoint, now: datetime,
                    overlap: timedelta = SECRET_OVERLAP) -> list[str]:
    """The secrets (as stored: sealed or plain) that sign a delivery made at `now`: the
    current one, then the one before the last rotation while the overlap lasts."""
    found = [endpoint.secret]
    if (endpoint.previous_secret and endpoint.secret_rotated_at is not None
            and now < endpoint.secret_rotated_at + overlap):
        found.append(endpoint.previous_secret)
    return found


def sign_all(secrets_: Sequence[str], body: str, timestamp: int, delivery: str) -> str:
    """The header value signed with each of `secrets_`: one `t`, one `d`, one `v1` each."""
    header = sign(secrets_[0], body, timestamp, delivery)
    for other in secrets_[1:]:
        header += ",v1=" + sign(other, body, timestamp, delivery).rpartition("v1=")[2]
    return header


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
    """One outbox draft per enabled endpoint of the token's account whose event filter
    lets `event` through. Raises ValueError for an event type not in `EVENT_TYPES`."""
    if event not in EVENT_TYPES:
        raise ValueError(f"webhook event {event!r} is not in EVENT_TYPES (add it there, to "
                         "docs/integrations.md and to tests/notify/test_event_catalog.py)")
    endpoints = session.scalars(select(WebhookEndpoint).where(
        WebhookEndpoint.account_id == token.account_id, WebhookEndpoint.active.is_(True),
        WebhookEndpoint.deleted_at.is_(None))
        .order_by(WebhookEndpoint.created_at))
    body = None
    drafts = []
    for endpoint in endpoints:
        if endpoint.events and event not in endpoint.events:
            continue
        body = body or event_body(notice=notice, event=event, occurred_at=occurred_at,
                                  token=token, actor=actor, details=details)
        drafts.append(Draft(channel=WEBHOOK, event=event, notice=notice,
                            recipient=shown_url(endpoint.url), body=body, subject=event,
                            token_id=token.id, endpoint_id=endpoint.id))
    return drafts


def clean_url(url: str, allow_private: bool = False) -> str:
    """A webhook URL as stored; `ValidationFailed` saying what is wrong with any other."""
    url = url.strip()
    try:
        parts = urlsplit(url)
        scheme, hostname = parts.scheme, parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        scheme, hostname = "", None
    if any(ord(c) < 0x21 or c == "\x7f" for c in url):
        raise ValidationFailed("A webhook URL cannot contain spaces or control characters.",
                               "Percent-encode them.", field="url")
    if scheme not in ("https", "http") or not hostname:
        raise ValidationFailed(f"Webhook URL {shown_url(url)[:200]!r} must be an http:// or "
                               "https:// URL with a valid host and port.",
                               "For example https://hooks.example.com/tallykey", field="url")
    if len(url) > MAX_URL_LENGTH:
        raise ValidationFailed(f"A webhook URL is at most {MAX_URL_LENGTH} characters.",
                               field="url")
    if not allow_private and _names_a_private_host(hostname):
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


def resolved_addresses(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to now, in the resolver's order (an IPv6 zone
    dropped). Raises `OSError` when it does not resolve."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))


def clean_events(events: Iterable[str]) -> list[str]:
    """An event filter: known event types, each once, in catalog order (empty = all)."""
    wanted = [str(e).strip() for e in events]
    unknown = sorted({e for e in wanted if e not in EVENT_TYPES})
    if unknown:
        raise ValidationFailed(
            f"Unknown webhook event type{'s' if len(unknown) > 1 else ''}: "
            + ", ".join(repr(e) for e in unknown) + ".",
            "Use any of " + ", ".join(EVENT_TYPES) + " (or none, for every event).",
            field="events")
    return [e for e in EVENT_TYPES if e in wanted]


def clean_description(description: str) -> str:
    """As a token's description (but at most 500 characters): nothing shaped like a token,
    no control characters."""
    if len(description.strip()) > MAX_DESCRIPTION_LENGTH:
        raise ValidationFailed(
            f"A webhook description is at most {MAX_DESCRIPTION_LENGTH} characters.",
            field="description")
    return policy.clean_description(description)


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


class WebhookService:
    """Verbs on an account's webhook endpoints (admins only, audited): add, list, get,
    update, delete, rotate the secret, read the delivery log, retry a delivery."""

    def __init__(self, database: Database, clock: Clock, *, allow_private: bool = False,
                 keyring: KeyRing | None = None) -> None:
        self.database = database
        self.clock = clock
        self.allow_private = allow_private
        self.keyring = keyring

    def _stored(self, endpoint_id: str, secret: str) -> str:
        """A signing secret as the row keeps it: sealed under the KEK when there is one."""
        if self.keyring is None:
            return secret
        from tallykey.keys.vault import seal_value  # cryptography: the server's, not embedded
        return seal_value(self.keyring, secret, secret_aad(endpoint_id))

    def add(self, actor: Actor, url: str, *, description: str = "",
            events: Iterable[str] = (), enabled: bool = True) -> tuple[WebhookEndpoint, str]:
        """Register an endpoint; returns it with its signing secret (shown this once)."""
        _require_admin(actor)
        url = clean_url(url, self.allow_private)
        description = clean_description(description)
        chosen = clean_events(events)
        secret = new_secret()
        now = self.clock.now()
        endpoint_id = new_id()
        with self.database.transaction() as session:
            endpoint = WebhookEndpoint(id=endpoint_id, account_id=actor.account_id, url=url,
                                       secret=self._stored(endpoint_id, secret),
                                       description=description, events=chosen,
                                       active=enabled, created_at=now)
            session.add(endpoint)
            session.flush()
            trail.record(session, actor=actor, action="webhook.created", at=now,
                         target_type="webhook", target_id=endpoint.id,
                         details={"url": shown_url(url), "events": chosen,
                                  "enabled": enabled})
            return endpoint, secret

    def get(self, actor: Actor, endpoint_id: str) -> WebhookEndpoint:
        """One endpoint of the actor's account; `NotFound` for any other (another
        account's is not told apart from one that does not exist)."""
        _require_admin(actor)
        with self.database.reading() as session:
            return _endpoint_of(session, actor, endpoint_id)

    def update(self, actor: Actor, endpoint_id: str, *, url: str | None = None,
               description: str | None = None, events: Iterable[str] | None = None,
               enabled: bool | None = None) -> WebhookEndpoint:
        """Change what is given; audited with the fields that changed."""
        _require_admin(actor)
        url = clean_url(url, self.allow_private) if url is not None else None
        description = clean_description(description) if description is not None else None
        chosen = clean_events(events) if events is not None else None
        now = self.clock.now()
        with self.database.transaction() as session:
            endpoint = _endpoint_of(session, actor, endpoint_id, lock=True)
            changed: dict[str, Any] = {}
            if url is not None and url != endpoint.url:
                changed["url"] = [shown_url(endpoint.url), shown_url(url)]
                endpoint.url = url
            if description is not None and description != endpoint.description:
                changed["description"] = [endpoint.description, description]
                endpoint.description = description
            if chosen is not None and chosen != list(endpoint.events):
                changed["events"] = [list(endpoint.events), chosen]
                endpoint.events = chosen
            if enabled is not None and enabled != endpoint.active:
                changed["enabled"] = [endpoint.active, enabled]
                endpoint.active = enabled
            if changed:
                endpoint.updated_at = now
                trail.record(session, actor=actor, action="webhook.updated", at=now,
                             target_type="webhook", target_id=endpoint.id, details=changed)
            return endpoint

    def disable(self, actor: Actor, endpoint_id: str) -> WebhookEndpoint:
        """Stop sending to an endpoint; deliveries still queued for it are dropped (dead)."""
        return self.update(actor, endpoint_id, enabled=False)

    def delete(self, actor: Actor, endpoint_id: str) -> WebhookEndpoint:
        """Remove an endpoint: nothing more is sent to it (queued deliveries end dead),
        it is no longer listed, and its secrets are forgotten. Its delivery rows stay
        in the outbox until purged."""
        _require_admin(actor)
        now = self.clock.now()
        with self.database.transaction() as session:
            endpoint = _endpoint_of(session, actor, endpoint_id, lock=True)
            endpoint.active = False
            endpoint.deleted_at = now
            endpoint.secret = ""
            endpoint.previous_secret = None
            trail.record(session, actor=actor, action="webhook.deleted", at=now,
                         target_type="webhook", target_id=endpoint.id,
                         details={"url": shown_url(endpoint.url)})
            return endpoint

    def rotate_secret(self, actor: Actor, endpoint_id: str) -> tuple[WebhookEndpoint, str]:
        """A new signing secret (returned, shown this once). The current one becomes the
        previous one and keeps signing beside it for `SECRET_OVERLAP`; a secret from
        before an earlier rotation stops at once."""
        _require_admin(actor)
        secret = new_secret()
        now = self.clock.now()
        with self.database.transaction() as session:
            endpoint = _endpoint_of(session, actor, endpoint_id, lock=True)
            endpoint.previous_secret = endpoint.secret
            endpoint.secret = self._stored(endpoint.id, secret)
            endpoint.secret_rotated_at = now
            endpoint.updated_at = now
            trail.record(session, actor=actor, action="webhook.secret_rotated", at=now,
                         target_type="webhook", target_id=endpoint.id,
                         details={"old_secret_signs_until":
                                  (now + SECRET_OVERLAP).isoformat()})
            return endpoint, secret

    def deliveries(self, actor: Actor, endpoint_id: str,
                   limit: int = DELIVERY_LOG_LIMIT) -> list[OutboxMessage]:
        """The endpoint's deliveries, newest first (sent ones until the outbox is purged)."""
        _require_admin(actor)
        if not 1 <= limit <= 1000:
            raise ValidationFailed("limit must be between 1 and 1000.", field="limit")
        with self.database.reading() as session:
            endpoint = _endpoint_of(session, actor, endpoint_id)
            return list(session.scalars(select(OutboxMessage).where(
                OutboxMessage.account_id == actor.account_id,
                OutboxMessage.endpoint_id == endpoint.id)
                .order_by(OutboxMessage.created_at.desc(), OutboxMessage.id.desc())
                .limit(limit)))

    def retry(self, actor: Actor, endpoint_id: str, delivery_id: str) -> OutboxMessage:
        """Queue a dead or waiting delivery again now (attempts start over); the worker
        sends it on its next pass. A delivery already sent is refused."""
        _require_admin(actor)
        now = self.clock.now()
        with self.database.reading() as session:
            endpoint = _endpoint_of(session, actor, endpoint_id)
            message = session.get(OutboxMessage, delivery_id)
            if (message is None or message.endpoint_id != endpoint.id
                    or message.account_id != actor.account_id):
                raise NotFound("No such delivery for this webhook endpoint.",
                               f"List them with GET /api/v1/webhooks/{endpoint.id}/deliveries.",
                               field="delivery")
            if not endpoint.active:
                raise ValidationFailed("This webhook endpoint is disabled; enable it "
                                       "before retrying its deliveries.", field="enabled")
        outbox.retry(self.database, now, message_id=message.id)
        with self.database.transaction() as session:
            trail.record(session, actor=actor, action="webhook.delivery_retried", at=now,
                         target_type="webhook", target_id=endpoint.id,
                         details={"delivery": message.id, "event": message.event})
            retried = session.get_one(OutboxMessage, message.id)
            session.expunge(retried)
            return retried


    def reseal(self) -> int:
        """Seal every signing secret under the current KEK (those sealed under an older
        key, and those kept plain); one endpoint per transaction, so an interrupted run
        resumes. Returns how many endpoints changed. For `tallykey keys rotate`."""
        keyring = self.keyring
        if keyring is None:
            return 0
        with self.database.reading() as session:
            ids = list(session.scalars(select(WebhookEndpoint.id).where(
                WebhookEndpoint.deleted_at.is_(None))))
        from tallykey.keys.vault import open_value, seal_value, sealed_key_id
        changed = 0
        for endpoint_id in ids:
            with self.database.transaction() as session:
                endpoint = session.scalar(select(WebhookEndpoint).where(
                    WebhookEndpoint.id == endpoint_id).with_for_update())
                if endpoint is None:
                    continue
                aad = secret_aad(endpoint.id)
                moved = False
                for column in ("secret", "previous_secret"):
                    stored = getattr(endpoint, column)
                    if stored and sealed_key_id(stored) != keyring.current_id:
                        setattr(endpoint, column, seal_value(
                            keyring, open_value(keyring, stored, aad), aad))
                        moved = True
                changed += moved
        return changed

    def list(self, actor: Actor) -> list[WebhookEndpoint]:
        """The account's endpoints (deleted ones are gone), oldest first."""
        _require_admin(actor)
        with self.database.reading() as session:
            return list(session.scalars(select(WebhookEndpoint).where(
                WebhookEndpoint.account_id == actor.account_id,
                WebhookEndpoint.deleted_at.is_(None))
                .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)))

def _endpoint_of(session: Session, actor: Actor, endpoint_id: str,
                 lock: bool = False) -> WebhookEndpoint:
    statement = select(WebhookEndpoint).where(
        WebhookEndpoint.id == endpoint_id, WebhookEndpoint.account_id == actor.account_id,
        WebhookEndpoint.deleted_at.is_(None))
    endpoint = session.scalar(statement.with_for_update() if lock else statement)
    if endpoint is None:
        raise NotFound("No such webhook endpoint in this account.",
                       "List them with GET /api/v1/webhooks.", field="webhook")
    return endpoint


def _require_admin(actor: Actor) -> None:
    if not actor.is_admin:
        raise PermissionDenied("Only account administrators can manage webhooks.")


def delivery_client(verify: ssl.SSLContext | bool = True) -> httpx.Client:
    """The HTTP client of deliveries: no redirects, and no connection kept alive — a
    delivery connects to the address it checked (`WebhookChannel._public_address`), and
    the pool knows addresses only, so a kept connection could carry another host name's
    delivery past that name's certificate check."""
    return httpx.Client(timeout=TIMEOUT_SECONDS, follow_redirects=False, verify=verify,
                        limits=httpx.Limits(max_keepalive_connections=0),
                        headers={"User-Agent": "tallykey-webhooks/1"})


class WebhookChannel:
    """Delivers outbox rows of kind `webhook` with httpx; any 2xx is success."""

    def __init__(self, database: Database, clock: Clock,
                 client: httpx.Client | None = None, *, allow_private: bool = False,
                 overlap: timedelta = SECRET_OVERLAP, keyring: KeyRing | None = None) -> None:
        self.database = database
        self.clock = clock
        self.allow_private = allow_private
        self.overlap = overlap
        self.keyring = keyring
        self.client = client or delivery_client()

    def deliver(self, messages: Sequence[OutboxMessage]
                ) -> Iterator[tuple[OutboxMessage, DeliveryError | None]]:
        ids = {m.endpoint_id for m in messages if m.endpoint_id}
        with self.database.reading() as session:
            endpoints = {e.id: e for e in session.scalars(
                select(WebhookEndpoint).where(WebhookEndpoint.id.in_(ids)))}
        for message in messages:
            endpoint = endpoints.get(message.endpoint_id or "")
            if endpoint is None or endpoint.deleted_at is not None:
                yield message, DeliveryError("webhook endpoint deleted", permanent=True)
                continue
            if not endpoint.active:
                yield message, DeliveryError("webhook endpoint disabled", permanent=True)
                continue
            yield message, self._post(endpoint, message)

    def _post(self, endpoint: WebhookEndpoint, message: OutboxMessage) -> DeliveryError | None:
        url: str | httpx.URL = endpoint.url
        pinned: dict[str, str] = {}
        extensions: dict[str, Any] = {}
        if not self.allow_private:
            checked = self._public_address(endpoint.url)
            if isinstance(checked, DeliveryError):
                return checked
            # Connect to the address just checked, never to a fresh resolution of the
            # name (DNS rebinding): the name goes in Host, and in TLS in SNI and the
            # certificate check.
            target = httpx.URL(endpoint.url)
            url = target.copy_with(host=checked)
            pinned["Host"] = target.netloc.decode("ascii")
            if target.scheme == "https":
                extensions["sni_hostname"] = target.raw_host.decode("ascii")
        now = self.clock.now()
        timestamp = int(now.timestamp())
        from tallykey.keys.vault import open_value  # cryptography: the server's, not embedded
        try:
            signing = [open_value(self.keyring, stored, secret_aad(endpoint.id))
                       for stored in signing_secrets(endpoint, now, self.overlap)]
        except KeyConfigError as error:  # a missing key: retried once it is configured
            return DeliveryError(f"cannot open the signing secret: {error.message}")
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign_all(signing, message.body, timestamp, message.id),
            "Tallykey-Event": message.event,
            "Tallykey-Delivery": message.id,
            **pinned,
        }
        try:
            response = self.client.post(url, content=message.body.encode(),
                                        headers=headers, extensions=extensions)
        except httpx.HTTPError as error:
            return DeliveryError(f"{error.__class__.__name__}: {str(error)[:200]}")
        if 200 <= response.status_code < 300:
            return None
        # 410 Gone: the receiver says this endpoint is no more.
        return DeliveryError(f"HTTP {response.status_code}",
                             permanent=response.status_code == 410)

    @staticmethod
    def _public_address(url: str) -> str | DeliveryError:
        """The address to connect to for `url`: the first its host resolves to now, when
        every one is public; else why the delivery is refused."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            found = resolved_addresses(host, port)
        except (OSError, ValueError) as error:
            return DeliveryError(f"cannot resolve {host}: {error.__class__.__name__}")
        private = sorted({a for a in found if not _is_public(a)})
        if private or not found or _names_a_private_host(host):
            return DeliveryError(f"{host} resolves to a non-public address "
                                 f"({', '.join(private) or host}); refused", permanent=True)
        return found[0]

    def close(self) -> None:
        self.client.close()
