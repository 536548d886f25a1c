"""Who may report leaks: ECDSA P-256 / SHA-256 signatures over the raw request body.

GitHub signs each report with one of its secret-scanning keys and names it in two headers:
`Github-Public-Key-Identifier` (which key) and `Github-Public-Key-Signature` (base64 of the
DER-encoded signature over the exact body bytes).

The keys come from `TALLYKEY_LEAK_REPORT_KEYS`: either a path to a JSON file or the JSON
itself, in one of two shapes:

* GitHub's own answer, saved verbatim (`curl https://api.github.com/meta/public_keys/
  secret_scanning > keys.json`): `{"public_keys": [{"key_identifier": "…", "key": "-----BEGIN
  PUBLIC KEY-----…"}, …]}`
* a plain mapping `{"<key identifier>": "-----BEGIN PUBLIC KEY-----…", …}`

A file is re-read when it changes, so a cron job can refresh it without a restart.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from tallykey.errors import (
    LeakReportsNotConfigured,
    MalformedSignature,
    SignatureRefused,
)

log = logging.getLogger(__name__)

IDENTIFIER_HEADER = "Github-Public-Key-Identifier"
SIGNATURE_HEADER = "Github-Public-Key-Signature"
GITHUB_KEYS_URL = "https://api.github.com/meta/public_keys/secret_scanning"
MAX_SIGNATURE_LENGTH = 512  # a P-256 DER signature is at most 72 bytes (96 in base64)


@dataclass(frozen=True)
class KeyRing:
    """The public keys allowed to sign reports, by identifier."""

    keys: Mapping[str, ec.EllipticCurvePublicKey]

    def verify(self, identifier: str | None, signature: str | None, body: bytes) -> str:
        """Return the identifier of the key that signed `body`, or raise
        `MalformedSignature` (400: a header missing or unreadable) or `SignatureRefused`
        (401: unknown key, or the signature does not match)."""
        if not identifier or not identifier.strip():
            raise MalformedSignature(f"The {IDENTIFIER_HEADER} header is missing.",
                                     "Reports must be signed; see the partner program docs.")
        if not signature or not signature.strip():
            raise MalformedSignature(f"The {SIGNATURE_HEADER} header is missing.",
                                     "Reports must be signed; see the partner program docs.")
        identifier = identifier.strip()
        if len(signature) > MAX_SIGNATURE_LENGTH:
            raise MalformedSignature(f"The {SIGNATURE_HEADER} header is too long for a "
                                     "P-256 signature.")
        try:
            der = base64.b64decode(signature.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise MalformedSignature(f"The {SIGNATURE_HEADER} header is not valid base64.",
                                     "Send base64 of the DER-encoded ECDSA signature.") from None
        key = self.keys.get(identifier)
        if key is None:
            raise SignatureRefused(
                "The report is signed with an unknown key.",
                f"Refresh TALLYKEY_LEAK_REPORT_KEYS from {GITHUB_KEYS_URL}.",
                key_identifier=identifier[:200])
        try:
            key.verify(der, body, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise SignatureRefused(
                "The report's signature does not match its body.",
                "Sign the exact request body bytes with ECDSA P-256 / SHA-256.") from None
        return identifier


def parse_keys(text: str, origin: str = "TALLYKEY_LEAK_REPORT_KEYS") -> KeyRing:
    """Read a key set in either JSON shape; `LeakReportsNotConfigured` says what is wrong."""
    try:
        data: Any = json.loads(text)
    except ValueError as error:
        raise _misconfigured(f"{origin} is not valid JSON ({error}).") from None
    pairs: list[tuple[Any, Any]]
    if isinstance(data, dict) and isinstance(data.get("public_keys"), list):
        pairs = [(item.get("key_identifier"), item.get("key")) if isinstance(item, dict)
                 else (None, None) for item in data["public_keys"]]
    elif isinstance(data, dict):
        pairs = list(data.items())
    else:
        raise _misconfigured(f"{origin} must be a JSON object.")
    keys: dict[str, ec.EllipticCurvePublicKey] = {}
    for identifier, pem in pairs:
        if not isinstance(identifier, str) or not identifier or not isinstance(pem, str):
            raise _misconfigured(f"{origin} has an entry without a key identifier and PEM key.")
        keys[identifier] = _p256_key(identifier, pem, origin)
    if not keys:
        raise _misconfigured(f"{origin} holds no keys.")
    return KeyRing(keys)


def _p256_key(identifier: str, pem: str, origin: str) -> ec.EllipticCurvePublicKey:
    try:
        key = load_pem_public_key(pem.encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError):
        raise _misconfigured(f"{origin}: key {identifier[:80]!r} is not a PEM public key."
                             ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve,
                                                                        ec.SECP256R1):
        raise _misconfigured(f"{origin}: key {identifier[:80]!r} is not an ECDSA P-256 key.")
    return key


def _misconfigured(message: str) -> LeakReportsNotConfigured:
    log.error("leak reports misconfigured: %s", message)
    return LeakReportsNotConfigured(
        f"Leak reports cannot be checked: {message}",
        "The operator must fix TALLYKEY_LEAK_REPORT_KEYS (see docs/integrations.md).")


class KeySource:
    """`TALLYKEY_LEAK_REPORT_KEYS` turned into a `KeyRing`, re-read when its file changes."""

    def __init__(self, setting: str) -> None:
        self.setting = setting.strip()
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._ring: KeyRing | None = None

    def current(self) -> KeyRing:
        if not self.setting:
            raise LeakReportsNotConfigured(
                "Leak reports are not enabled on this deployment.",
                "Set TALLYKEY_LEAK_REPORT_KEYS to the reporters' public keys.")
        if self.setting.startswith("{"):
            if self._ring is None:
                self._ring = parse_keys(self.setting)
            return self._ring
        path = Path(self.setting)
        try:
            stat = path.stat()
            with self._lock:
                stamp = (stat.st_mtime_ns, stat.st_size)
                if self._ring is None or stamp != self._stamp:
                    self._ring = parse_keys(path.read_text("utf-8"), str(path))
                    self._stamp = stamp
                return self._ring
        except (OSError, UnicodeDecodeError) as error:
            raise _misconfigured(f"cannot read {path} ({error.__class__.__name__})") from None
