"""The keyring: one key, one algorithm; material checked against it at load."""

from __future__ import annotations

import base64
import pathlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from authz.errors import ConfigError
from authz.keys import load_keys

RING = pathlib.Path(__file__).parent.parent / "keys" / "ring"
SECRET = base64.urlsafe_b64encode(b"k" * 32).decode().rstrip("=")


def write(tmp_path: pathlib.Path, text: str) -> str:
    p = tmp_path / "keys.yaml"
    p.write_text(text)
    return str(p)


def test_loads_each_kind_with_its_algorithm(tmp_path: pathlib.Path) -> None:
    path = write(
        tmp_path,
        f"""keys:
  - id: ed
    algorithm: ed25519
    public_key_file: {RING / "ed25519.pub.pem"}
    subject: partner-bot
  - id: ec
    algorithm: ES256
    public_key_file: {RING / "p256.pub.pem"}
  - id: rsa
    algorithm: rsa-pss-sha512
    public_key_file: {RING / "rsa2048.pub.pem"}
    status: revoked
  - id: mac
    algorithm: hmac-sha256
    secret: {SECRET}
    not_after: "2030-01-01T00:00:00Z"
""",
    )
    ring = load_keys(path)
    assert len(ring) == 4
    assert isinstance(ring.get("ed").material, ed25519.Ed25519PublicKey)  # type: ignore[union-attr]
    assert ring.get("ed").subject == "partner-bot"  # type: ignore[union-attr]
    assert isinstance(ring.get("ec").material, ec.EllipticCurvePublicKey)  # type: ignore[union-attr]
    assert isinstance(ring.get("rsa").material, rsa.RSAPublicKey)  # type: ignore[union-attr]
    assert ring.get("mac").material == b"k" * 32  # type: ignore[union-attr]
    assert ring.get("mac").subject == "mac"  # type: ignore[union-attr]
    assert not ring.get("rsa").usable(0)  # type: ignore[union-attr]
    mac = ring.get("mac")
    assert mac is not None and mac.usable(1_800_000_000_000) and not mac.usable(1_900_000_000_000)
    assert ring.get("missing") is None


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ("  - id: a\n    algorithm: HS256\n    secret: {pem}\n", 4, "looks like public key text"),
        ("  - id: a\n    algorithm: HS256\n    public_key_file: {rsa}\n", 4, "needs a shared secret"),
        ("  - id: a\n    algorithm: RS256\n    public_key_file: {rsa1024}\n", 4, "at least 2048 bits"),
        ("  - id: a\n    algorithm: ES384\n    public_key_file: {p256}\n", 4, "needs curve secp384r1"),
        ("  - id: a\n    algorithm: ed25519\n    public_key_file: {rsa}\n", 4, "needs an Ed25519 public key"),
        ("  - id: a\n    algorithm: RS256\n    secret: {secret}\n", 4, "needs a public key"),
        ("  - id: a\n    algorithm: none\n    secret: {secret}\n", 3, "must be one of"),
        ("  - id: a\n    algorithm: HS256\n    secret: c2hvcnQ\n", 4, "at least 32 bytes"),
        ("  - id: a\n    algorithm: HS256\n    secret: '%%%'\n", 4, "not valid base64"),
        ("  - id: a\n    algorithm: HS256\n    secret: {secret}\n  - id: a\n    algorithm: HS256\n    secret: {secret}\n", 5, "duplicate key id"),
        ("  - id: a\n    algorithm: HS256\n", 2, "give exactly one of"),
        ("  - id: a\n    algorithm: HS256\n    secret: {secret}\n    colour: red\n", 5, "unknown key 'colour'"),
        ("  - id: a\n    algorithm: HS256\n    secret: {secret}\n    not_after: soon\n", 5, "ISO 8601"),
        ("  - id: a\n    algorithm: EdDSA\n    jwk: {{kty: OKP, crv: Ed25519, x: AAAA, d: AAAA}}\n", 4, "private key"),
    ],
)
def test_refuses_bad_keys_naming_file_line_field(tmp_path: pathlib.Path, body: str, line: int, message: str) -> None:
    pem = (RING / "rsa2048.pub.pem").read_text().replace("\n", "")
    text = "keys:\n" + body.format(
        pem=base64.b64encode(pem.encode()).decode(),
        rsa=RING / "rsa2048.pub.pem",
        rsa1024=RING / "rsa1024.pub.pem",
        p256=RING / "p256.pub.pem",
        secret=SECRET,
    )
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_keys(path)
    err = info.value
    assert err.file == path
    assert err.line == line, str(err)
    assert message in err.message, str(err)
