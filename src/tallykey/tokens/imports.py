"""Imported keys (SPEC §16): keys the platform issued before tallykey, brought in by their
SHA-256 alone so that each keeps verifying with its original string, whatever its format.

* Only `sha256(key)` is stored (in `token_secrets`, where a native token's hash lives), so
  the verifier finds an imported key with the very same indexed look-up and cache as a
  native one. No character of the key is kept: an imported key's public id, and so its
  shown prefix (`imported:<8 hex>`), is the start of that hash.
* A plaintext key must look like a key: 16 to 512 printable ASCII characters without
  whitespace or commas, not shaped like a tallykey token (`tlk_…`), and not guessable
  (at least 8 distinct characters and an estimated 64 bits). A `sha256:<hex>` entry is
  taken as given: the platform vouches that the key behind it is as strong.
* Idempotent by hash: a key already imported into this account answers its token id
  (`existing`) and changes nothing; a hash held by another account is refused for that
  item alone (`unavailable`), without saying more.
* One call takes up to `MAX_KEYS` keys, validated first (any invalid item refuses the
  whole call with its index, storing nothing), then written with bulk inserts in one
  transaction and audited as one `token.imported` entry with the counts.
* An imported key revokes, suspends, resumes, expires and is edited like any token
  (those verbs are the token service's own); it cannot be rotated or renewed: tallykey
  cannot issue a new secret in a format it did not make (409, see `service`).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.exc import IntegrityError

from tallykey.accounts.models import Account
from tallykey.actor import Actor
from tallykey.audit import trail
from tallykey.controls import rules
from tallykey.db.base import new_id
from tallykey.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from tallykey.identities.models import Identity
from tallykey.tokens import policy
from tallykey.tokens.format import PRODUCT_PREFIX
from tallykey.tokens.models import IMPORTED, IMPORTED_PREFIX, Token, TokenSecret

MAX_KEYS = 10_000
MIN_KEY_LENGTH = 16
MAX_KEY_LENGTH = 512
MIN_DISTINCT_CHARACTERS = 8
MIN_ESTIMATED_BITS = 64
#: The audit action of one import call (its counts; each token's creator is its row's).
TOKEN_IMPORTED = "token.imported"  # noqa: S105 - an audit action, not a secret

CREATED = "created"
EXISTING = "existing"
UNAVAILABLE = "unavailable"

#: What the verifier may look up as a foreign key: the same characters an import accepts.
KEY_CHARACTERS = r"[!-+\--~]"  # printable ASCII but space and comma
_KEY = re.compile(rf"{KEY_CHARACTERS}{{{MIN_KEY_LENGTH},{MAX_KEY_LENGTH}}}")
_HASH = re.compile(r"sha256:([0-9a-f]{64})")
_CHUNK = 500  # hashes per `IN (…)` look-up, far below every driver's parameter limit


@dataclass(frozen=True)
class ImportItem:
    """One key to import, as the caller gave it (not yet validated): exactly one of
    `key` (the plaintext, hashed at once and never kept) and `hash` (`sha256:<hex>`)."""

    name: str
    key: str | None = None
    hash: str | None = None
    expires_at: datetime | date | None = None
    expires_in_days: int | None = None
    description: str = ""
    scopes: Sequence[str] = ()
    metadata: Any = None
    external_id: str | None = None
    #: The identity the key belongs to (SPEC §16): its id or its external id.
    identity_id: str | None = None

    def __repr__(self) -> str:  # never print a key
        return f"ImportItem(name={self.name!r})"


@dataclass(frozen=True)
class ImportResult:
    """One item's outcome: `created`, `existing` or `unavailable` (held elsewhere)."""

    index: int
    outcome: str
    token_id: str | None
    prefix: str
    message: str | None = None


@dataclass
class ImportReport:
    results: list[ImportResult] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(1 for result in self.results if result.outcome == outcome)


def key_hash(item: ImportItem, index: int) -> str:
    """The hex SHA-256 an item imports, or `ValidationFailed` naming the item and why."""
    where = f"keys[{index}]"
    if (item.key is None) == (item.hash is None):
        raise ValidationFailed(f"{where} needs exactly one of 'key' and 'hash'.",
                               "Send {\"key\": \"<the key>\"} or "
                               "{\"hash\": \"sha256:<64 lowercase hex digits>\"}.",
                               field=f"{where}", index=index)
    if item.hash is not None:
        shaped = _HASH.fullmatch(item.hash.strip().lower())
        if shaped is None:
            raise ValidationFailed(f"{where}.hash is not a SHA-256 hash.",
                                   "Write it as sha256:<64 hex digits> (the SHA-256 of the "
                                   "key's exact characters, as ASCII).",
                                   field=f"{where}.hash", index=index)
        return shaped.group(1)
    assert item.key is not None
    problem = key_problem(item.key)
    if problem is not None:
        raise ValidationFailed(f"{where}.key {problem}", "Import only the keys your platform "
                               "issued, exactly as they were issued.",
                               field=f"{where}.key", index=index)
    return hashlib.sha256(item.key.encode("ascii")).hexdigest()


def key_problem(key: str) -> str | None:
    """Why a plaintext key cannot be imported (never quoting it), or None."""
    if key.startswith(PRODUCT_PREFIX):
        return ("is shaped like a tallykey token (tlk_…): tallykey's own tokens verify "
                "as they are and are never imported.")
    if not _KEY.fullmatch(key):
        if not MIN_KEY_LENGTH <= len(key) <= MAX_KEY_LENGTH:
            return (f"is {len(key)} characters long; an imported key has {MIN_KEY_LENGTH} "
                    f"to {MAX_KEY_LENGTH}.")
        return ("contains whitespace, a comma or a character outside printable ASCII, "
                "which an Authorization header cannot carry as one credential.")
    distinct = len(set(key))
    if distinct < MIN_DISTINCT_CHARACTERS or len(key) * math.log2(distinct) < MIN_ESTIMATED_BITS:
        return (f"is too easy to guess (about {int(len(key) * math.log2(max(distinct, 1)))} "
                f"bits; at least {MIN_ESTIMATED_BITS} are required).")
    return None


def import_keys(database: Any, clock: Any, catalog: Any, actor: Actor,
                items: Sequence[ImportItem]) -> ImportReport:
    """Import `items` for the actor's account (an administrator's act). Validates every
    item first (`ValidationFailed` with its index; nothing stored), then writes the new
    ones in bulk inside one transaction. See the module's description."""
    if not actor.is_admin:
        raise PermissionDenied("Only account administrators can import keys.",
                               "Ask an administrator to import them.")
    if not items:
        raise ValidationFailed("keys is empty: nothing to import.", field="keys")
    if len(items) > MAX_KEYS:
        raise ValidationFailed(f"{len(items)} keys in one call; at most {MAX_KEYS} are "
                               "accepted.", f"Split the import into calls of up to {MAX_KEYS}.",
                               field="keys", max_keys=MAX_KEYS)
    now = clock.now()
    with database.reading() as session:
        account = session.get_one(Account, actor.account_id)
        max_validity_days, region = account.max_validity_days, account.region
        identities = _identities(session, actor, items)
    rows: list[tuple[str, dict[str, Any]]] = []
    for index, item in enumerate(items):
        digest = key_hash(item, index)
        try:
            row = _row(item, now, max_validity_days, catalog)
            row["identity_id"] = _identity_of(item, identities)
        except (ValidationFailed, NotFound) as error:
            error.message = f"keys[{index}]: {error.message}"
            error.details["index"] = index
            raise
        rows.append((digest, row))
    try:
        return _store(database, actor, now, region, rows)
    except IntegrityError:
        pass  # another import took one of these hashes meanwhile: now it is seen as held
    try:
        return _store(database, actor, now, region, rows)
    except IntegrityError:
        raise Conflict("Other imports of these keys are running at the same time.",
                       "Send the call again: an import is idempotent.") from None


def _store(database: Any, actor: Actor, now: datetime, region: str,
           rows: list[tuple[str, dict[str, Any]]]) -> ImportReport:
    """Look the hashes up and insert the new ones, in one transaction."""
    with database.transaction() as session:
        held: dict[str, tuple[str, str]] = {}
        digests = list({digest for digest, _ in rows})
        for start in range(0, len(digests), _CHUNK):
            chunk = digests[start:start + _CHUNK]
            held.update({found: (token_id, account_id) for found, token_id, account_id in
                         session.execute(select(TokenSecret.secret_hash, Token.id,
                                                Token.account_id)
                                         .join(Token, Token.id == TokenSecret.token_id)
                                         .where(TokenSecret.secret_hash.in_(chunk)))})
        report = ImportReport()
        tokens: list[dict[str, Any]] = []
        secrets: list[dict[str, Any]] = []
        for index, (digest, row) in enumerate(rows):
            shown = IMPORTED_PREFIX + digest[:8]
            if digest in held:
                token_id, account_id = held[digest]
                if account_id == actor.account_id:
                    report.results.append(ImportResult(index, EXISTING, token_id, shown))
                else:
                    report.results.append(ImportResult(
                        index, UNAVAILABLE, None, shown,
                        "This key cannot be imported into this account."))
                continue
            token_id = new_id()
            held[digest] = (token_id, actor.account_id)  # a repeat within the call
            tokens.append({**row, "id": token_id, "account_id": actor.account_id,
                           "kind": IMPORTED, "region": region,
                           "public_id": digest[:16], "created_by_id": actor.user_id,
                           "created_ip": actor.ip, "created_at": now, "updated_at": now})
            secrets.append({"token_id": token_id, "secret_hash": digest, "generation": 1,
                            "created_at": now})
            report.results.append(ImportResult(index, CREATED, token_id, shown))
        if tokens:  # Core executemany: the ORM's bulk path costs several times more
            session.execute(insert(cast(Table, Token.__table__)), tokens)
            session.execute(insert(cast(Table, TokenSecret.__table__)), secrets)
        trail.record(session, actor=actor, action=TOKEN_IMPORTED, at=now,
                     target_type="account", target_id=actor.account_id,
                     details={"created": report.count(CREATED),
                              "existing": report.count(EXISTING),
                              "unavailable": report.count(UNAVAILABLE)})
    return report


def _identities(session: Any, actor: Actor, items: Sequence[ImportItem]) -> dict[str, str]:
    """The identities the items name, by id and by external id, each mapped to its id:
    one query per chunk of names, only of the actor's account."""
    refs = sorted({item.identity_id.strip() for item in items
                   if isinstance(item.identity_id, str) and item.identity_id.strip()})
    found: dict[str, str] = {}
    for start in range(0, len(refs), _CHUNK):
        chunk = refs[start:start + _CHUNK]
        for identity_id, external_id in session.execute(
                select(Identity.id, Identity.external_id).where(
                    Identity.account_id == actor.account_id,
                    Identity.id.in_(chunk) | Identity.external_id.in_(chunk))):
            found[identity_id] = identity_id
            found[external_id] = identity_id
    return found


def _identity_of(item: ImportItem, identities: dict[str, str]) -> str | None:
    if item.identity_id is None:
        return None
    if not isinstance(item.identity_id, str) or not item.identity_id.strip():
        raise ValidationFailed("identity_id is empty.", "Give an identity's id or "
                               "external id, or leave the field out.", field="identity_id")
    ref = item.identity_id.strip()
    if ref not in identities:
        raise NotFound(f"No identity {ref[:64]!r} in this account.",
                       "Create it first (POST /api/v1/identities) or correct the name.",
                       field="identity_id")
    return identities[ref]


def _row(item: ImportItem, now: datetime, max_validity_days: int,
         catalog: Any) -> dict[str, Any]:
    """The columns an item sets, validated as `TokenService.issue` validates them."""
    return {
        "name": policy.clean_name(item.name),
        "description": policy.clean_description(item.description),
        "scopes": policy.clean_scopes(item.scopes, catalog),
        "ip_allowlist": [],
        "expires_at": policy.resolve_expiry(now, expires_at=item.expires_at,
                                            expires_in_days=item.expires_in_days,
                                            max_validity_days=max_validity_days),
        "metadata": rules.clean_metadata(item.metadata),
        "external_id": rules.clean_external_id(item.external_id),
    }


def items_from(objects: Sequence[Mapping[str, Any]]) -> list[ImportItem]:
    """`ImportItem`s from plain JSON objects (the CLI's JSON lines)."""
    allowed = set(ImportItem.__dataclass_fields__)
    items = []
    for index, value in enumerate(objects):
        if not isinstance(value, Mapping):
            raise ValidationFailed(f"keys[{index}] is not a JSON object.", index=index)
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise ValidationFailed(f"keys[{index}] has unknown fields: {', '.join(unknown)}.",
                                   f"Use {', '.join(sorted(allowed))}.", index=index)
        fields = dict(value)
        if isinstance(fields.get("expires_at"), str):
            try:
                fields["expires_at"] = date.fromisoformat(fields["expires_at"])
            except ValueError:
                try:
                    fields["expires_at"] = datetime.fromisoformat(fields["expires_at"])
                except ValueError:
                    raise ValidationFailed(f"keys[{index}].expires_at is not an ISO 8601 "
                                           "date or date-time.", index=index) from None
        items.append(ImportItem(**fields))
    return items
