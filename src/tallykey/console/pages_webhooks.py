"""The webhooks page (administrators, SPEC §17): list and add endpoints, edit one's URL,
description, event filter and enabled flag, rotate its secret (the new one shown once, on
the answer to the form, never cached), delete it, and read its delivery log with a retry
for a delivery that failed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from tallykey.console.forms import text, texts
from tallykey.console.web import (
    PREFIX,
    AdminDep,
    ConsoleRoute,
    FormDep,
    RuntimeDep,
    Viewer,
    redirect,
    render,
)
from tallykey.errors import ValidationFailed
from tallykey.notify.models import WebhookEndpoint
from tallykey.notify.webhooks import EVENT_TYPES, SECRET_OVERLAP
from tallykey.runtime import Runtime

router = APIRouter(route_class=ConsoleRoute)
NOTICES = {"saved": "Changes saved.", "deleted": "Webhook endpoint deleted.",
           "retried": "Delivery queued again: the worker sends it on its next pass."}
FIELDS = ("url", "description")


def _said(error: ValidationFailed) -> str:
    return error.message + (f" {error.hint}" if error.hint else "")


def _list_page(request: Request, viewer: Viewer, runtime: Runtime, status: int = 200,
               error: str = "", values: dict[str, Any] | None = None,
               notice: str = "") -> Response:
    return render(request, "webhooks.html", status_code=status,
                  endpoints=runtime.webhooks.list(viewer.actor), event_types=EVENT_TYPES,
                  error=error, values=values or {"events": [], "enabled": True},
                  notice=notice)


def _detail_page(request: Request, viewer: Viewer, runtime: Runtime,
                 endpoint: WebhookEndpoint, status: int = 200, error: str = "",
                 values: dict[str, Any] | None = None, notice: str = "") -> Response:
    now = runtime.clock.now()
    overlap_until = (endpoint.secret_rotated_at + SECRET_OVERLAP
                     if endpoint.secret_rotated_at and endpoint.previous_secret else None)
    return render(request, "webhook_detail.html", status_code=status, endpoint=endpoint,
                  event_types=EVENT_TYPES, error=error, notice=notice, now=now,
                  overlap_until=overlap_until if overlap_until and overlap_until > now
                  else None,
                  deliveries=runtime.webhooks.deliveries(viewer.actor, endpoint.id),
                  values=values or {"url": endpoint.url, "description": endpoint.description,
                                    "events": list(endpoint.events),
                                    "enabled": endpoint.active})


def _secret_page(request: Request, endpoint: WebhookEndpoint, secret: str, what: str,
                 runtime: Runtime) -> Response:
    return render(request, "webhook_secret.html",
                  headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
                  endpoint=endpoint, secret=secret, what=what,
                  overlap_until=runtime.clock.now() + SECRET_OVERLAP)


@router.get("/webhooks")
def webhooks_page(request: Request, viewer: AdminDep, runtime: RuntimeDep,
                  done: str = "") -> Response:
    return _list_page(request, viewer, runtime, notice=NOTICES.get(done, ""))


@router.post("/webhooks")
def add_webhook(request: Request, viewer: AdminDep, form: FormDep,
                runtime: RuntimeDep) -> Response:
    values: dict[str, Any] = {k: text(form, k) for k in FIELDS}
    values["events"] = texts(form, "events")
    values["enabled"] = text(form, "enabled") == "on"
    try:
        endpoint, secret = runtime.webhooks.add(
            viewer.actor, values["url"], description=values["description"],
            events=values["events"], enabled=values["enabled"])
    except ValidationFailed as error:
        return _list_page(request, viewer, runtime, status=422, error=_said(error),
                          values=values)
    return _secret_page(request, endpoint, secret, "added", runtime)


@router.get("/webhooks/{webhook_id}")
def webhook_page(request: Request, webhook_id: str, viewer: AdminDep, runtime: RuntimeDep,
                 done: str = "") -> Response:
    endpoint = runtime.webhooks.get(viewer.actor, webhook_id)
    return _detail_page(request, viewer, runtime, endpoint, notice=NOTICES.get(done, ""))


@router.post("/webhooks/{webhook_id}")
def save_webhook(request: Request, webhook_id: str, viewer: AdminDep, form: FormDep,
                 runtime: RuntimeDep) -> Response:
    values: dict[str, Any] = {k: text(form, k) for k in FIELDS}
    values["events"] = texts(form, "events")
    values["enabled"] = text(form, "enabled") == "on"
    try:
        runtime.webhooks.update(viewer.actor, webhook_id, url=values["url"],
                                description=values["description"], events=values["events"],
                                enabled=values["enabled"])
    except ValidationFailed as error:
        endpoint = runtime.webhooks.get(viewer.actor, webhook_id)
        return _detail_page(request, viewer, runtime, endpoint, status=422,
                            error=_said(error), values=values)
    return redirect(f"{PREFIX}/webhooks/{webhook_id}?done=saved")


@router.post("/webhooks/{webhook_id}/rotate")
def rotate_webhook_secret(request: Request, webhook_id: str, viewer: AdminDep,
                          form: FormDep, runtime: RuntimeDep) -> Response:
    endpoint, secret = runtime.webhooks.rotate_secret(viewer.actor, webhook_id)
    return _secret_page(request, endpoint, secret, "rotated", runtime)


@router.post("/webhooks/{webhook_id}/delete")
def delete_webhook(request: Request, webhook_id: str, viewer: AdminDep, form: FormDep,
                   runtime: RuntimeDep) -> Response:
    runtime.webhooks.delete(viewer.actor, webhook_id)
    return redirect(f"{PREFIX}/webhooks?done=deleted")


@router.post("/webhooks/{webhook_id}/deliveries/{delivery_id}/retry")
def retry_delivery(request: Request, webhook_id: str, delivery_id: str, viewer: AdminDep,
                   form: FormDep, runtime: RuntimeDep) -> Response:
    try:
        runtime.webhooks.retry(viewer.actor, webhook_id, delivery_id)
    except ValidationFailed as error:
        endpoint = runtime.webhooks.get(viewer.actor, webhook_id)
        return _detail_page(request, viewer, runtime, endpoint, status=422,
                            error=_said(error))
    return redirect(f"{PREFIX}/webhooks/{webhook_id}?done=retried#deliveries")
