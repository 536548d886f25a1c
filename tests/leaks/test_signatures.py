"""Report signatures: both key-file shapes, every way a signature can be wrong."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tallykey.errors import LeakReportsNotConfigured, MalformedSignature, SignatureRefused
from tallykey.leaks.signatures import KeySource, parse_keys

BODY = b'[{"token":"x","type":"tallykey_api_token","url":"https://e","source":"content"}]'


def pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def sign(key: ec.EllipticCurvePrivateKey, body: bytes = BODY) -> str:
    return base64.b64encode(key.sign(body, ec.ECDSA(hashes.SHA256()))).decode()


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def github_shape(**keys: ec.EllipticCurvePrivateKey) -> str:
    return json.dumps({"public_keys": [{"key_identifier": name, "key": pem(k),
                                        "is_current": True} for name, k in keys.items()]})


def test_both_shapes_verify(key: ec.EllipticCurvePrivateKey) -> None:
    for text in (github_shape(k1=key), json.dumps({"k1": pem(key)})):
        assert parse_keys(text).verify("k1", sign(key), BODY) == "k1"


def test_wrong_signatures_are_refused(key: ec.EllipticCurvePrivateKey) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    ring = parse_keys(github_shape(k1=key, k2=other))
    refused: list[tuple[str | None, str | None]] = [
        ("k1", sign(other)), ("k9", sign(key)), ("k2", sign(key)),
        ("k1", sign(key, BODY + b" "))]
    for identifier, signature in refused:
        with pytest.raises(SignatureRefused):
            ring.verify(identifier, signature, BODY)
    malformed = [(None, sign(key)), ("k1", None), ("", sign(key)), ("k1", "  "),
                 ("k1", "not base64!"), ("k1", "A" * 1000)]
    for identifier, signature in malformed:
        with pytest.raises(MalformedSignature):
            ring.verify(identifier, signature, BODY)
    with pytest.raises(SignatureRefused):  # valid base64, not a DER signature
        ring.verify("k1", base64.b64encode(b"garbage").decode(), BODY)


def test_only_p256_keys_are_accepted() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bad = [json.dumps({"k": pem(p384)}), json.dumps({"k": pem(rsa_key)}),
           json.dumps({"k": "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----"}),
           json.dumps({}), json.dumps([]), "not json", json.dumps({"public_keys": [1]}),
           json.dumps({"k": 1})]
    for text in bad:
        with pytest.raises(LeakReportsNotConfigured):
            parse_keys(text)


def test_key_file_is_reread_when_it_changes(tmp_path: Path,
                                            key: ec.EllipticCurvePrivateKey) -> None:
    path = tmp_path / "keys.json"
    path.write_text(github_shape(old=key))
    source = KeySource(str(path))
    assert "old" in source.current().keys
    path.write_text(github_shape(new=key, newer=key))
    os.utime(path, ns=(1, 1))  # a different stamp even within one clock tick
    assert set(source.current().keys) == {"new", "newer"}


def test_unset_unreadable_or_inline(tmp_path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(LeakReportsNotConfigured, match="not enabled"):
        KeySource("").current()
    with pytest.raises(LeakReportsNotConfigured, match="cannot read"):
        KeySource(str(tmp_path / "missing.json")).current()
    assert "k" in KeySource(json.dumps({"k": pem(key)})).current().keys
