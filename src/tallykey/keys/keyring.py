"""Key-encryption keys from configuration: `TALLYKEY_KEK` or `TALLYKEY_KEK_FILE`.

Format: comma-separated `id:base64key` entries, 32-byte keys, the first one current
(used to wrap), the others still accepted for unwrapping during a rotation:

    TALLYKEY_KEK="2026-11:Zm9v…,2026-05:YmFy…"
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from pathlib import Path

from tallykey.errors import KeyConfigError

KEY_BYTES = 32
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True)
class KeyRing:
    current_id: str
    keys: dict[str, bytes]

    @property
    def current(self) -> bytes:
        return self.keys[self.current_id]

    def __repr__(self) -> str:  # never print key material
        return f"KeyRing(current={self.current_id!r}, ids={sorted(self.keys)!r})"


def parse_keyring(text: str) -> KeyRing:
    """Parse the configuration text; raises `KeyConfigError` naming what is wrong."""
    entries = [part.strip() for part in text.split(",") if part.strip()]
    if not entries:
        raise KeyConfigError("TALLYKEY_KEK is empty.", _HOW)
    keys: dict[str, bytes] = {}
    for entry in entries:
        key_id, colon, encoded = entry.partition(":")
        if not colon or not _KEY_ID.fullmatch(key_id):
            raise KeyConfigError(f"A TALLYKEY_KEK entry has no valid key id ({key_id[:8]}…).",
                                 _HOW)
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise KeyConfigError(f"Key {key_id!r} in TALLYKEY_KEK is not valid base64.",
                                 _HOW) from None
        if len(key) != KEY_BYTES:
            raise KeyConfigError(f"Key {key_id!r} is {len(key)} bytes; AES-256 needs 32.", _HOW)
        if key_id in keys:
            raise KeyConfigError(f"Key id {key_id!r} appears twice in TALLYKEY_KEK.", _HOW)
        keys[key_id] = key
    return KeyRing(entries[0].partition(":")[0], keys)


def load_keyring(kek: str | None, kek_file: Path | None) -> KeyRing | None:
    """The configured key ring, or None when no key is configured."""
    if kek and kek_file:
        raise KeyConfigError("Set TALLYKEY_KEK or TALLYKEY_KEK_FILE, not both.")
    if kek_file is not None:
        try:
            return parse_keyring(kek_file.read_text())
        except OSError as error:
            raise KeyConfigError(f"Cannot read TALLYKEY_KEK_FILE {kek_file}: "
                                 f"{error.strerror}.") from None
    return parse_keyring(kek) if kek else None


_HOW = ("Write id:base64 with a 32-byte key, e.g. "
        "TALLYKEY_KEK=\"k1:$(head -c 32 /dev/urandom | base64)\"; the first key is current.")


def missing_kek_hint(data_dir: Path) -> str:
    """What to do when a secret must be sealed or opened and no key-encryption key is
    configured: set one; when this data directory holds the demo's key (`tallykey demo`
    wrote it), name that file too."""
    from tallykey.demo_files import kek_path

    hint = "Set TALLYKEY_KEK (or TALLYKEY_KEK_FILE) on the server."
    demo = kek_path(data_dir)
    if demo.is_file():
        hint += (f" This data directory holds the demo's key: set "
                 f"TALLYKEY_KEK_FILE={demo.resolve()} (for the demo only).")
    return hint
