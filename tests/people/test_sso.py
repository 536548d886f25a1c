"""Single sign-on against a real OpenID Provider (oidc-provider, run by Node): users are
matched by verified e-mail or created where an account is mapped, and ID tokens with a
wrong audience, issuer, nonce or signature, an expired one, or an unverified e-mail are
refused with their reason and audited."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from authlib.integrations.httpx_client import OAuth2Client
from joserfc.jwk import KeySet
from sqlalchemy import select

from tallykey.accounts.models import User
from tallykey.audit.models import AuditEvent
from tallykey.clock import FrozenClock
from tallykey.errors import SignOnRefused
from tallykey.people.sso import exact_address
from tallykey.runtime import Runtime
from tallykey.settings import Settings

from ..conftest import World
from .openid import CLIENT_SECRET, Provider, client, new_signing_key, running_provider

REDIRECT = "https://keys.acme.test/console/oidc/callback"
OTHER_REDIRECT = "https://other-app.example/callback"
ACCOUNTS = {
    "alice": {"email": "alice@acme.test", "email_verified": True, "name": "Alice Liddell"},
    "carol": {"email": "Carol@Elsewhere.test", "email_verified": True,
              "tallykey_account": "globex", "tallykey_role": "admin"},
    "dana": {"email": "dana@acme.test", "email_verified": True, "tallykey_role": "auditor"},
    "admin": {"email": "admin@acme.test", "email_verified": True},
    "member": {"email": "member@acme.test", "email_verified": True},
    "mallory": {"email": "member@acme.test", "email_verified": False},
    "stranger": {"email": "someone@unmapped.test", "email_verified": True},
}


@pytest.fixture(scope="module")
def providers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Provider]]:
    """The provider tallykey trusts; a second one signing with the same key under another
    issuer; a third with keys of its own."""
    logs: Path = tmp_path_factory.mktemp("openid")
    key = new_signing_key("trusted-1")
    clients = [client("tallykey", REDIRECT), client("other-app", OTHER_REDIRECT)]
    with running_provider(clients, ACCOUNTS, [key], logs / "trusted.log") as trusted, \
            running_provider(clients, ACCOUNTS, [key], logs / "twin.log") as twin, \
            running_provider(clients, ACCOUNTS, [new_signing_key("other-1")],
                             logs / "other.log") as other:
        yield {"trusted": trusted, "twin": twin, "other": other}


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime.now(UTC))  # ID tokens carry the provider's real time


@pytest.fixture
def settings(database_url: str, tmp_path: Path, providers: dict[str, Provider]) -> Settings:
    return Settings(database_url=database_url, data_dir=tmp_path / "data", region="eu1",
                    public_url="https://keys.acme.test",
                    oidc_issuer=providers["trusted"].issuer, oidc_client_id="tallykey",
                    oidc_client_secret=CLIENT_SECRET, oidc_name="Acme ID",
                    oidc_domains="acme.test=acme", oidc_account_claim="tallykey_account",
                    oidc_role_claim="tallykey_role",
                    oidc_scopes="openid email profile tallykey")


def sign_in(rt: Runtime, provider: Provider, login: str) -> tuple[str, str]:
    """Begin at tallykey, sign in at the provider; (the callback's state, and its URL)."""
    started = rt.sso.begin(REDIRECT, "/console/tokens")
    assert "code_challenge_method=S256" in started.url and "nonce=" in started.url
    return started.state, provider.authorize(started.url, login, REDIRECT)


def finish(rt: Runtime, state: str, callback: str,
           browser_state: str | None = None) -> tuple[User, str]:
    query = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
    return rt.sso.finish(state=query["state"], browser_state=browser_state or state,
                         code=query.get("code"), error=query.get("error"),
                         redirect_uri=REDIRECT, ip="203.0.113.50", issuer=query.get("iss"))


def id_token(provider: Provider, client_id: str, redirect: str, login: str,
             nonce: str = "nonce-of-another-sign-in") -> str:
    """A genuine ID token from `provider`, issued to `client_id`."""
    with OAuth2Client(client_id=client_id, client_secret=CLIENT_SECRET,
                      scope="openid email profile tallykey", redirect_uri=redirect,
                      code_challenge_method="S256") as oauth:
        verifier = "v" * 64
        url, _ = oauth.create_authorization_url(f"{provider.issuer}/auth", state="s",
                                                nonce=nonce, code_verifier=verifier)
        callback = provider.authorize(url, login, redirect)
        code = parse_qs(urlsplit(callback).query)["code"][0]
        tokens = oauth.fetch_token(f"{provider.issuer}/token", code=code,
                                   code_verifier=verifier, grant_type="authorization_code")
    return str(tokens["id_token"])


def refusals(rt: Runtime) -> list[str]:
    with rt.database.reading() as session:
        return [e.details["reason"] for e in session.scalars(select(AuditEvent).where(
            AuditEvent.action == "user.sso_refused").order_by(AuditEvent.id))]


def test_a_verified_email_signs_in_and_a_mapped_domain_creates_a_member(
        world: World, providers: dict[str, Provider]) -> None:
    rt = world.rt
    user, target = finish(rt, *sign_in(rt, providers["trusted"], "alice"))
    assert (user.email, user.account_id, user.role, user.name) == (
        "alice@acme.test", world.acme_id, "member", "Alice Liddell")
    assert target == "/console/tokens"
    again, _ = finish(rt, *sign_in(rt, providers["trusted"], "alice"))
    assert again.id == user.id  # found by e-mail, not created twice
    existing, _ = finish(rt, *sign_in(rt, providers["trusted"], "admin"))
    assert existing.id == world.admin.id
    with rt.database.reading() as session:
        created = session.scalar(select(AuditEvent).where(
            AuditEvent.action == "user.created", AuditEvent.target_id == user.id))
    assert created is not None and created.details["via"] == "sso"


def test_an_account_claim_and_a_role_claim_make_an_admin_there(
        world: World, providers: dict[str, Provider]) -> None:
    user, _ = finish(world.rt, *sign_in(world.rt, providers["trusted"], "carol"))
    assert (user.email, user.account_id, user.role) == ("carol@elsewhere.test",
                                                       world.globex_id, "admin")


def test_a_role_claim_of_auditor_makes_an_auditor(
        world: World, providers: dict[str, Provider]) -> None:
    user, _ = finish(world.rt, *sign_in(world.rt, providers["trusted"], "dana"))
    assert (user.email, user.account_id, user.role) == ("dana@acme.test", world.acme_id,
                                                       "auditor")


def test_unverified_unmapped_and_deactivated_users_are_refused(
        world: World, providers: dict[str, Provider]) -> None:
    rt = world.rt
    with pytest.raises(SignOnRefused, match="not verified your e-mail"):
        finish(rt, *sign_in(rt, providers["trusted"], "mallory"))
    with pytest.raises(SignOnRefused, match="No tallykey account"):
        finish(rt, *sign_in(rt, providers["trusted"], "stranger"))
    rt.accounts.update_user(world.as_admin, world.member.id, active=False)
    with pytest.raises(SignOnRefused, match="deactivated"):
        finish(rt, *sign_in(rt, providers["trusted"], "member"))
    assert refusals(rt) == ["email_unverified", "no_account", "deactivated"]
    with rt.database.reading() as session:
        deactivated = session.scalars(select(AuditEvent).where(
            AuditEvent.action == "user.sso_refused")).all()[-1]
    assert deactivated.account_id == world.acme_id and deactivated.ip == "203.0.113.50"


def test_the_state_must_be_this_browsers_and_is_spent_once(
        world: World, providers: dict[str, Provider]) -> None:
    rt = world.rt
    state, callback = sign_in(rt, providers["trusted"], "alice")
    with pytest.raises(SignOnRefused, match="not started here"):
        finish(rt, state, callback, browser_state="someone-elses-state")
    finish(rt, state, callback)
    with pytest.raises(SignOnRefused, match="not started here"):
        finish(rt, state, callback)  # replayed callback
    mixed_up = callback + "&iss=https%3A%2F%2Fevil.example"
    state, callback = sign_in(rt, providers["trusted"], "alice")
    query = callback.replace("iss=", "x=") + mixed_up[mixed_up.rindex("&iss="):]
    with pytest.raises(SignOnRefused, match="another provider"):
        finish(rt, state, query)
    assert refusals(rt) == ["state", "state", "issuer"]


def test_id_tokens_with_a_wrong_audience_issuer_nonce_or_signature_are_refused(
        world: World, clock: FrozenClock, providers: dict[str, Provider]) -> None:
    rt, trusted = world.rt, providers["trusted"]
    genuine = id_token(trusted, "tallykey", REDIRECT, "alice", nonce="the-nonce")
    assert rt.sso.accept(genuine, "the-nonce", None).email == "alice@acme.test"

    with pytest.raises(SignOnRefused, match="does not belong to this sign-in"):
        rt.sso.accept(genuine, "the nonce of this sign-in", None)
    with pytest.raises(SignOnRefused, match="another application"):
        rt.sso.accept(id_token(trusted, "other-app", OTHER_REDIRECT, "alice",
                               nonce="the-nonce"), "the-nonce", None)
    with pytest.raises(SignOnRefused, match="another provider"):
        rt.sso.accept(id_token(providers["twin"], "tallykey", REDIRECT, "alice",
                               nonce="the-nonce"), "the-nonce", None)
    with pytest.raises(SignOnRefused, match="not signed by its keys"):
        rt.sso.accept(id_token(providers["other"], "tallykey", REDIRECT, "alice",
                               nonce="the-nonce"), "the-nonce", None)
    header, payload, signature = genuine.split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    with pytest.raises(SignOnRefused, match="not signed by its keys"):
        rt.sso.accept(f"{header}.{payload}.{flipped}", "the-nonce", None)
    with pytest.raises(SignOnRefused, match="not signed by its keys"):
        rt.sso.accept("not.a.token", "the-nonce", None)
    clock.advance(timedelta(hours=2))
    with pytest.raises(SignOnRefused, match="expired"):
        rt.sso.accept(genuine, "the-nonce", None)
    assert refusals(rt) == ["nonce", "audience", "issuer", "signature", "signature",
                            "signature", "expired"]


def test_a_sign_in_left_for_more_than_ten_minutes_is_refused(
        world: World, clock: FrozenClock, providers: dict[str, Provider]) -> None:
    state, callback = sign_in(world.rt, providers["trusted"], "alice")
    clock.advance(timedelta(minutes=10, seconds=1))
    with pytest.raises(SignOnRefused, match="took too long"):
        finish(world.rt, state, callback)


def test_keys_the_provider_rotated_in_are_read_again(world: World,
                                                     providers: dict[str, Provider]) -> None:
    """A cached key set that lacks the token's key (the provider rotated) is read once
    more before the token is refused."""
    stale = new_signing_key("retired-1")
    public = {k: v for k, v in stale.items() if k not in {"d", "p", "q", "dp", "dq", "qi"}}
    world.rt.sso._keys = KeySet.import_key_set({"keys": [public]})
    token = id_token(providers["trusted"], "tallykey", REDIRECT, "alice", nonce="n")
    assert world.rt.sso.accept(token, "n", None).email == "alice@acme.test"
    assert world.rt.sso.keys().get_by_kid("trusted-1") is not None


def test_only_the_exact_address_counts_never_a_unicode_lookalike() -> None:
    assert exact_address("Carol@Elsewhere.test") == "carol@elsewhere.test"
    assert exact_address("josé@acme.test") == "josé@acme.test"
    for lookalike in ("\u212aim-admin@acme.test",  # the Kelvin sign reads as k
                      "\uff41dmin@acme.test",  # a fullwidth a
                      "admin@acme.te\u017ft",  # a long s folds to s
                      "jose\u0301@acme.test"):  # a combining accent, not é
        assert exact_address(lookalike) is None, lookalike
