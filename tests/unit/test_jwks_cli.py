"""``authz jwks``: a public PEM becomes a JWKS that a provider accepts; unsafe input is refused clearly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa, x25519
from jwcrypto import jwk as jc_jwk

from authz.cli import cli
from tests.support.jwt_tokens import AUD, ISS, KEYS, VECTORS, claims, ctx, provider, request

PEM = serialization.Encoding.PEM
SPKI = serialization.PublicFormat.SubjectPublicKeyInfo


def write_public(path: Path, private: Any) -> Path:
    path.write_bytes(private.public_key().public_bytes(PEM, SPKI))
    return path


def run(*args: str) -> tuple[int, str]:
    out = CliRunner().invoke(cli, ["jwks", *args])
    return out.exit_code, out.output


def printed(*args: str) -> dict[str, Any]:
    code, output = run(*args)
    assert code == 0, output
    doc = json.loads(output)
    assert isinstance(doc, dict)
    return doc


@pytest.mark.parametrize(
    ("make", "alg"),
    [
        (lambda: ec.generate_private_key(ec.SECP256R1()), "ES256"),
        (lambda: ec.generate_private_key(ec.SECP384R1()), "ES384"),
        (lambda: ec.generate_private_key(ec.SECP521R1()), "ES512"),
        (ed25519.Ed25519PrivateKey.generate, "EdDSA"),
    ],
    ids=["P-256", "P-384", "P-521", "Ed25519"],
)
async def test_the_printed_jwks_verifies_tokens_of_the_key_through_a_provider(tmp_path: Path, make: Any, alg: str) -> None:
    private = make()
    doc = printed(str(write_public(tmp_path / "pub.pem", private)))
    (jwk,) = doc["keys"]
    assert (jwk["alg"], jwk["use"]) == (alg, "sig")
    assert "d" not in jwk
    # kid: the RFC 7638 thumbprint, as an independent implementation computes it
    assert jwk["kid"] == jc_jwk.JWK(**{k: v for k, v in jwk.items() if k not in ("kid", "use", "alg")}).thumbprint()
    (tmp_path / "jwks.json").write_text(json.dumps(doc))
    auth = provider(tmp_path, f"issuer: {ISS}\naudiences: [{AUD}]\nalgorithms: [{alg}]\nkeys: {{jwks_file: {tmp_path / 'jwks.json'}}}")
    token = pyjwt.encode(claims(), private, algorithm=alg, headers={"kid": jwk["kid"]})
    result = await auth.authenticate(request(token), ctx())
    assert result.ok, result
    forged = pyjwt.encode(claims(), make(), algorithm=alg, headers={"kid": jwk["kid"]})
    assert (await auth.authenticate(request(forged), ctx())).reason == "jwt.bad_signature"


def test_the_kid_is_the_rfc_8037_thumbprint_of_its_ed25519_example(tmp_path: Path) -> None:
    # RFC 8037 appendix A.3: the thumbprint of the appendix A.2 public key
    x = json.loads((VECTORS / "rfc8037_a4_ed25519.json").read_text())["jwk"]["x"]
    key = ed25519.Ed25519PublicKey.from_public_bytes(pyjwt.utils.base64url_decode(x))
    (tmp_path / "a2.pem").write_bytes(key.public_bytes(PEM, SPKI))
    (jwk,) = printed(str(tmp_path / "a2.pem"))["keys"]
    assert jwk == {"kid": "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k", "use": "sig", "alg": "EdDSA", "kty": "OKP", "crv": "Ed25519", "x": x}


def test_rsa_needs_an_alg_and_takes_a_kid(tmp_path: Path) -> None:
    pub = str(KEYS / "rsa-1.pub.pem")
    code, output = run(pub)
    assert code == 1 and "an RSA key needs an explicit alg (RS256, RS384, RS512, PS256, PS384 or PS512)" in output
    (jwk,) = printed(pub, "--alg", "PS256", "--kid", "idp-2025")["keys"]
    assert (jwk["kid"], jwk["alg"], jwk["kty"], jwk["e"]) == ("idp-2025", "PS256", "RSA", "AQAB")
    # the same public numbers as the committed JWKS's rsa-1
    committed = json.loads((KEYS / "jwks.json").read_text())["keys"]
    assert jwk["n"] == next(k["n"] for k in committed if k["kid"] == "rsa-1")


def test_several_keys_for_a_rotation_and_ed448(tmp_path: Path) -> None:
    old = write_public(tmp_path / "old.pem", ec.generate_private_key(ec.SECP256R1()))
    new = write_public(tmp_path / "new.pem", ed448.Ed448PrivateKey.generate())
    doc = printed(str(old), str(new))
    assert [(k["kty"], k["alg"]) for k in doc["keys"]] == [("EC", "ES256"), ("OKP", "EdDSA")]
    assert doc["keys"][1]["crv"] == "Ed448"
    assert len({k["kid"] for k in doc["keys"]}) == 2


def _private_pems(tmp_path: Path) -> list[Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    out = []
    for name, fmt, enc in [
        ("pkcs8.pem", serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        ("sec1.pem", serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()),
        ("encrypted.pem", serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")),
        ("openssh.pem", serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()),
    ]:
        (tmp_path / name).write_bytes(key.private_bytes(PEM, fmt, enc))
        out.append(tmp_path / name)
    return out


def test_private_keys_are_refused_in_every_encoding(tmp_path: Path) -> None:
    for path in _private_pems(tmp_path):
        code, output = run(str(path))
        assert code == 1, path
        assert f"Error: {path}: this is a private key; give its public key (openssl pkey -in KEY -pubout -out PUBLIC.pem)" in output
        assert "BEGIN" not in output  # the key material is never echoed


def _certificate(tmp_path: Path) -> Path:
    import datetime

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "idp.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    path = tmp_path / "cert.pem"
    path.write_bytes(cert.public_bytes(PEM))
    return path


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (lambda d: write_public(d / "k.pem", rsa.generate_private_key(65537, 1024)), ["--alg", "RS256"], "RSA keys must have at least 2048 bits; got 1024"),
        (lambda d: write_public(d / "k.pem", rsa.generate_private_key(65537, 1024)), [], "RSA keys must have at least 2048 bits; got 1024"),
        (lambda d: write_public(d / "k.pem", ec.generate_private_key(ec.SECP256K1())), [], "unsupported curve secp256k1 (P-256, P-384, P-521)"),
        (lambda d: write_public(d / "k.pem", ec.generate_private_key(ec.SECP256R1())), ["--alg", "ES384"], "ES384 needs curve secp384r1; got secp256r1"),
        (lambda d: write_public(d / "k.pem", ec.generate_private_key(ec.SECP256R1())), ["--alg", "RS256"], "RS256 needs an RSA public key; got an EC key on secp256r1"),
        (lambda d: write_public(d / "k.pem", ed25519.Ed25519PrivateKey.generate()), ["--alg", "ES256"], "ES256 needs an EC public key on secp256r1; got an Ed25519 key"),
        (lambda d: write_public(d / "k.pem", x25519.X25519PrivateKey.generate()), [], "unsupported key: X25519PublicKey (RSA, EC on P-256/P-384/P-521, Ed25519 or Ed448)"),
        (_certificate, [], "this is a certificate; give its public key (openssl x509 -in CERT -pubkey -noout > PUBLIC.pem)"),
        (lambda d: (d / "k.pem").write_text("hello") and d / "k.pem", [], "not a PEM public key (-----BEGIN PUBLIC KEY-----)"),
    ],
    ids=["rsa-1024", "rsa-1024-no-alg", "secp256k1", "alg-wrong-curve", "alg-wrong-family", "alg-on-ed25519", "x25519", "certificate", "not-pem"],
)
def test_unusable_keys_are_refused_with_the_reason(tmp_path: Path, setup: Any, args: list[str], message: str) -> None:
    path = setup(tmp_path)
    code, output = run(str(path), *args)
    assert code == 1, output
    assert output.strip() == f"Error: {path}: {message}"


def test_bad_options_are_usage_errors(tmp_path: Path) -> None:
    pub = str(write_public(tmp_path / "k.pem", ec.generate_private_key(ec.SECP256R1())))
    code, output = run(pub, "--alg", "HS256")
    assert code == 2 and "HS256 uses a shared secret, which never goes in a JWKS" in output and "keys.keyring" in output
    code, output = run(pub, "--alg", "none")
    assert code == 2 and "unknown JWS algorithm 'none'" in output
    code, output = run(pub, pub, "--kid", "k")
    assert code == 2 and "--kid: names one key" in output
    code, output = run(pub, "--kid", "")
    assert code == 1 and "a kid is 1 to 256 printable characters" in output
    code, output = run(pub, pub)
    assert code == 1 and "duplicate kid" in output
    code, output = run()
    assert code == 2 and "Missing argument 'PUBLIC_KEY.pem...'" in output
    code, output = run(str(tmp_path / "absent.pem"))
    assert code == 2 and "does not exist" in output


def test_help_says_what_it_does_and_refuses() -> None:
    code, output = run("--help")
    assert code == 0
    output = " ".join(output.split())
    for words in ("Print a JWKS", "RFC 7638 thumbprint", "Private keys", "2048 bits", "HMAC", "--alg ALG", "openssl pkey -in idp.key.pem -pubout"):
        assert words in output, words
