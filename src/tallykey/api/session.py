"""Signing in and out, for the console and for API clients: `POST|DELETE
/api/v1/session`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from tallykey.accounts.sign_in import sign_in
from tallykey.api.deps import OwnActor, RuntimeDep
from tallykey.api.responses import error_responses
from tallykey.api.schemas import (
    LoginRequest,
    SessionView,
    UserView,
)
from tallykey.people.sessions import SESSION_COOKIE
from tallykey.web.deps import cookie_flags, ip_of, login_limiter, open_session

router = APIRouter(prefix="/api/v1",
                   responses=error_responses(400, 401, 403, 404, 409, 413, 422, 429, 503))


@router.post("/session", response_model=SessionView, tags=["session"])
def login(body: LoginRequest, request: Request, response: Response,
          runtime: RuntimeDep) -> SessionView:
    """Sign in with e-mail and password; sets the session cookie and returns the CSRF token
    to send in `X-CSRF-Token` on every state-changing request."""
    ip = ip_of(request)
    user = sign_in(runtime.accounts, login_limiter(request), body.email, body.password, ip, "api")
    opened, _ = open_session(request, user, via="api", method="password",
                             respond=lambda _: response)
    return SessionView(user=UserView.of(user), csrf_token=opened.csrf_token,
                       expires_at=opened.expires_at, awaiting=opened.awaiting)


@router.delete("/session", status_code=204, tags=["session"])
def logout(request: Request, runtime: RuntimeDep, actor: OwnActor) -> Response:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        runtime.sessions.close(cookie)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", **cookie_flags(request))
    return response
