"""Anchoring the audit chains outside the store.

The hash chain (`audit.chain`) finds an edited or deleted entry in the middle, but whoever
can write the whole table can cut entries off the end and reset the head, or rewrite a
chain consistently. The defence is a copy of the heads kept elsewhere: `heads` lists each
chain's last position and hash, `heads_document` wraps them (signed with an Ed25519 key
from `TALLYKEY_AUDIT_SIGNING_KEY` when one is configured), and `check_against` proves that
every saved head is still in the store, unchanged: a truncated chain lacks the saved
position, a rewritten one has another hash there.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from sqlalchemy import select

from tallykey.audit.chain import NO_ACCOUNT, chain_of
from tallykey.audit.models import AuditChainHead, AuditEvent
from tallykey.db.engine import Database
from tallykey.errors import AnchorError

FORMAT = "tallykey-audit-heads/1"


def heads(database: Database, slugs: Mapping[str, str],
          account_id: str | None = None) -> list[dict[str, Any]]:
    """Each chain's head: `chain`, `account` (its slug from `slugs`, account id -> slug;
    or `-`), `seq` and `hash`."""
    with database.reading() as session:
        rows = session.scalars(select(AuditChainHead).where(*(
            [AuditChainHead.chain == chain_of(account_id)] if account_id else []))
            .order_by(AuditChainHead.chain))
        return [{"chain": row.chain, "account": slugs.get(row.chain, NO_ACCOUNT),
                 "seq": row.seq, "hash": row.hash} for row in rows]


def _signed_part(document: dict[str, Any]) -> bytes:
    body = {key: document[key] for key in ("format", "taken_at", "heads")}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def heads_document(database: Database, now: datetime, key: Ed25519PrivateKey | None,
                   slugs: Mapping[str, str], account_id: str | None = None
                   ) -> dict[str, Any]:
    """The heads as a JSON-ready document, with an Ed25519 signature when `key` is given."""
    document: dict[str, Any] = {"format": FORMAT, "taken_at": now.isoformat(),
                                "heads": heads(database, slugs, account_id)}
    if key is not None:
        public = key.public_key().public_bytes(serialization.Encoding.Raw,
                                               serialization.PublicFormat.Raw)
        document["signature"] = {
            "alg": "Ed25519", "public_key": base64.b64encode(public).decode(),
            "value": base64.b64encode(key.sign(_signed_part(document))).decode()}
    return document


def check_against(database: Database, document: Any,
                  public_key: Ed25519PublicKey | None) -> list[str]:
    """Problems found comparing the store with a saved heads document (empty: every saved
    head is still there, unchanged). With `public_key`, the document must carry a valid
    signature by that key."""
    if not isinstance(document, dict) or document.get("format") != FORMAT or not isinstance(
            document.get("heads"), list):
        raise AnchorError(f"This is not a saved heads document ({FORMAT}).")
    problems = []
    if public_key is not None:
        problems.extend(_signature_problems(document, public_key))
    with database.reading() as session:
        for saved in document["heads"]:
            chain, seq, digest = saved.get("chain"), saved.get("seq"), saved.get("hash")
            if not isinstance(chain, str) or not isinstance(seq, int) or seq < 0:
                raise AnchorError(f"A saved head is malformed: {saved!r}.")
            if seq == 0:
                continue
            stored = session.scalar(select(AuditEvent.hash).where(
                AuditEvent.chain == chain, AuditEvent.seq == seq))
            label = saved.get("account") or chain
            if stored is None:
                problems.append(f"chain {label}: entry {seq} is gone (the chain was cut "
                                "back after the heads were saved)")
            elif stored != digest:
                problems.append(f"chain {label}: entry {seq} has another hash than the "
                                "saved one (the chain was rewritten)")
    return problems


def _signature_problems(document: dict[str, Any], public_key: Ed25519PublicKey) -> list[str]:
    signature = document.get("signature")
    if not isinstance(signature, dict) or not isinstance(signature.get("value"), str):
        return ["the saved heads are not signed"]
    try:
        public_key.verify(base64.b64decode(signature["value"]), _signed_part(document))
    except (InvalidSignature, ValueError):
        return ["the saved heads' signature does not match (the document was altered, "
                "or signed with another key)"]
    return []


def load_private_key(setting: str) -> Ed25519PrivateKey:
    """`TALLYKEY_AUDIT_SIGNING_KEY`: a PEM (PKCS#8) Ed25519 private key, or a file path."""
    try:
        key = serialization.load_pem_private_key(_pem(setting), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise AnchorError("TALLYKEY_AUDIT_SIGNING_KEY is not a PEM private key.") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AnchorError("TALLYKEY_AUDIT_SIGNING_KEY is not an Ed25519 private key.")
    return key


def load_public_key(text: str) -> Ed25519PublicKey:
    """A PEM Ed25519 public key (or a file path); a private key gives its public half."""
    pem = _pem(text)
    try:
        key: Any = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm):
        try:
            key = serialization.load_pem_private_key(pem, password=None).public_key()
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise AnchorError("The public key is not a PEM key.") from None
    if not isinstance(key, Ed25519PublicKey):
        raise AnchorError("The public key is not an Ed25519 key.")
    return key


def _pem(text: str) -> bytes:
    text = text.strip()
    if not text.startswith("-----BEGIN"):
        try:
            text = Path(text).read_text()
        except OSError as error:
            raise AnchorError(f"Cannot read the key file {text!r}: {error.strerror}.") \
                from None
    return text.encode()
