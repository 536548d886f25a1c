"""Self-serve webhooks over the API (SPEC §17), for account administrators: endpoints with
an event filter, their signing secret (shown at creation and at rotation only), the
delivery log and retries. Thin adapters over `tallykey.notify.webhooks.WebhookService`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from tallykey.api.deps import ManagementActor, RuntimeDep
from tallykey.api.responses import error_responses
from tallykey.api.schemas import Strict
from tallykey.notify.models import OutboxMessage, WebhookEndpoint
from tallykey.notify.webhooks import (
    DELIVERY_LOG_LIMIT,
    EVENT_TYPES,
    MAX_DESCRIPTION_LENGTH,
    MAX_URL_LENGTH,
    SECRET_OVERLAP,
)
from tallykey.tokens.schemas import Timestamp

router = APIRouter(prefix="/api/v1", tags=["webhooks"],
                   responses=error_responses(400, 401, 403, 404, 422, 429, 503))

EVENTS_HELP = ("Event types to send (any of " + ", ".join(EVENT_TYPES)
               + "); empty or absent: every event.")


class WebhookCreate(Strict):
    url: str = Field(max_length=MAX_URL_LENGTH, description="https:// URL that receives events")
    description: str = Field(default="", max_length=MAX_DESCRIPTION_LENGTH)
    events: list[str] = Field(default_factory=list, max_length=len(EVENT_TYPES) * 2,
                              description=EVENTS_HELP)
    enabled: bool = True


class WebhookUpdate(Strict):
    url: str | None = Field(default=None, max_length=MAX_URL_LENGTH)
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION_LENGTH)
    events: list[str] | None = Field(default=None, max_length=len(EVENT_TYPES) * 2,
                                     description=EVENTS_HELP)
    enabled: bool | None = None


class WebhookView(BaseModel):
    """An endpoint, never its secret."""

    id: str
    url: str
    description: str
    events: list[str] = Field(description="the event filter; empty: every event")
    enabled: bool
    created_at: Timestamp
    updated_at: Timestamp | None
    secret_rotated_at: Timestamp | None
    previous_secret_expires_at: Timestamp | None = Field(
        description="until when the secret before the last rotation still signs "
                    "deliveries beside the current one (null: it no longer does)")

    @classmethod
    def of(cls, endpoint: WebhookEndpoint) -> WebhookView:
        rotated = endpoint.secret_rotated_at
        return cls(id=endpoint.id, url=endpoint.url, description=endpoint.description,
                   events=list(endpoint.events), enabled=endpoint.active,
                   created_at=endpoint.created_at, updated_at=endpoint.updated_at,
                   secret_rotated_at=rotated,
                   previous_secret_expires_at=(rotated + SECRET_OVERLAP
                                               if rotated and endpoint.previous_secret
                                               else None))


class WebhookWithSecret(WebhookView):
    secret: str = Field(description="the signing secret: shown in this answer only")


class DeliveryView(BaseModel):
    id: str = Field(description="also sent as the Tallykey-Delivery header")
    event: str
    status: str = Field(description="pending, sending, sent or dead")
    status_code: int | None = Field(description="the receiver's HTTP status of the last "
                                    "failed attempt (null when the receiver never answered, "
                                    "or when the delivery was sent: it got a 2xx)")
    attempts: int
    last_error: str | None
    created_at: Timestamp
    next_attempt_at: Timestamp
    sent_at: Timestamp | None

    @classmethod
    def of(cls, message: OutboxMessage) -> DeliveryView:
        error = message.last_error or ""
        code = int(error[5:8]) if error.startswith("HTTP ") and error[5:8].isdigit() else None
        return cls(id=message.id, event=message.event, status=message.status,
                   status_code=code, attempts=message.attempts, last_error=message.last_error,
                   created_at=message.created_at, next_attempt_at=message.next_attempt_at,
                   sent_at=message.sent_at)


@router.get("/webhooks", response_model=list[WebhookView])
def list_webhooks(actor: ManagementActor, runtime: RuntimeDep) -> list[WebhookView]:
    """The account's webhook endpoints (administrators)."""
    return [WebhookView.of(e) for e in runtime.webhooks.list(actor)]


@router.post("/webhooks", status_code=201, response_model=WebhookWithSecret)
def create_webhook(body: WebhookCreate, actor: ManagementActor,
                   runtime: RuntimeDep) -> WebhookWithSecret:
    """Add an endpoint. The answer carries its signing secret, once."""
    endpoint, secret = runtime.webhooks.add(actor, body.url, description=body.description,
                                            events=body.events, enabled=body.enabled)
    return WebhookWithSecret(**WebhookView.of(endpoint).model_dump(), secret=secret)


@router.get("/webhooks/{webhook_id}", response_model=WebhookView)
def get_webhook(webhook_id: str, actor: ManagementActor, runtime: RuntimeDep) -> WebhookView:
    return WebhookView.of(runtime.webhooks.get(actor, webhook_id))


@router.patch("/webhooks/{webhook_id}", response_model=WebhookView)
def update_webhook(webhook_id: str, body: WebhookUpdate, actor: ManagementActor,
                   runtime: RuntimeDep) -> WebhookView:
    """Change the URL, description, event filter or enabled flag (what is given)."""
    return WebhookView.of(runtime.webhooks.update(
        actor, webhook_id, url=body.url, description=body.description, events=body.events,
        enabled=body.enabled))


@router.delete("/webhooks/{webhook_id}", status_code=204)
def delete_webhook(webhook_id: str, actor: ManagementActor, runtime: RuntimeDep) -> Response:
    """Delete an endpoint: nothing more is sent to it, deliveries still queued end dead."""
    runtime.webhooks.delete(actor, webhook_id)
    return Response(status_code=204)


@router.post("/webhooks/{webhook_id}/rotate-secret", response_model=WebhookWithSecret)
def rotate_webhook_secret(webhook_id: str, actor: ManagementActor,
                          runtime: RuntimeDep) -> WebhookWithSecret:
    """A new signing secret, in this answer only. For 24 hours every delivery is signed
    with both the new and the old secret (two `v1=` values in `Tallykey-Signature`), so
    the receiver can switch to the new one at its own pace."""
    endpoint, secret = runtime.webhooks.rotate_secret(actor, webhook_id)
    return WebhookWithSecret(**WebhookView.of(endpoint).model_dump(), secret=secret)


@router.get("/webhooks/{webhook_id}/deliveries", response_model=list[DeliveryView])
def list_deliveries(webhook_id: str, actor: ManagementActor, runtime: RuntimeDep,
                    limit: Annotated[int, Query(ge=1, le=1000)] = DELIVERY_LOG_LIMIT,
                    ) -> list[DeliveryView]:
    """The endpoint's deliveries, newest first."""
    return [DeliveryView.of(m) for m in runtime.webhooks.deliveries(actor, webhook_id, limit)]


@router.post("/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
             response_model=DeliveryView)
def retry_delivery(webhook_id: str, delivery_id: str, actor: ManagementActor,
                   runtime: RuntimeDep) -> DeliveryView:
    """Queue a dead or waiting delivery again now (attempts start over); the worker sends
    it on its next pass, signed afresh. A delivery already sent is refused (422)."""
    return DeliveryView.of(runtime.webhooks.retry(actor, webhook_id, delivery_id))
