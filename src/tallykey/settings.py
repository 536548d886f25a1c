"""The one settings object: every option comes from a `TALLYKEY_*` environment variable."""

from __future__ import annotations

import difflib
import ipaddress
import os
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from tallykey.errors import SettingsError
from tallykey.regions import parse_region_map

DEFAULT_REGION = "eu1"
ENV_PREFIX = "TALLYKEY_"
#: `TALLYKEY_*` variables that are not settings of the server and that it leaves alone:
#: the test suite's and benchmarks' own knobs, and the token an integration reads
#: (docs/settings.md, "Variables that are not settings").
NON_SETTING_VARIABLES = frozenset({"TALLYKEY_TEST_DATABASE_URL", "TALLYKEY_OUTAGE_SECONDS",
                                   "TALLYKEY_TOKEN"})
NON_SETTING_PREFIXES = ("TALLYKEY_TEST_", "TALLYKEY_FAULT_", "TALLYKEY_BENCH_")


#: The shortest node lease (see `Settings.node_lease`): a few heartbeats.
MIN_NODE_LEASE_SECONDS = 5.0


class Settings(BaseSettings):
    """Deployment settings (SPEC §9 names stay stable)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    data_dir: Path = Path("./var")
    database_url: str | None = None
    region: str = DEFAULT_REGION
    regions: str = ""
    trusted_proxies: str = ""
    smtp_url: str | None = None
    mail_from: str = "tallykey@localhost"
    kek: str | None = Field(default=None, repr=False)
    kek_file: Path | None = None
    auth_fail_limit: int = Field(default=60, ge=0)
    public_url: str | None = None
    #: Seconds a cached verification may live without confirmation from the change feed.
    cache_ttl: float = Field(default=5.0, gt=0, le=60)
    #: The most tokens a node keeps in its verification cache; past it the entry loaded
    #: first is evicted (its token's next request is a cache miss). About 1.2 KB each.
    cache_max_tokens: int = Field(default=100_000, ge=1, le=100_000_000)
    #: Seconds a change's author waits for every live node to apply it before answering.
    propagation_timeout: float = Field(default=2.0, ge=0, le=30)
    node_name: str | None = None
    #: Seconds a node keeps answering from its cache while the store cannot be reached
    #: (SPEC §10); 0 refuses at once with 503. It also sets the node lease that
    #: acknowledgements count (`node_lease`), so the two can never contradict each other.
    stale_if_error: float = Field(default=60.0, ge=0, le=3600)
    #: Seconds to wait for a database connection (PostgreSQL: libpq `connect_timeout`).
    db_connect_timeout: int = Field(default=2, ge=1, le=60)
    #: Seconds one statement may run (PostgreSQL `statement_timeout`, SQLite busy wait).
    db_statement_timeout: float = Field(default=5.0, gt=0, le=600)
    #: A connection pooler in front of PostgreSQL: `transaction` (PgBouncer
    #: `pool_mode=transaction`: no prepared statements, no session settings, the feed
    #: polled), `none`, or `auto` (detected at start: see `db.engine.detect_pooler`).
    db_pooler: Literal["auto", "none", "transaction"] = "auto"
    #: How a node learns of changes: `listen` (PostgreSQL LISTEN/NOTIFY wakes it, a slow
    #: poll backs it up), `poll` (it reads the feed every `FEED_POLL_SECONDS`; works
    #: through a pooler in transaction mode, one connection less per node) or `auto`
    #: (`poll` behind a transaction pooler, else `listen`, falling back to `poll` when
    #: LISTEN turns out not to deliver).
    feed_mode: Literal["auto", "listen", "poll"] = "auto"
    outbox_max_attempts: int = Field(default=12, ge=1, le=100)
    worker_interval: float = Field(default=5.0, gt=0, le=3600)
    #: Days of per-hour usage counts (and remembered networks) kept; older ones are pruned.
    usage_retention_days: int = Field(default=90, ge=1, le=3650)
    #: "New network" alerts compare addresses by these prefix lengths (IPv4, IPv6).
    alert_network_prefix_v4: int = Field(default=24, ge=8, le=32)
    alert_network_prefix_v6: int = Field(default=48, ge=16, le=128)
    #: Refused requests of one token in one hour that raise a "denied spike" alert (0: off).
    alert_denied_threshold: int = Field(default=100, ge=0)
    #: Distinct networks one token is used from within a minute (on one node) that raise
    #: a "many networks at once" alert (0: off).
    alert_networks_at_once: int = Field(default=5, ge=0)
    #: argon2id parameters of console passwords (argon2-cffi's profiles). CHEAPEST is for
    #: test suites only: it makes a stolen hash cheap to crack.
    argon2_profile: Literal["RFC_9106_LOW_MEMORY", "RFC_9106_HIGH_MEMORY", "CHEAPEST"] = (
        "RFC_9106_LOW_MEMORY")
    #: `text` (default) or `json`: one JSON line per request and per log record.
    log_format: Literal["text", "json"] = "text"
    #: Public keys that sign leaked-token reports (`POST /api/v1/leaks`): a path to a JSON
    #: file, or the JSON itself; see `tallykey.leaks.signatures`. Empty: reports refused.
    leak_report_keys: str = ""
    #: Let webhooks go to private, loopback and link-local addresses (internal receivers).
    webhook_private_targets: bool = False
    #: Ed25519 private key (PEM, or a path to one) that signs `tallykey audit heads --sign`.
    audit_signing_key: str | None = Field(default=None, repr=False)
    #: When set, `/metrics` answers only `Authorization: Bearer <this value>`.
    metrics_token: str | None = Field(default=None, repr=False)
    #: A TOML scope catalog (SPEC §11, `tallykey.accounts.scopes`); unset: the demo's.
    scopes_file: Path | None = None
    #: The platform's OpenAPI document (JSON, or YAML with PyYAML installed): each
    #: operation's `security: [{tallykey: [scopes]}]` is what `/auth/request` and the
    #: middleware require for it (SPEC §15, `tallykey.auth.operations`); checked against
    #: the scope catalog at start. Unset: scopes come from the gateway or the code.
    openapi_file: Path | None = None
    #: An operation the OpenAPI document does not list: `refuse` (404
    #: `unknown_operation`) or `allow` (any valid token, no particular scope).
    openapi_unlisted: Literal["refuse", "allow"] = "refuse"
    #: What the console calls a workspace ("Project", "Team"...): singular, capitalised.
    workspace_label: str = Field(default="Workspace", min_length=1, max_length=40)
    #: Single sign-on with OpenID Connect (SPEC §12): the provider's issuer URL (its
    #: discovery document is read from `<issuer>/.well-known/openid-configuration`).
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = Field(default=None, repr=False)
    #: The name on the sign-in button: "Sign in with <name>".
    oidc_name: str = "single sign-on"
    #: A claim naming the account (its slug) a new user is created in, e.g. `tallykey_account`.
    oidc_account_claim: str = ""
    #: `example.com=acme,…`: the account a new user is created in, by e-mail domain.
    oidc_domains: str = ""
    #: A claim whose value `admin` makes a new user an administrator, `auditor` an auditor
    #: (else: member).
    oidc_role_claim: str = ""
    oidc_scopes: str = "openid email profile"
    #: Redis shares rate-limit counts across nodes (SPEC §13); unset: each node counts
    #: in process (exact on one node).
    redis_url: str | None = Field(default=None, repr=False)
    #: While Redis cannot be reached: `open` counts each node against the whole limit on
    #: its own; `closed` answers 503 (with Retry-After) for rate-limited tokens.
    redis_failure: Literal["open", "closed"] = "open"
    #: Seconds one Redis call may take (connect and answer) before it counts as failed.
    redis_timeout: float = Field(default=0.25, gt=0, le=10)
    targets: str = (
        "Excel,Power BI,Tableau,Looker,Snowflake,Salesforce,SAP,Workday,Zapier,Custom script,Other"
    )

    @field_validator("region")
    @classmethod
    def _region_is_simple(cls, value: str) -> str:
        if not _simple_region(value):
            raise ValueError("expected 1-8 lowercase letters or digits, e.g. eu1")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = _url_scheme(value)
        if scheme not in DATABASE_SCHEMES:
            raise ValueError(
                "expected a PostgreSQL URL (postgresql://user:password@host:5432/name) or a "
                "SQLite one (sqlite:////path/to/tallykey.db); only PostgreSQL and SQLite are "
                "supported" + (f", not {scheme}://" if scheme else ""))
        try:
            parsed = make_url(value.strip())
        except (ArgumentError, ValueError):
            raise ValueError("expected a database URL such as "
                             "postgresql://user:password@host:5432/name (it does not parse; "
                             "is the port a number?)") from None
        if scheme == "sqlite" and not parsed.database:
            raise ValueError("expected a file: sqlite:////path/to/tallykey.db")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        return _checked_url(value, ("redis", "rediss", "unix"),
                            "redis://host:6379/0, rediss://… or unix:///path/redis.sock",
                            host=False)

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: str | None) -> str | None:
        checked = _checked_url(value, ("smtp", "smtps"),
                               "smtp://user:password@host:587 or smtps://host:465")
        if checked and (urlsplit(checked).path not in ("", "/") or urlsplit(checked).query):
            raise ValueError("expected no path or query: smtp://user:password@host:587")
        return checked

    @field_validator("public_url", "oidc_issuer")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return _checked_url(value, ("http", "https"), "https://tokens.example.com")

    @field_validator("regions")
    @classmethod
    def _regions(cls, value: str) -> str:
        try:
            regions = parse_region_map(value)
        except ValueError as error:
            raise ValueError(f"expected region=url,…: {error}") from None
        for name, url in regions.items():
            if not _simple_region(name):
                raise ValueError(f"expected region=url,… with regions of 1-8 lowercase "
                                 f"letters or digits, not {name!r}")
            _checked_url(url, ("http", "https"), "eu1=https://api-eu1.example.com")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        for part in value.split(","):
            try:
                if part.strip():
                    ipaddress.ip_network(part.strip(), strict=False)
            except ValueError:
                raise ValueError(f"expected addresses or networks separated by commas "
                                 f"(10.0.0.0/8,127.0.0.1), not {part.strip()!r}") from None
        return value

    @field_validator("oidc_domains")
    @classmethod
    def _domains(cls, value: str) -> str:
        for part in value.split(","):
            domain, sep, slug = part.partition("=")
            if part.strip() and not (sep and domain.strip() and slug.strip()):
                raise ValueError(f"expected domain=account,… (example.com=acme), "
                                 f"not {part.strip()!r}")
        return value

    @field_validator("mail_from")
    @classmethod
    def _mail_from(cls, value: str) -> str:
        if "@" not in value or any(c.isspace() for c in value.strip()):
            raise ValueError("expected an e-mail address, e.g. tallykey@example.com")
        return value

    @property
    def node_lease(self) -> float:
        """Seconds of each node's lease (derived, not set): every heartbeat lets a node
        answer from its cache until this long after it, on the database's clock, and a
        change's author awaits or names every node whose lease has not ended. Never
        shorter than `stale_if_error` (a cut-off node stops serving before the moment
        others name), nor than `MIN_NODE_LEASE_SECONDS` (a few heartbeats). A node that
        dies without leaving (crash, kill -9) is named in `complete: false` answers
        until its lease ends."""
        return max(self.stale_if_error, MIN_NODE_LEASE_SECONDS)

    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL: `TALLYKEY_DATABASE_URL`, else SQLite in the data directory."""
        if self.database_url:
            return normalise_database_url(self.database_url)
        return f"sqlite:///{(self.data_dir / 'tallykey.db').resolve()}"

    @cached_property
    def region_urls(self) -> dict[str, str]:
        """`TALLYKEY_REGIONS` (`eu1=https://…,us1=https://…`) as a mapping."""
        return parse_region_map(self.regions)

    @cached_property
    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(
            ipaddress.ip_network(part.strip(), strict=False)
            for part in self.trusted_proxies.split(",")
            if part.strip()
        )

    @property
    def target_list(self) -> list[str]:
        """The partner software a token can name as its target (`TALLYKEY_TARGETS`)."""
        return [name.strip() for name in self.targets.split(",") if name.strip()]

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_issuer and self.oidc_client_id and self.oidc_client_secret)

    @cached_property
    def oidc_domain_accounts(self) -> dict[str, str]:
        """`TALLYKEY_OIDC_DOMAINS` (`example.com=acme,…`): e-mail domain to account slug."""
        pairs = (part.partition("=") for part in self.oidc_domains.split(",") if part.strip())
        return {domain.strip().lower(): slug.strip() for domain, _, slug in pairs}

    def base_url_for(self, region: str) -> str | None:
        return self.region_urls.get(region)


def normalise_database_url(url: str) -> str:
    """Accept `postgres://` and `postgresql://` and pick psycopg 3 as the driver."""
    for plain in ("postgres://", "postgresql://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


DATABASE_SCHEMES = frozenset({"sqlite", "postgres", "postgresql", "postgresql+psycopg"})


def _simple_region(value: str) -> bool:
    return value.isascii() and value.isalnum() and value.islower() and len(value) <= 8


def _url_scheme(value: str) -> str:
    scheme, sep, _ = value.strip().partition("://")
    return scheme.lower() if sep else ""


def _checked_url(value: str | None, schemes: tuple[str, ...], example: str, *,
                 host: bool = True) -> str | None:
    """`value` when it is a URL with one of `schemes` (and a host); else `ValueError`
    saying what is expected."""
    if value is None:
        return None
    scheme = _url_scheme(value)
    if scheme not in schemes:
        raise ValueError(f"expected a URL such as {example}"
                         + (f", not {scheme}://" if scheme else ""))
    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ValueError(f"expected a URL such as {example} (the port is not a number)") \
            from None
    if host and scheme != "unix" and not parts.hostname:
        raise ValueError(f"expected a URL with a host, such as {example}")
    return value


def setting_names() -> list[str]:
    """Every setting's environment variable, as settings.py declares them."""
    return [ENV_PREFIX + name.upper() for name in Settings.model_fields]


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    known = set(setting_names())
    return sorted(name for name in environ
                  if name.upper().startswith(ENV_PREFIX) and name.upper() not in known
                  and name.upper() not in NON_SETTING_VARIABLES
                  and not name.upper().startswith(NON_SETTING_PREFIXES))


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Refuse a `TALLYKEY_*` variable that names no setting (a typo would otherwise be
    ignored silently), naming the nearest setting."""
    environ = os.environ if environ is None else environ
    unknown = unknown_variables(environ)
    if unknown:
        name = unknown[0]
        suffixes = [known.removeprefix(ENV_PREFIX) for known in setting_names()]
        nearest = difflib.get_close_matches(name.upper().removeprefix(ENV_PREFIX), suffixes,
                                            n=1, cutoff=0.6)
        raise SettingsError(f"unknown setting {name}" + (
            f" — did you mean {ENV_PREFIX}{nearest[0]}?" if nearest else
            " (docs/settings.md lists every setting)"))


def describe_error(error: ValidationError) -> str:
    """One line per bad value: the setting, what it expects, and what was given (masked
    for secrets and passwords in URLs)."""
    lines = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else ""
        name = ENV_PREFIX + field.upper()
        message = str(item["msg"]).removeprefix("Value error, ")
        message = message.replace("Input should be", "expected").replace(
            "a valid number, unable to parse string as a number", "a number").replace(
            "a valid integer, unable to parse string as an integer", "a whole number").replace(
            "a valid boolean, unable to interpret input", "true or false")
        if message.startswith("String should have"):
            message = "expected a text that has" + message.removeprefix("String should have")
        info = Settings.model_fields.get(field)
        given = item.get("input")
        shown = ("" if not isinstance(given, str) else " (value hidden)"
                 if info is not None and not info.repr else f" (got {mask_url(given)!r})")
        lines.append(f"invalid setting {name}: {message}{shown}")
    return "\n".join(lines)


def mask_url(value: str) -> str:
    """`value` with the password of a URL replaced by `***`."""
    try:
        parts = urlsplit(value)
        password = parts.password
    except ValueError:
        return value
    if not password:
        return value
    return value.replace(f":{password}@", ":***@", 1)


def load_settings() -> Settings:
    """The settings from the environment; `SettingsError` (one line per problem) for an
    unknown `TALLYKEY_*` variable or a value the server cannot use."""
    check_environment()
    try:
        return Settings()
    except ValidationError as error:
        raise SettingsError(describe_error(error)) from None
