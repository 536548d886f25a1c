"""Console plumbing: templates, the signed-in user, CSRF on every form, security headers,
and product errors turned into HTML pages instead of JSON."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData
from starlette.responses import HTMLResponse, RedirectResponse

from tallykey.accounts.console_sessions import csrf_matches
from tallykey.accounts.passwords import MIN_PASSWORD_LENGTH
from tallykey.actor import Actor
from tallykey.auth.caller import SAFE_METHODS
from tallykey.auth.server_keys import server_key
from tallykey.console import views
from tallykey.errors import (
    CsrfRefused,
    LoginRequired,
    NotFound,
    PermissionDenied,
    ReadOnlyRole,
    SecondFactorPending,
    StoreUnavailable,
    TallykeyError,
)
from tallykey.feed.nodes import Propagation
from tallykey.people.policy import AWAITING_CODE
from tallykey.people.sessions import OpenSession
from tallykey.runtime import Runtime
from tallykey.web.bounds import BodyTooLarge
from tallykey.web.deps import ip_of, runtime_of, session_callers

PREFIX = "/console"
STATIC_PATH = PREFIX + "/static"
TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"
CSRF_FIELD = "csrf_token"

#: No inline script or style anywhere: JS and CSS come from /console/static only.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

templates = Environment(
    loader=FileSystemLoader(TEMPLATES_DIR),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,
)
templates.filters.update(views.FILTERS)
templates.globals.update(prefix=PREFIX, static=STATIC_PATH, describe=views.describe,
                         min_password_length=MIN_PASSWORD_LENGTH)


@dataclass(frozen=True)
class Viewer:
    """Who is looking at a console page: their session and the actor they act as."""

    session: OpenSession
    actor: Actor

    @property
    def is_admin(self) -> bool:
        return self.actor.is_admin

    @property
    def read_only(self) -> bool:
        """An auditor: pages show what an administrator sees, without a button that
        changes anything (and every such form answers 403)."""
        return self.actor.is_auditor

    @property
    def reads_all(self) -> bool:
        """Reads every token, the usage and the audit log: an administrator or an
        auditor."""
        return self.actor.reads_all


def render(request: Request, template: str, *, status_code: int = 200,
           headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
    viewer: Viewer | None = getattr(request.state, "viewer", None)
    label = request.app.state.runtime.settings.workspace_label  # TALLYKEY_WORKSPACE_LABEL
    body = templates.get_template(template).render(
        request=request, viewer=viewer, csrf=viewer.session.csrf_token if viewer else "",
        path=request.url.path, ws_label=label, ws_label_plural=plural(label), **context)
    return HTMLResponse(body, status_code=status_code, headers=headers)


def plural(word: str) -> str:
    """English plural of the workspace label ("Project" -> "Projects")."""
    if word.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def redirect(url: str) -> RedirectResponse:
    """After a successful POST: see the result with a GET (no resubmission on reload)."""
    return RedirectResponse(url, status_code=303)


def safe_next(target: str | None) -> str:
    """Only same-site console paths are followed after login (no open redirect)."""
    if target and target.startswith(PREFIX + "/") and not target.startswith("//") \
            and "\\" not in target:
        return target
    return PREFIX + "/tokens"


async def current_viewer(request: Request) -> Viewer:
    """The signed-in person looking at a page: their console session (read by the same
    authenticator as the management API's), or the login page."""
    session = await session_callers(request).session(request)
    if session is None:
        raise LoginRequired
    if session.awaiting is not None:
        raise SecondFactorPending(session.awaiting)
    assert isinstance(session, OpenSession)
    user = session.user
    viewer = Viewer(session, Actor(user.account_id, user.id, user.role, user.email,
                                   ip_of(request), "console"))
    request.state.viewer = viewer
    return viewer


async def checked_form(request: Request,
                       viewer: Annotated[Viewer, Depends(current_viewer)]) -> FormData:
    """The posted form, once its CSRF token matched the session's (constant time) and
    the viewer may change things: an auditor's form answers 403 (the error page, reason
    `auditor_read_only`) and changes nothing. Every console form that changes something
    takes this (`FormDep`), so a new one is covered by taking it; only searches and a
    person's own sign-in take `own_form` (`OwnFormDep`)."""
    form = await own_form(request, viewer)
    if viewer.read_only:
        raise ReadOnlyRole()
    return form


async def own_form(request: Request,
                   viewer: Annotated[Viewer, Depends(current_viewer)]) -> FormData:
    """The posted form, once its CSRF token matched the session's, whatever the viewer's
    role: for forms that change nothing of the account (a search) or only the viewer's
    own sign-in (password, second factor, sessions, signing out)."""
    form = await request.form()
    presented = form.get(CSRF_FIELD)
    if not csrf_matches(viewer.session, presented if isinstance(presented, str) else None):
        raise CsrfRefused
    return form


def admin_viewer(request: Request,
                 viewer: Annotated[Viewer, Depends(current_viewer)]) -> Viewer:
    if viewer.read_only and request.method not in SAFE_METHODS:
        raise ReadOnlyRole()  # an auditor's post to an administrator's form names the role
    if not viewer.is_admin:
        raise PermissionDenied("This page is for account administrators.",
                               "Ask an administrator of your account.")
    return viewer


def changing_viewer(viewer: Annotated[Viewer, Depends(current_viewer)]) -> Viewer:
    """Pages that exist only to change something (a new token, renew, revoke): an
    auditor is answered 403 there too, as on the form the page posts."""
    if viewer.read_only:
        raise ReadOnlyRole()
    return viewer


def reader_viewer(viewer: Annotated[Viewer, Depends(current_viewer)]) -> Viewer:
    """Pages that only read what administrators see (the audit log): administrators and
    auditors."""
    if not viewer.reads_all:
        raise PermissionDenied("This page is for account administrators and auditors.",
                               "Ask an administrator of your account.")
    return viewer


ViewerDep = Annotated[Viewer, Depends(current_viewer)]
AdminDep = Annotated[Viewer, Depends(admin_viewer)]
ReaderDep = Annotated[Viewer, Depends(reader_viewer)]
ChangerDep = Annotated[Viewer, Depends(changing_viewer)]
FormDep = Annotated[FormData, Depends(checked_form)]
OwnFormDep = Annotated[FormData, Depends(own_form)]


def runtime_dep(request: Request) -> Runtime:
    return runtime_of(request)


RuntimeDep = Annotated[Runtime, Depends(runtime_dep)]


#: How long a form shown before any session (sign-in, setup) can be submitted.
FORM_KEY_LIFETIME_SECONDS = 2 * 3600
_FORM_KEY_NAME = "console_form"


def new_issue_key() -> str:
    """A random key that makes one create or rotate form idempotent (a double click or a
    re-post issues once)."""
    return secrets.token_urlsafe(32)


def new_form_key(request: Request) -> str:
    """The anti-CSRF value of a form shown before any session exists: a random nonce and
    the time, signed with a key only the server holds. It goes in a cookie and in the
    form; a pair an attacker made up (or planted) fails the signature."""
    runtime = runtime_of(request)
    body = f"{int(runtime.clock.now().timestamp())}.{secrets.token_urlsafe(24)}"
    return f"{body}.{_form_mac(runtime, body)}"


def form_key_is_genuine(request: Request, value: str) -> bool:
    """Signed by this deployment, and issued within `FORM_KEY_LIFETIME_SECONDS`."""
    runtime = runtime_of(request)
    body, _, mac = value.rpartition(".")
    issued = body.partition(".")[0]
    if not mac or not issued.isascii() or not issued.isdigit() or len(issued) > 12:
        return False
    age = runtime.clock.now().timestamp() - int(issued)
    if not -60 <= age <= FORM_KEY_LIFETIME_SECONDS:
        return False
    return hmac.compare_digest(mac.encode(), _form_mac(runtime, body).encode())


def _form_mac(runtime: Runtime, body: str) -> str:
    key = server_key(runtime.database, runtime.clock, _FORM_KEY_NAME)
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


class ConsoleRoute(APIRoute):
    """Every console response gets the CSP; errors become pages a person can act on."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except LoginRequired:
                target = request.url.path + (f"?{request.url.query}" if request.url.query
                                             else "")
                response = redirect(f"{PREFIX}/login?next={quote(target, safe='')}")
            except BodyTooLarge as error:
                response = error_page(request, 413, "That was too much", str(error.detail),
                                      "Send a shorter form.")
            except SecondFactorPending as pending:
                target = request.url.path + (f"?{request.url.query}" if request.url.query
                                             else "")
                response = redirect(second_step_url(pending.awaiting, target))
            except CsrfRefused:
                response = error_page(request, 403, "This form has expired",
                                      "The form's security token is missing or does not "
                                      "match your session.",
                                      "Go back, reload the page and submit the form again.")
            except NotFound as error:
                response = error_page(request, 404, "Not found", error.message, error.hint)
            except PermissionDenied as error:
                response = error_page(request, 403, "Not allowed", error.message, error.hint)
            except StoreUnavailable as error:
                response = error_page(request, 503, "tallykey cannot reach its store",
                                      error.message, error.hint)
                response.headers.update(error.headers())
            except TallykeyError as error:
                response = error_page(request, error.status, "That did not work",
                                      error.message, error.hint)
            response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
            return response

        return console_handler


def propagation_query(done: Propagation) -> str:
    """Query parameters that carry a change's propagation to the page redirected to."""
    total = len(done.confirmed) + len(done.unconfirmed)
    params = [("nodes", f"{len(done.confirmed)}/{total}")]
    params += [("late", node.label) for node in done.unconfirmed]
    if done.unconfirmed:
        latest = max(node.stops_by for node in done.unconfirmed)
        params.append(("by", latest.isoformat(timespec="seconds")))
    return urlencode(params)


#: How a propagated change is said, by what it does on a node (SPEC §10): (what it did
#: on the confirmed nodes, what a node not yet confirmed will do by when).
REACHED = {
    "stopped": ("It stopped on", "stop"),
    "works": ("It works again on", "accept it again"),
    "applies": ("They apply on", "apply them"),
}


def propagation_notice(request: Request, reached: str = "stopped") -> str:
    """The sentence for people that says how far a change has reached (SPEC §10):
    `reached` is "stopped" (revoke, suspend), "works" (resume) or "applies" (a change of
    permissions or policy)."""
    confirmed, _, total = request.query_params.get("nodes", "").partition("/")
    if not (confirmed.isdigit() and total.isdigit()):
        return ""
    if int(total) == 0:
        return "No verification node was running."
    did, will = REACHED[reached]
    said = f"{did} {int(confirmed)} of {int(total)} nodes"
    late = request.query_params.getlist("late")[:10]
    if not late:
        return said + "."
    by = request.query_params.get("by", "")
    return (f"{said}; not yet confirmed by {', '.join(late)}, which will {will} by "
            f"{by or 'the end of the stale window'} at the latest.")


def second_step_url(awaiting: str, target: str = "") -> str:
    """Where a session awaiting its second factor goes: the code page, or the page that
    sets up an authenticator; `target` is where it goes afterwards."""
    page = "/login/code" if awaiting == AWAITING_CODE else "/me/two-factor"
    return f"{PREFIX}{page}?next={quote(safe_next(target), safe='')}"


def error_page(request: Request, status: int, title: str, message: str,
               hint: str = "") -> HTMLResponse:
    return render(request, "error.html", status_code=status, title=title, message=message,
                  hint=hint)
