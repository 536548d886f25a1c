"""The vault: seals application-token secrets for later retrieval, envelope style.

Each account has a data key (256-bit, random), stored only wrapped by the current
key-encryption key (KEK) from configuration, tagged with that key's id. Each secret is
sealed with AES-256-GCM under its account's data key, with the token id and secret
generation as associated data, so a ciphertext copied onto another row fails to open.
Verification never needs any of this: only retrieval and sealing do.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
from collections.abc import Callable
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tallykey.clock import Clock
from tallykey.db.engine import Database
from tallykey.errors import KeyConfigError, TamperedCiphertext
from tallykey.keys.keyring import KeyRing
from tallykey.keys.models import AccountKey

NONCE_BYTES = 12


def _dek_aad(account_id: str) -> bytes:
    return f"tallykey/data-key/{account_id}".encode()


def _secret_aad(token_id: str, generation: int) -> bytes:
    return f"tallykey/secret/{token_id}/{generation}".encode()


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _open(key: bytes, blob: bytes, aad: bytes) -> bytes:
    return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)


#: A value sealed directly under a key-encryption key: `kek:<key id>:<base64url>`.
SEALED_PREFIX = "kek:"


def seal_value(keyring: KeyRing, plaintext: str, aad: bytes) -> str:
    """`plaintext` sealed with AES-256-GCM under the current KEK, `aad` bound in, as text
    that names the key (for secrets that belong to no account data key, such as webhook
    signing secrets, which must not vanish when an account turns retrieval off)."""
    blob = _seal(keyring.current, plaintext.encode(), aad)
    return f"{SEALED_PREFIX}{keyring.current_id}:{base64.urlsafe_b64encode(blob).decode()}"


def sealed_key_id(stored: str) -> str | None:
    """The KEK id a `seal_value` text was sealed under; None for a plain value."""
    if not stored.startswith(SEALED_PREFIX):
        return None
    return stored[len(SEALED_PREFIX):].partition(":")[0]


def open_value(keyring: KeyRing | None, stored: str, aad: bytes) -> str:
    """The plaintext of a `seal_value` text (a plain value is returned as it is). Raises
    `KeyConfigError` when its key is not configured, `TamperedCiphertext` when altered."""
    key_id = sealed_key_id(stored)
    if key_id is None:
        return stored
    key = keyring.keys.get(key_id) if keyring else None
    if key is None:
        raise KeyConfigError(f"A secret is sealed under key-encryption key {key_id!r}, which "
                             "is not in TALLYKEY_KEK.",
                             "Configure that key (after the current one) until 'tallykey "
                             "keys rotate' has re-sealed everything.")
    try:
        blob = base64.urlsafe_b64decode(stored.rpartition(":")[2].encode())
        return _open(key, blob, aad).decode()
    except (InvalidTag, binascii.Error, ValueError):
        raise TamperedCiphertext("A sealed secret failed its integrity check: the stored "
                                 "ciphertext was altered or moved.") from None


def forget_data_keys(session: Session, account_id: str) -> None:
    """Delete an account's data keys, in the caller's transaction: what they sealed can
    never be opened again (`tokens.secrets.destroy_ciphertexts` clears it too)."""
    session.execute(delete(AccountKey).where(AccountKey.account_id == account_id))


class SealedSecret(Protocol):
    """A sealed token secret as the vault opens it (`tokens.models.TokenSecret`)."""

    @property
    def token_id(self) -> str: ...

    @property
    def generation(self) -> int: ...

    @property
    def data_key_id(self) -> int | None: ...

    @property
    def ciphertext(self) -> bytes | None: ...


class SecretVault:
    def __init__(self, database: Database, clock: Clock, keyring: KeyRing) -> None:
        self.database = database
        self.clock = clock
        self.keyring = keyring
        self._data_keys: dict[int, bytes] = {}
        self._lock = threading.Lock()

    def seal(self, session: Session, account_id: str, token_id: str, generation: int,
             token: str) -> tuple[int, bytes]:
        """(data key id, ciphertext) for a token secret, in the caller's transaction."""
        row = session.scalar(select(AccountKey).where(AccountKey.account_id == account_id)
                             .order_by(AccountKey.id.desc()).limit(1))
        if row is None:
            data_key = AESGCM.generate_key(bit_length=256)
            row = AccountKey(account_id=account_id, kek_id=self.keyring.current_id,
                             wrapped=_seal(self.keyring.current, data_key,
                                           _dek_aad(account_id)),
                             created_at=self.clock.now())
            session.add(row)
            session.flush()
        key = self._unwrap(row)
        return row.id, _seal(key, token.encode(), _secret_aad(token_id, generation))

    def reveal(self, session: Session, secret: SealedSecret, account_id: str) -> str:
        """The sealed token; `TamperedCiphertext` if anything was altered."""
        assert secret.ciphertext is not None and secret.data_key_id is not None
        row = session.get_one(AccountKey, secret.data_key_id)
        if row.account_id != account_id:
            raise TamperedCiphertext("A sealed secret points at another account's data key.")
        try:
            plain = _open(self._unwrap(row), secret.ciphertext,
                          _secret_aad(secret.token_id, secret.generation))
        except InvalidTag:
            raise TamperedCiphertext(
                "A sealed token secret failed its integrity check: the stored ciphertext "
                "was altered or moved.") from None
        return plain.decode()

    def check(self) -> int:
        """Open every stored data key once; raises `KeyConfigError` naming a missing or
        wrong key. Run at start so a bad key stops the server, not a request."""
        with self.database.reading() as session:
            rows = list(session.scalars(select(AccountKey)))
        for row in rows:
            self._unwrap(row)
        return len(rows)

    def rotate(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Re-wrap every data key under the current KEK, one row per transaction, so an
        interrupted rotation simply resumes. Returns how many were re-wrapped."""
        current = self.keyring.current_id
        with self.database.reading() as session:
            pending = list(session.scalars(select(AccountKey.id)
                                           .where(AccountKey.kek_id != current)))
        for done, key_id in enumerate(pending, start=1):
            with self.database.transaction() as session:
                row = session.scalar(select(AccountKey).where(AccountKey.id == key_id)
                                     .with_for_update())
                if row is None or row.kek_id == current:
                    continue
                data_key = self._unwrap(row)
                row.wrapped = _seal(self.keyring.current, data_key, _dek_aad(row.account_id))
                row.kek_id = current
                row.rewrapped_at = self.clock.now()
            if progress is not None:
                progress(done, len(pending))
        return len(pending)

    def _unwrap(self, row: AccountKey) -> bytes:
        with self._lock:
            cached = self._data_keys.get(row.id)
        if cached is not None:
            return cached
        kek = self.keyring.keys.get(row.kek_id)
        if kek is None:
            raise KeyConfigError(
                f"Data keys are wrapped with key-encryption key {row.kek_id!r}, which is not "
                "in TALLYKEY_KEK.", "Add it back (after the current key) until "
                "'tallykey keys rotate' has re-wrapped everything.")
        try:
            data_key = _open(kek, row.wrapped, _dek_aad(row.account_id))
        except InvalidTag:
            raise KeyConfigError(
                f"Key-encryption key {row.kek_id!r} in TALLYKEY_KEK is wrong: it does not "
                "open the data keys it supposedly wrapped.",
                "Restore the key that was configured when they were written.") from None
        with self._lock:
            self._data_keys[row.id] = data_key
        return data_key
