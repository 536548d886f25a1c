"""Sign-in over the API (SPEC §12): the second factor after `POST /api/v1/session`, your
password and your sessions, password-reset requests, and administrators' actions on a
user's sign-in. Thin adapters over the account, session, reset and two-factor services."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from tallykey.accounts.console_sessions import csrf_matches
from tallykey.accounts.sign_in import password_proved
from tallykey.actor import Actor
from tallykey.api.deps import ManagementActor, OwnActor, RuntimeDep
from tallykey.api.responses import error_responses
from tallykey.api.schemas import SessionView, Strict, UserView
from tallykey.errors import NotFound, PermissionDenied, SecondFactorRefused, Unauthenticated
from tallykey.people.policy import AWAITING_CODE
from tallykey.people.sessions import CSRF_HEADER, SESSION_COOKIE
from tallykey.people.twofactor import ascii_code
from tallykey.web.deps import ip_of, login_limiter, open_session

router = APIRouter(prefix="/api/v1", tags=["sign-in"],
                   responses=error_responses(400, 401, 403, 404, 422))

RESET_ANSWER = ("If that address belongs to a tallykey user, a link to set a new password "
                "is on its way. It works once, for 30 minutes.")


class SecondFactorRequest(Strict):
    code: str = Field(max_length=40, description="Six digits from the app, or a recovery code")


class PasswordChange(Strict):
    current_password: str = Field(max_length=1000)
    new_password: str = Field(max_length=1000)


class PasswordChanged(BaseModel):
    sessions_ended: int


class ResetRequest(Strict):
    email: str = Field(max_length=254)


class Accepted(BaseModel):
    message: str


class SessionItem(BaseModel):
    id: str
    created_at: datetime
    expires_at: datetime
    ip: str | None
    user_agent: str | None
    current: bool


class SessionsEnded(BaseModel):
    sessions_ended: int


class MySettings(Strict):
    weekly_digest: bool = Field(description="Receive the weekly token digest (sent to "
                                "administrators): tokens expiring within 14 days and "
                                "tokens never used.")


def _user_id(actor: Actor) -> str:
    if actor.user_id is None:
        raise PermissionDenied("This needs a signed-in user.")
    return actor.user_id


@router.post("/session/second-factor", response_model=SessionView,
             responses=error_responses(429))
async def second_factor(body: SecondFactorRequest, request: Request, response: Response,
                        runtime: RuntimeDep) -> SessionView:
    """After `POST /api/v1/session` answered `awaiting: "code"`: send the authenticator
    code (or a recovery code) with the session's `X-CSRF-Token`. The answer sets a new
    session cookie and carries a new CSRF token."""
    pending = await run_in_threadpool(runtime.sessions.find_any,
                                      request.cookies.get(SESSION_COOKIE))
    if pending is None or pending.awaiting != AWAITING_CODE:
        raise Unauthenticated("There is no sign-in waiting for a second factor.",
                              "Sign in with POST /api/v1/session first.")
    if not csrf_matches(pending, request.headers.get(CSRF_HEADER)):
        raise PermissionDenied("The CSRF token is missing or wrong.",
                               f"Send the session's CSRF token in the {CSRF_HEADER} header.",
                               reason="csrf")
    user = pending.user
    actor = Actor(user.account_id, user.id, user.role, user.email, ip_of(request), "api")
    code = ascii_code(body.code)  # other digits: 422, no attempt spent
    if not await run_in_threadpool(runtime.sessions.take_code_attempt, pending):
        await run_in_threadpool(runtime.sessions.code_failed, pending)
        raise Unauthenticated("This sign-in was cancelled after too many wrong codes.",
                              "Sign in again with POST /api/v1/session.")
    try:
        method = await run_in_threadpool(runtime.two_factor.verify, actor, code)
    except SecondFactorRefused:
        await run_in_threadpool(runtime.sessions.code_failed, pending)
        raise

    def finish() -> SessionView:
        try:
            opened, _ = open_session(request, user, via="api", method=method, pending=pending,
                                     respond=lambda _: response)
        except LookupError:
            raise Unauthenticated("This sign-in has ended.", "Sign in again.") from None
        return SessionView(user=UserView.of(user), csrf_token=opened.csrf_token,
                           expires_at=opened.expires_at)

    return await run_in_threadpool(finish)


@router.post("/session/password", response_model=PasswordChanged,
             responses=error_responses(429))
def change_password(body: PasswordChange, request: Request, actor: OwnActor,
                    runtime: RuntimeDep) -> PasswordChanged:
    """Change your own password (the current one is required). Every other session of
    yours ends; the one making this call (if it is a console session) stays."""
    ended = password_proved(
        runtime.accounts, login_limiter(request), actor.label, ip_of(request),
        "password_change",
        lambda: runtime.accounts.change_password(
            actor, body.current_password, body.new_password,
            keep_session=request.cookies.get(SESSION_COOKIE)),
        wrong_field="current_password")
    return PasswordChanged(sessions_ended=ended)


@router.patch("/session/settings", response_model=UserView)
def change_my_settings(body: MySettings, actor: ManagementActor,
                       runtime: RuntimeDep) -> UserView:
    """Change your own settings: whether you receive the weekly token digest."""
    _user_id(actor)
    return UserView.of(runtime.accounts.set_weekly_digest(actor, body.weekly_digest))


@router.get("/session/sessions", response_model=list[SessionItem])
def my_sessions(request: Request, actor: ManagementActor, runtime: RuntimeDep
                ) -> list[SessionItem]:
    """Your live console sessions, newest first."""
    current = runtime.sessions.find(request.cookies.get(SESSION_COOKIE))
    return [SessionItem(id=s.public_id, created_at=s.created_at, expires_at=s.expires_at,
                        ip=s.ip, user_agent=s.user_agent,
                        current=current is not None and current.public_id == s.public_id)
            for s in runtime.sessions.list_for(_user_id(actor))]


@router.delete("/session/sessions/{session_id}", status_code=204)
def end_my_session(session_id: str, actor: OwnActor, runtime: RuntimeDep) -> Response:
    """Sign out one of your sessions."""
    if not runtime.sessions.end(_user_id(actor), session_id):
        raise NotFound("You have no such session.", "List them with GET "
                       "/api/v1/session/sessions.")
    return Response(status_code=204)


@router.post("/password-reset", status_code=202, response_model=Accepted)
def request_reset(body: ResetRequest, request: Request, runtime: RuntimeDep) -> Accepted:
    """Mail a one-time link (30 minutes) to set a new password. The answer is the same,
    and as fast, whether or not the address belongs to anyone: the request only queues
    the address; the lookup and the mail happen in the background."""
    runtime.resets.ask(body.email, ip_of(request))
    return Accepted(message=RESET_ANSWER)


@router.post("/users/{user_id}/password-reset", status_code=202, response_model=Accepted)
def send_reset(user_id: str, actor: ManagementActor, runtime: RuntimeDep) -> Accepted:
    """An administrator mails a user of the account a password-reset link."""
    runtime.resets.send_for(actor, user_id)
    return Accepted(message="A password reset link was mailed to the user.")


@router.delete("/users/{user_id}/sessions", response_model=SessionsEnded)
def end_user_sessions(user_id: str, actor: ManagementActor, runtime: RuntimeDep
                      ) -> SessionsEnded:
    """An administrator signs a user out of every console session."""
    return SessionsEnded(sessions_ended=runtime.accounts.end_sessions_of(actor, user_id))


@router.delete("/users/{user_id}/two-factor", status_code=204)
def reset_two_factor(user_id: str, actor: ManagementActor, runtime: RuntimeDep) -> Response:
    """An administrator removes a user's second factor (lost phone); the user is told by
    e-mail and signed out everywhere."""
    runtime.two_factor.reset_for(actor, user_id)
    return Response(status_code=204)
