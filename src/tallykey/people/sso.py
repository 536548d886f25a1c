"""Single sign-on with OpenID Connect (SPEC §12): the authorization code flow with PKCE,
`state` and `nonce`, the provider found by discovery, ID tokens checked against its JWKS.

`begin` stores the sign-in (state as SHA-256, nonce, code verifier) and gives the
provider's authorization URL; `finish` spends it once, exchanges the code (Authlib's
OAuth 2 client) and hands the ID token to `accept`, which checks signature, issuer,
audience, expiry and nonce (joserfc, Authlib's JOSE library) and a verified e-mail, then
finds the user by that e-mail or creates them where the operator mapped an account (a
claim or the e-mail domain). Every refusal is audited with its reason.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import string
import time
import unicodedata
import warnings
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn

import httpx
from authlib.deprecate import AuthlibDeprecationWarning

# Authlib warns about its own httpx integration at import; no CLI line should carry that.
warnings.filterwarnings("ignore", message="The httpx module is deprecated",
                        category=AuthlibDeprecationWarning)
from authlib.integrations.httpx_client import OAuth2Client
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import delete, select

from tallykey.accounts.models import Account, User
from tallykey.accounts.permissions import ADMIN, AUDITOR, MEMBER
from tallykey.actor import Actor
from tallykey.audit import trail
from tallykey.clock import Clock
from tallykey.db.engine import Database
from tallykey.errors import SignOnRefused
from tallykey.people.models import OidcSignIn
from tallykey.settings import Settings

log = logging.getLogger(__name__)

SIGN_IN_LIFETIME = timedelta(minutes=10)
CALLBACK_PATH = "/console/oidc/callback"
REFUSED = "user.sso_refused"
METADATA_TTL = 3600.0
CLOCK_LEEWAY = 60
HTTP_TIMEOUT = 10.0

_MESSAGES = {
    "state": "This sign-in was not started here, was used already or took too long.",
    "provider": "The identity provider refused the sign-in.",
    "token": "The identity provider's answer could not be checked.",
    "signature": "The identity provider's ID token is not signed by its keys.",
    "issuer": "The ID token was issued by another provider.",
    "audience": "The ID token was issued for another application.",
    "expired": "The ID token has expired.",
    "nonce": "The ID token does not belong to this sign-in.",
    "email_unverified": "Your identity provider has not verified your e-mail address.",
    "no_account": "No tallykey account is set up for your e-mail address.",
    "deactivated": "This user is deactivated and cannot sign in.",
    "suspended": "This tallykey account is suspended: nobody can sign in to it.",
    "lookalike": "Your e-mail address contains characters that make it read as another "
                 "address; tallykey does not sign it in.",
}

_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def exact_address(claimed: str) -> str | None:
    """The address the provider verified, lower-cased in ASCII only; None when Unicode
    normalisation (NFKC) or case folding would turn it into another address (the Kelvin
    sign `\u212a` reads as `k`, a fullwidth `\uff41` as `a`): such a lookalike never
    matches, or becomes, another user's address."""
    lowered = claimed.translate(_ASCII_LOWER)
    if unicodedata.normalize("NFKC", claimed).casefold() != lowered:
        return None
    return lowered


@dataclass(frozen=True)
class Started:
    url: str
    state: str


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class SingleSignOn:
    """Verbs: `begin`, `finish`, `accept`."""

    def __init__(self, database: Database, clock: Clock, settings: Settings) -> None:
        self.database = database
        self.clock = clock
        self.settings = settings
        self._metadata: tuple[float, dict[str, Any]] | None = None
        self._keys: KeySet | None = None

    @property
    def enabled(self) -> bool:
        return self.settings.oidc_enabled

    @property
    def name(self) -> str:
        return self.settings.oidc_name

    # --- the provider ------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        """The provider's discovery document (cached for an hour); its `issuer` must be
        exactly the configured one (OpenID Connect Discovery §4.3)."""
        if self._metadata and time.monotonic() - self._metadata[0] < METADATA_TTL:
            return self._metadata[1]
        issuer = str(self.settings.oidc_issuer).rstrip("/")
        answer = httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=HTTP_TIMEOUT)
        answer.raise_for_status()
        document: dict[str, Any] = answer.json()
        if document.get("issuer") != self.settings.oidc_issuer:
            raise SignOnRefused("The identity provider's discovery document names another "
                                "issuer.", "Check TALLYKEY_OIDC_ISSUER.")
        self._metadata = (time.monotonic(), document)
        return document

    def keys(self, refresh: bool = False) -> KeySet:
        if self._keys is None or refresh:
            answer = httpx.get(self.metadata()["jwks_uri"], timeout=HTTP_TIMEOUT)
            answer.raise_for_status()
            self._keys = KeySet.import_key_set(answer.json())
        return self._keys

    def _client(self, redirect_uri: str) -> OAuth2Client:
        return OAuth2Client(client_id=self.settings.oidc_client_id,
                            client_secret=self.settings.oidc_client_secret,
                            scope=self.settings.oidc_scopes, redirect_uri=redirect_uri,
                            code_challenge_method="S256", timeout=HTTP_TIMEOUT)

    # --- the flow ----------------------------------------------------------------------

    def begin(self, redirect_uri: str, next_path: str) -> Started:
        """Record a new sign-in and give the provider's authorization URL."""
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)
        now = self.clock.now()
        with self.database.transaction() as session:
            session.execute(delete(OidcSignIn).where(OidcSignIn.expires_at < now))
            session.add(OidcSignIn(state_hash=_hash(state), nonce=nonce,
                                   code_verifier=verifier, next_path=next_path[:500],
                                   created_at=now, expires_at=now + SIGN_IN_LIFETIME))
        with self._client(redirect_uri) as client:
            url, _ = client.create_authorization_url(
                self.metadata()["authorization_endpoint"], state=state, nonce=nonce,
                code_verifier=verifier)
        assert create_s256_code_challenge(verifier) in url
        return Started(str(url), state)

    def finish(self, *, state: str, browser_state: str | None, code: str | None,
               error: str | None, redirect_uri: str, ip: str | None,
               issuer: str | None = None) -> tuple[User, str]:
        """Spend the sign-in named by `state` (it must be the browser's own), exchange the
        code and accept the ID token. Returns the user and where to go next. `issuer` is
        the authorization response's `iss` (RFC 9207), when the provider sends one."""
        if not state or not browser_state or not secrets.compare_digest(
                state.encode(), browser_state.encode()):
            self._refuse("state", ip, {"why": "not this browser's sign-in"})
        with self.database.transaction() as session:
            started = session.get(OidcSignIn, _hash(state))
            if started is not None:
                session.delete(started)
        if started is None or started.expires_at <= self.clock.now():
            self._refuse("state", ip, {"why": "unknown, used or expired"})
        if error or not code:
            self._refuse("provider", ip, {"error": (error or "no code")[:100]})
        if issuer is not None and issuer != self.settings.oidc_issuer:  # RFC 9207 mix-up
            self._refuse("issuer", ip, {"iss": issuer[:200]})
        try:
            with self._client(redirect_uri) as client:
                tokens = client.fetch_token(self.metadata()["token_endpoint"], code=code,
                                            code_verifier=started.code_verifier,
                                            grant_type="authorization_code")
        except Exception as failure:  # the provider refused the code, or is unreachable
            self._refuse("token", ip, {"error": type(failure).__name__})
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            self._refuse("token", ip, {"error": "no id_token"})
        return self.accept(id_token, started.nonce, ip), started.next_path

    def accept(self, id_token: str, nonce: str, ip: str | None) -> User:
        """Check an ID token (signature by the provider's keys, issuer, audience, expiry,
        nonce, verified e-mail) and find or create its user."""
        claims = self._checked_claims(id_token, nonce, ip)
        claimed = str(claims.get("email") or "").strip()
        if not claimed or claims.get("email_verified") is not True:
            self._refuse("email_unverified", ip, {"email": claimed[:254]})
        email = exact_address(claimed)
        if email is None:
            self._refuse("lookalike", ip, {"email": claimed[:254]})
        with self.database.reading() as session:
            user = session.scalar(select(User).where(User.email == email))
            account_active = user is not None and bool(session.scalar(
                select(Account.active).where(Account.id == user.account_id)))
        if user is None:
            user = self._create(claims, email, ip)
        elif not account_active:
            self._refuse("suspended", ip, {"email": email}, user)
        if not user.active:
            self._refuse("deactivated", ip, {"email": email}, user)
        return user

    # --- internals ---------------------------------------------------------------------

    def _checked_claims(self, id_token: str, nonce: str, ip: str | None) -> dict[str, Any]:
        try:
            token = jwt.decode(id_token, self.keys(), algorithms=["RS256", "ES256", "PS256"])
        except JoseError as first:
            try:  # the provider may have rotated its keys: read them once more
                token = jwt.decode(id_token, self.keys(refresh=True),
                                   algorithms=["RS256", "ES256", "PS256"])
            except (JoseError, ValueError):
                self._refuse("signature", ip, {"error": type(first).__name__})
        except ValueError as malformed:
            self._refuse("signature", ip, {"error": type(malformed).__name__})
        claims = dict(token.claims)
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        now = int(self.clock.now().timestamp())
        if claims.get("iss") != self.settings.oidc_issuer:
            self._refuse("issuer", ip, {"iss": str(claims.get("iss"))[:200]})
        if self.settings.oidc_client_id not in audiences or (
                len(audiences) > 1 and claims.get("azp") != self.settings.oidc_client_id):
            self._refuse("audience", ip, {"aud": str(audience)[:200]})
        if not isinstance(claims.get("exp"), int) or claims["exp"] + CLOCK_LEEWAY < now:
            self._refuse("expired", ip, {"exp": claims.get("exp")})
        if not isinstance(claims.get("nonce"), str) or not secrets.compare_digest(
                str(claims["nonce"]).encode(), nonce.encode()):
            self._refuse("nonce", ip, {})
        return claims

    def _create(self, claims: dict[str, Any], email: str, ip: str | None) -> User:
        """A new user where the operator mapped an account: the account claim, else the
        e-mail domain; a member unless the role claim says admin or auditor."""
        slug = ""
        if self.settings.oidc_account_claim:
            slug = str(claims.get(self.settings.oidc_account_claim) or "")
        if not slug:
            slug = self.settings.oidc_domain_accounts.get(email.rpartition("@")[2], "")
        with self.database.reading() as session:
            account = session.scalar(select(Account).where(Account.slug == slug)) if slug \
                else None
        if account is None:
            self._refuse("no_account", ip, {"email": email})
        if not account.active:  # no user is made in a suspended account
            self._refuse("suspended", ip, {"email": email, "account": account.slug})
        role = MEMBER
        claimed = claims.get(self.settings.oidc_role_claim) if self.settings.oidc_role_claim \
            else None
        if claimed in (ADMIN, AUDITOR):
            role = claimed
        name = str(claims.get("name") or "")[:200]
        now = self.clock.now()
        with self.database.transaction() as session:
            user = User(account_id=account.id, email=email, name=name, role=role, active=True,
                        created_at=now, password_hash=None)
            session.add(user)
            session.flush()
            actor = Actor(account.id, None, ADMIN, f"single sign-on ({self.name})", ip, "sso")
            trail.record(session, actor=actor, action="user.created", at=now,
                         target_type="user", target_id=user.id,
                         details={"email": email, "role": role, "via": "sso",
                                  "subject": str(claims.get("sub"))[:200]})
            return user

    def _refuse(self, reason: str, ip: str | None, details: dict[str, Any],
                user: User | None = None) -> NoReturn:
        with self.database.transaction() as session:
            trail.record_unattributed(
                session, action=REFUSED, at=self.clock.now(), actor_type="client",
                label=ip or "unknown", account_id=user.account_id if user else None, ip=ip,
                target_type="user" if user else None, target_id=user.id if user else None,
                details={"reason": reason, **details})
        log.info("single sign-on refused: %s", reason)
        raise SignOnRefused(_MESSAGES[reason], "Try again, or ask an administrator of your "
                            "account.", reason=reason)
