"""The one settings object: every option comes from a `TALLYKEY_*` environment variable."""

from __future__ import annotations

import ipaddress
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tallykey.regions import parse_region_map

DEFAULT_REGION = "eu1"
#: The shortest node lease (see `Settings.node_lease`): a few heartbeats.
MIN_NODE_LEASE_SECONDS = 5.0


class Settings(BaseSettings):
    """Deployment settings (SPEC §9 names stay stable)."""

    model_config = SettingsConfigDict(env_prefix="TALLYKEY_", extra="ignore")

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
    outbox_max_attempts: int = Field(default=12, ge=1, le=100)
    worker_interval: float = Field(default=5.0, gt=0, le=3600)
    #: Days of per-hour usage counts (and remembered networks) kept; older ones are pruned.
    usage_retention_days: int = Field(default=90, ge=1, le=3650)
    #: "New network" alerts compare addresses by these prefix lengths (IPv4, IPv6).
    alert_network_prefix_v4: int = Field(default=24, ge=8, le=32)
    alert_network_prefix_v6: int = Field(default=48, ge=16, le=128)
    #: Refused requests of one token in one hour that raise a "denied spike" alert (0: off).
    alert_denied_threshold: int = Field(default=100, ge=0)
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
    #: A claim whose value `admin` makes a new user an administrator (else: member).
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
        if not value.isascii() or not value.isalnum() or not value.islower() or len(value) > 8:
            raise ValueError("TALLYKEY_REGION must be 1-8 lowercase letters or digits, e.g. eu1")
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


def load_settings() -> Settings:
    return Settings()
