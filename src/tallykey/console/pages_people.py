"""People's own sign-in pages: the second step of signing in (a code), setting up and
turning off two-factor sign-in, "your account" (password change, sessions), forgotten
passwords and reset links, and the administrators' actions on another user's sign-in."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote, urlsplit

import httpx
from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse

from tallykey.accounts.console_sessions import csrf_matches, end_sessions
from tallykey.accounts.sign_in import password_proved
from tallykey.actor import Actor
from tallykey.audit import trail
from tallykey.console.forms import text
from tallykey.console.pages_auth import pre_session_form, start_session, with_form_key
from tallykey.console.web import (
    CSRF_FIELD,
    PREFIX,
    AdminDep,
    ConsoleRoute,
    FormDep,
    OwnFormDep,
    RuntimeDep,
    Viewer,
    ViewerDep,
    error_page,
    new_form_key,
    redirect,
    render,
    safe_next,
)
from tallykey.errors import (
    CsrfRefused,
    LinkRefused,
    LoginRequired,
    SecondFactorPending,
    SecondFactorRefused,
    SignOnRefused,
    ValidationFailed,
)
from tallykey.people.policy import AWAITING_CODE, AWAITING_ENROLMENT
from tallykey.people.sessions import SESSION_COOKIE, OpenSession
from tallykey.people.sso import CALLBACK_PATH
from tallykey.people.twofactor import ascii_code
from tallykey.runtime import Runtime
from tallykey.web.deps import cookie_flags, ip_of, login_limiter, open_session, runtime_of

router = APIRouter(route_class=ConsoleRoute)

NOTICES = {
    "password": "Your password was changed. Your other sessions were signed out.",
    "ended": "The session was signed out.",
    "others": "Your other sessions were signed out.",
    "two-factor-off": "Two-factor sign-in is off.",
    "digest": "Your weekly digest setting was saved.",
}
#: While an authenticator is being set up there are no recovery codes yet: the hint for
#: a wrong code names only the app.
ENROLMENT_HINTS = {
    "wrong": "Type the six digits your authenticator app shows now for tallykey (after "
             "scanning the QR code or typing the key above).",
}
FORGOT_ANSWER = ("If that address belongs to a tallykey user, a link to set a new password "
                 "is on its way. It works once, for 30 minutes.")


def _actor(session: OpenSession, request: Request) -> Actor:
    user = session.user
    return Actor(user.account_id, user.id, user.role, user.email, ip_of(request), "console")


async def _session(request: Request, *allowed: str | None) -> OpenSession:
    """The cookie's session if it is complete or in one of the `allowed` stages; a
    session awaiting another step is sent there."""
    runtime = runtime_of(request)
    session = await run_in_threadpool(runtime.sessions.find_any,
                                      request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise LoginRequired
    if session.awaiting is not None and session.awaiting not in allowed:
        raise SecondFactorPending(session.awaiting)
    if session.awaiting is None:  # a signed-in user: the page shows the navigation
        request.state.viewer = Viewer(session, _actor(session, request))
    return session


async def code_session(request: Request) -> OpenSession:
    """A session that passed the password and awaits an authenticator code (or one that
    is complete already: the page sends it on)."""
    return await _session(request, AWAITING_CODE)


async def enrolling_session(request: Request) -> OpenSession:
    """A complete session, or one that must set up a second factor before anything."""
    return await _session(request, AWAITING_ENROLMENT)


CodeSession = Annotated[OpenSession, Depends(code_session)]
EnrollingSession = Annotated[OpenSession, Depends(enrolling_session)]


async def _form_of(request: Request, session: OpenSession) -> dict[str, str]:
    form = await request.form()
    presented = form.get(CSRF_FIELD)
    if not csrf_matches(session, presented if isinstance(presented, str) else None):
        raise CsrfRefused
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _finish(request: Request, pending: OpenSession, method: str, page: Response
            ) -> Response:
    """Swap the pending session for a full one (`open_session`: audited, the new cookie
    set on `page`). `LookupError` if the pending session ended meanwhile."""
    return open_session(request, pending.user, via="console", method=method,
                        pending=pending, respond=lambda _: page)[1]


# --- the second step of signing in ----------------------------------------------------


@router.get("/login/code")
def code_page(request: Request, pending: CodeSession, next: str = "") -> Response:
    if pending.awaiting is None:
        return redirect(safe_next(next))
    return render(request, "login_code.html", form_key=pending.csrf_token,
                  next=safe_next(next), error="")


@router.post("/login/code")
async def code_submit(request: Request, pending: CodeSession, runtime: RuntimeDep
                      ) -> Response:
    fields = await _form_of(request, pending)
    target = safe_next(fields.get("next"))
    if pending.awaiting is None:
        return redirect(target)
    actor = _actor(pending, request)
    try:
        code = ascii_code(fields.get("code", ""))  # other digits: 422, no attempt spent
        if not await run_in_threadpool(runtime.sessions.take_code_attempt, pending):
            await run_in_threadpool(runtime.sessions.code_failed, pending)
            return error_page(request, 401, "Too many wrong codes",
                              "This sign-in was cancelled after too many wrong codes.",
                              "Sign in again with your password.")
        method = await run_in_threadpool(runtime.two_factor.verify, actor, code)
        return await run_in_threadpool(_finish, request, pending, method, redirect(target))
    except ValidationFailed as unreadable:  # not a code at all (say, other digits)
        return render(request, "login_code.html", status_code=422,
                      form_key=pending.csrf_token, next=target,
                      error=f"{unreadable.message} {unreadable.hint}".strip())
    except SecondFactorRefused as refused:
        left = await run_in_threadpool(runtime.sessions.code_failed, pending)
        if left == 0:
            return error_page(request, 401, "Too many wrong codes",
                              "This sign-in was cancelled after too many wrong codes.",
                              "Sign in again with your password.")
        return render(request, "login_code.html", status_code=401,
                      form_key=pending.csrf_token, next=target,
                      error=f"{refused.message} {refused.hint}")
    except LookupError:
        raise LoginRequired from None


# --- two-factor set-up ------------------------------------------------------------------


def _reauthenticate(session: OpenSession) -> bool:
    """Setting up an authenticator from a running session asks for the password (one set
    up right after signing in with it does not)."""
    return session.awaiting is None and session.user.password_hash is not None


@router.get("/me/two-factor")
def enrol_page(request: Request, session: EnrollingSession, runtime: RuntimeDep,
               next: str = "") -> Response:
    enrolled, _ = runtime.two_factor.status(session.user.id)
    if enrolled and session.awaiting is None:
        return redirect(f"{PREFIX}/me")
    if enrolled:  # set up meanwhile in another browser: this sign-in starts over
        runtime.sessions.close(session.cookie)
        return redirect(f"{PREFIX}/login?next={quote(safe_next(next), safe='')}")
    enrolment = runtime.two_factor.begin(session.user)
    return render(request, "two_factor_enrol.html", form_key=session.csrf_token,
                  enrolment=enrolment, required=session.awaiting == AWAITING_ENROLMENT,
                  reauthenticate=_reauthenticate(session), next=safe_next(next), error="")


@router.post("/me/two-factor")
async def enrol_submit(request: Request, session: EnrollingSession, runtime: RuntimeDep
                       ) -> Response:
    fields = await _form_of(request, session)
    actor = _actor(session, request)
    fresh = session.awaiting is not None  # the password was typed for this sign-in

    def confirm() -> list[str]:
        return runtime.two_factor.confirm(actor, fields.get("code", ""),
                                          password=fields.get("password"),
                                          just_signed_in=fresh)

    try:
        codes = await run_in_threadpool(
            password_proved, runtime.accounts, login_limiter(request), session.user.email,
            ip_of(request), "two_factor_enrolment", confirm, wrong_field="password")
    except (SecondFactorRefused, ValidationFailed) as refused:
        secret = runtime.two_factor.pending_secret(session.user.id)
        if secret is None:
            return redirect(f"{PREFIX}/me/two-factor")
        return render(request, "two_factor_enrol.html", status_code=422,
                      form_key=session.csrf_token,
                      enrolment=runtime.two_factor.enrolment(session.user, secret),
                      required=session.awaiting == AWAITING_ENROLMENT,
                      reauthenticate=_reauthenticate(session),
                      next=safe_next(fields.get("next")),
                      error=f"{refused.message} {_enrolment_hint(refused)}".strip())
    target = safe_next(fields.get("next")) if session.awaiting else f"{PREFIX}/me"
    page = render(request, "recovery_codes.html", codes=codes, target=target)
    if session.awaiting is not None:
        try:
            return await run_in_threadpool(_finish, request, session, "enrolment", page)
        except LookupError:
            raise LoginRequired from None
    return page


def _enrolment_hint(refused: SecondFactorRefused | ValidationFailed) -> str:
    return ENROLMENT_HINTS.get(str(refused.details.get("reason", "")), refused.hint)


@router.post("/me/two-factor/disable")
def disable_two_factor(request: Request, viewer: ViewerDep, form: OwnFormDep,
                       runtime: RuntimeDep) -> Response:
    try:
        password_proved(runtime.accounts, login_limiter(request), viewer.session.user.email,
                        ip_of(request), "two_factor_disable",
                        lambda: runtime.two_factor.disable(viewer.actor, text(form, "password")),
                        wrong_field="password")
    except ValidationFailed as error:
        return _me_page(request, viewer, runtime, status=422,
                        two_factor_error=f"{error.message} {error.hint}".strip())
    return redirect(f"{PREFIX}/me?done=two-factor-off")


# --- your account -----------------------------------------------------------------------


def _me_page(request: Request, viewer: ViewerDep, runtime: Runtime, *, status: int = 200,
             notice: str = "", password_error: str = "", two_factor_error: str = ""
             ) -> Response:
    enrolled, codes_left = runtime.two_factor.status(viewer.actor.user_id or "")
    return render(request, "me.html", status_code=status, notice=notice,
                  sessions=runtime.sessions.list_for(viewer.actor.user_id or ""),
                  current=viewer.session.public_id, enrolled=enrolled,
                  codes_left=codes_left, password_error=password_error,
                  two_factor_error=two_factor_error, now=runtime.clock.now())


@router.get("/me")
def me_page(request: Request, viewer: ViewerDep, runtime: RuntimeDep,
            done: str = "") -> Response:
    return _me_page(request, viewer, runtime, notice=NOTICES.get(done, ""))


@router.post("/me/password")
def change_password(request: Request, viewer: ViewerDep, form: OwnFormDep,
                    runtime: RuntimeDep) -> Response:
    new = text(form, "password")
    try:
        if new != text(form, "password_confirm"):
            raise ValidationFailed("The two new passwords differ.", "Type the same one twice.",
                                   field="password_confirm")
        password_proved(runtime.accounts, login_limiter(request), viewer.session.user.email,
                        ip_of(request), "password_change",
                        lambda: runtime.accounts.change_password(
                            viewer.actor, text(form, "current_password"), new,
                            keep_session=viewer.session.cookie),
                        wrong_field="current_password")
    except ValidationFailed as error:
        return _me_page(request, viewer, runtime, status=422,
                        password_error=f"{error.message} {error.hint}".strip())
    return redirect(f"{PREFIX}/me?done=password")


@router.post("/me/sessions/{public_id}/end")
def end_session(request: Request, public_id: str, viewer: ViewerDep, _: OwnFormDep,
                runtime: RuntimeDep) -> Response:
    if not runtime.sessions.end(viewer.actor.user_id or "", public_id):
        return error_page(request, 404, "Not found", "You have no such session.",
                          "It may have ended already.")
    if public_id == viewer.session.public_id:
        return redirect(f"{PREFIX}/login")
    return redirect(f"{PREFIX}/me?done=ended")


@router.post("/me/sessions/end-others")
def end_other_sessions(viewer: ViewerDep, _: OwnFormDep, runtime: RuntimeDep) -> Response:
    with runtime.database.transaction() as session:
        ended = end_sessions(session, viewer.actor.user_id or "",
                             keep_cookie=viewer.session.cookie)
        trail.record(session, actor=viewer.actor, action="user.sessions_ended",
                     at=runtime.clock.now(), target_type="user",
                     target_id=viewer.actor.user_id, details={"sessions_ended": ended})
    return redirect(f"{PREFIX}/me?done=others")


# --- forgotten passwords ----------------------------------------------------------------


@router.get("/forgot")
def forgot_page(request: Request, runtime: RuntimeDep) -> Response:
    key = new_form_key(request)
    return with_form_key(request, render(request, "forgot.html", form_key=key, sent="",
                                         available=runtime.resets.available), key)


@router.post("/forgot")
async def forgot_submit(request: Request, runtime: RuntimeDep) -> Response:
    """The same answer, and the same work, whoever the address belongs to: the lookup
    and the mail happen in the background (`PasswordResets.ask`)."""
    fields = await pre_session_form(request)
    key = new_form_key(request)
    page = render(request, "forgot.html", form_key=key, sent=FORGOT_ANSWER,
                  available=runtime.resets.available)
    runtime.resets.ask(fields.get("email", ""), ip_of(request))
    return with_form_key(request, page, key)


@router.get("/reset/{token}")
def reset_page(request: Request, token: str, runtime: RuntimeDep) -> Response:
    try:
        link = runtime.resets.check(token, ip_of(request))
    except LinkRefused as refused:
        return error_page(request, 410, "This link cannot be used", refused.message,
                          refused.hint)
    key = new_form_key(request)
    return with_form_key(request, render(request, "reset.html", form_key=key, token=token,
                                         email=link.email, error=""), key)


@router.post("/reset/{token}")
async def reset_submit(request: Request, token: str, runtime: RuntimeDep) -> Response:
    fields = await pre_session_form(request)
    try:
        if fields.get("password", "") != fields.get("password_confirm", ""):
            await run_in_threadpool(runtime.resets.check, token, ip_of(request))
            raise ValidationFailed("The two passwords differ.", "Type the same one twice.")
        await run_in_threadpool(runtime.resets.complete, token, fields.get("password", ""),
                                ip_of(request))
    except LinkRefused as refused:
        return error_page(request, 410, "This link cannot be used", refused.message,
                          refused.hint)
    except ValidationFailed as error:
        link = await run_in_threadpool(runtime.resets.check, token, ip_of(request))
        key = new_form_key(request)
        page = render(request, "reset.html", status_code=422, form_key=key, token=token,
                      email=link.email, error=f"{error.message} {error.hint}".strip())
        return with_form_key(request, page, key)
    return redirect(f"{PREFIX}/login?done=reset")


# --- administrators' actions on a user ----------------------------------------------------


@router.post("/users/{user_id}/sessions/end")
def end_user_sessions(user_id: str, viewer: AdminDep, _: FormDep, runtime: RuntimeDep
                      ) -> Response:
    runtime.accounts.end_sessions_of(viewer.actor, user_id)
    return redirect(f"{PREFIX}/users/{user_id}?done=user-sessions")


@router.post("/users/{user_id}/password-reset")
def send_reset(user_id: str, viewer: AdminDep, _: FormDep, runtime: RuntimeDep) -> Response:
    runtime.resets.send_for(viewer.actor, user_id)
    return redirect(f"{PREFIX}/users/{user_id}?done=reset-sent")


@router.post("/users/{user_id}/two-factor/reset")
def reset_two_factor(user_id: str, viewer: AdminDep, _: FormDep, runtime: RuntimeDep
                     ) -> Response:
    runtime.two_factor.reset_for(viewer.actor, user_id)
    return redirect(f"{PREFIX}/users/{user_id}?done=two-factor-reset")


@router.post("/account/two-factor")
def set_two_factor_policy(viewer: AdminDep, form: FormDep, runtime: RuntimeDep) -> Response:
    runtime.two_factor.set_policy(viewer.actor, text(form, "two_factor_policy"))
    return redirect(f"{PREFIX}/account?done=policy")


# --- single sign-on -----------------------------------------------------------------------

OIDC_COOKIE = "tallykey_oidc_state"


def _callback_url(request: Request, runtime: Runtime) -> str:
    base = runtime.settings.public_url or str(request.base_url)
    return base.rstrip("/") + CALLBACK_PATH


@router.get("/oidc/start")
async def sso_start(request: Request, runtime: RuntimeDep, next: str = "") -> Response:
    if not runtime.sso.enabled:
        return error_page(request, 404, "Single sign-on is not set up",
                          "This server has no identity provider configured.",
                          "Sign in with your e-mail and password.")
    try:
        started = await run_in_threadpool(runtime.sso.begin, _callback_url(request, runtime),
                                          safe_next(next))
    except (httpx.HTTPError, ValueError):
        return _provider_unreachable(request, runtime)
    response = RedirectResponse(started.url, status_code=303)
    response.set_cookie(OIDC_COOKIE, started.state, max_age=600, path=f"{PREFIX}/oidc",
                        **cookie_flags(request))
    return response


@router.get("/oidc/callback")
async def sso_callback(request: Request, runtime: RuntimeDep, state: str = "",
                       code: str | None = None, error: str | None = None,
                       iss: str | None = None) -> Response:
    try:
        user, target = await run_in_threadpool(
            lambda: runtime.sso.finish(state=state[:200],
                                       browser_state=request.cookies.get(OIDC_COOKIE),
                                       code=code, error=error,
                                       redirect_uri=_callback_url(request, runtime),
                                       ip=ip_of(request), issuer=iss))
    except SignOnRefused as refused:
        response: Response = error_page(request, 401, "Single sign-on did not work",
                                        refused.message, refused.hint)
    except (httpx.HTTPError, ValueError):
        response = _provider_unreachable(request, runtime)
    else:
        response = await run_in_threadpool(start_session, request, runtime, user, target,
                                           "sso")
    response.delete_cookie(OIDC_COOKIE, path=f"{PREFIX}/oidc", **cookie_flags(request))
    return response


def _provider_unreachable(request: Request, runtime: Runtime) -> Response:
    """The identity provider did not answer (or answered with something that is not its
    discovery document or keys): a page that says so, never the raw error."""
    host = urlsplit(str(runtime.settings.oidc_issuer or "")).netloc or "its address"
    return error_page(request, 502, "The sign-in provider cannot be reached",
                      f"tallykey could not reach the identity provider at {host}, so "
                      f"signing in with {runtime.sso.name} does not work right now.",
                      "Try again in a minute, or sign in with your e-mail and password. If "
                      "it keeps failing, tell an administrator: the provider may be down, "
                      "or TALLYKEY_OIDC_ISSUER may be wrong.")
