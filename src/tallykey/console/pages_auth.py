"""Signing in and out, and the first-run setup page.

These forms come before any session, so their CSRF token is a value the server signed
(`web.new_form_key`), set both in a cookie and in the form (double submit): the two must
be equal (compared in constant time) and the signature and age must check out.
"""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from tallykey.accounts import bootstrap as setup
from tallykey.accounts.models import User
from tallykey.accounts.sign_in import BAD_CREDENTIALS, sign_in
from tallykey.console.forms import text
from tallykey.console.web import (
    CSRF_FIELD,
    PREFIX,
    ConsoleRoute,
    OwnFormDep,
    RuntimeDep,
    ViewerDep,
    error_page,
    form_key_is_genuine,
    new_form_key,
    redirect,
    render,
    safe_next,
    second_step_url,
)
from tallykey.errors import CsrfRefused, TooManyAttempts, Unauthenticated, ValidationFailed
from tallykey.people.sessions import SESSION_COOKIE, OpenSession
from tallykey.runtime import Runtime
from tallykey.web.deps import cookie_flags, ip_of, login_limiter, open_session

router = APIRouter(route_class=ConsoleRoute)

FORM_COOKIE = "tallykey_form_key"


def with_form_key(request: Request, response: Response, key: str) -> Response:
    response.set_cookie(FORM_COOKIE, key, path=PREFIX,
                        **(cookie_flags(request) | {"samesite": "strict"}))
    return response


async def pre_session_form(request: Request) -> dict[str, str]:
    """The posted fields, once the double-submit CSRF key matched."""
    form = await request.form()
    presented = text(form, CSRF_FIELD)
    expected = request.cookies.get(FORM_COOKIE, "")
    if not presented or not secrets.compare_digest(presented.encode(), expected.encode()):
        raise CsrfRefused
    if not await run_in_threadpool(form_key_is_genuine, request, presented):
        raise CsrfRefused  # an equal pair the server never issued (or issued long ago)
    return {k: v for k, v in form.items() if isinstance(v, str)}


def start_session(request: Request, runtime: Runtime, user: User, target: str,
                  method: str = "password") -> Response:
    """Open the user's session (`open_session`: audited, cookie flags decided once) and
    send them on: to their second factor if one is awaited, else to `target`."""
    def respond(opened: OpenSession) -> Response:
        response = redirect(second_step_url(opened.awaiting, target) if opened.awaiting
                            else safe_next(target))
        response.delete_cookie(FORM_COOKIE, path=PREFIX, **cookie_flags(request))
        return response

    return open_session(request, user, via="console", method=method, respond=respond)[1]


@router.get("/login")
def login_page(request: Request, next: str = "") -> Response:
    key = new_form_key(request)
    return with_form_key(request, render(request, "login.html", form_key=key,
                                         next=safe_next(next), email="", error=""), key)


@router.post("/login")
async def login(request: Request, runtime: RuntimeDep) -> Response:
    fields = await pre_session_form(request)
    try:
        user = await run_in_threadpool(sign_in, runtime.accounts, login_limiter(request),
                                       fields.get("email", ""), fields.get("password", ""),
                                       ip_of(request), "console")
    except TooManyAttempts as refused:
        wait = refused.retry_after
        return render(request, "error.html", status_code=429, headers={"Retry-After": str(wait)},
                      title="Too many sign-in attempts", message=refused.message,
                      hint=f"Wait {wait} seconds, then try again.")
    except Unauthenticated:
        key = new_form_key(request)
        page = render(request, "login.html", status_code=401, form_key=key,
                      next=safe_next(fields.get("next")), email=fields.get("email", ""),
                      error=BAD_CREDENTIALS)
        return with_form_key(request, page, key)
    return await run_in_threadpool(start_session, request, runtime, user,
                                   fields.get("next", ""))


@router.post("/logout")
def logout(request: Request, viewer: ViewerDep, _: OwnFormDep, runtime: RuntimeDep) -> Response:
    runtime.sessions.close(viewer.session.cookie)
    response = redirect(f"{PREFIX}/login")
    response.delete_cookie(SESSION_COOKIE, path="/", **cookie_flags(request))
    return response


@router.get("/")
def home() -> Response:
    return redirect(f"{PREFIX}/tokens")


@router.get("/setup/{key}")
def setup_page(request: Request, key: str, runtime: RuntimeDep) -> Response:
    if not setup.link_is_valid(runtime.accounts, key):
        return used_link(request)
    form_key = new_form_key(request)
    return with_form_key(request, render(request, "setup.html", form_key=form_key, key=key,
                                         values={}, error="", error_field=""), form_key)


@router.post("/setup/{key}")
async def setup_submit(request: Request, key: str, runtime: RuntimeDep) -> Response:
    fields = await pre_session_form(request)
    if not await run_in_threadpool(setup.link_is_valid, runtime.accounts, key):
        return used_link(request)
    draft = setup.FirstAdmin(account_name=fields.get("account_name", ""),
                             email=fields.get("email", ""),
                             password=fields.get("password", ""), name=fields.get("name", ""))
    try:
        user = await run_in_threadpool(setup.complete, runtime.accounts,
                                       runtime.settings.region, key, draft, ip_of(request))
    except ValidationFailed as error:
        form_key = new_form_key(request)
        values = {k: v for k, v in fields.items() if k != "password"}
        page = render(request, "setup.html", status_code=422, form_key=form_key, key=key,
                      values=values, error=error.message + (f" {error.hint}" if error.hint
                                                            else ""),
                      error_field=str(error.details.get("field", "")))
        return with_form_key(request, page, form_key)
    return await run_in_threadpool(start_session, request, runtime, user, "", "setup")


def used_link(request: Request) -> Response:
    return error_page(request, 410, "This setup link cannot be used",
                      "It was used already, has expired, or an administrator exists.",
                      "Sign in instead, or run 'tallykey serve --new-setup-link' for a new "
                      "link if no administrator exists yet.")
