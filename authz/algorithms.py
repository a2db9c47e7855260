"""The one table of signature algorithms: keys, JWS, RFC 9421 and Kong names.

Every algorithm authz can verify is one ``Algorithm`` row: its family (what
kind of key it needs), the key-size floor, the curve, the hash, and the
functions that verify and sign with it. The keyring checks key material
against the row when a keys file is read; JWT, RFC 9421 and Kong
verification all call ``Algorithm.verify``; nothing else decides how a
signature is checked.

A key is bound to exactly one row. The row found through the key's id decides
how a signature is verified, never the request.

Verification never raises for a bad signature, a signature of the wrong
length, or a key of the wrong type: it returns False.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

#: families: what kind of key material a row needs
HMAC, RSA, EC, OKP = "hmac", "rsa", "ec", "okp"
#: the naming schemes a row belongs to
JWS, RFC9421 = "jws", "rfc9421"

MIN_RSA_BITS = 2048

#: cryptography curve name -> (group order, coordinate size in bytes, JWK curve name)
CURVES: dict[str, tuple[int, int, str]] = {
    "secp256r1": (0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551, 32, "P-256"),
    "secp384r1": (
        int("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973", 16),
        48,
        "P-384",
    ),
    "secp521r1": (
        int(
            "01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
            "FA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
            16,
        ),
        66,
        "P-521",
    ),
}
_EC_CLASSES: dict[str, type[ec.EllipticCurve]] = {
    "secp256r1": ec.SECP256R1,
    "secp384r1": ec.SECP384R1,
    "secp521r1": ec.SECP521R1,
}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


@dataclass(frozen=True, slots=True)
class Algorithm:
    """One signature algorithm.

    :param name: as written in keys files, JWS headers or ``Signature-Input``
    :param standard: ``jws`` or ``rfc9421``
    :param family: the key it needs: ``hmac`` (a secret), ``rsa``, ``ec``, ``okp``
    :param hash: ``sha256`` / ``sha384`` / ``sha512`` ("" for EdDSA)
    :param min_secret_bytes: HMAC: the shortest secret accepted
    :param curve: EC: the cryptography curve name
    :param pss_salt: RSA: the PSS salt length, 0 for PKCS#1 v1.5
    :param ed448: OKP: Ed448 keys are accepted too (JWS EdDSA)
    :param kong: the Kong hmac-auth ``algorithm`` this key verifies, "" for none
    """

    name: str
    standard: str
    family: str
    hash: str = ""
    min_secret_bytes: int = 0
    curve: str = ""
    pss_salt: int = 0
    ed448: bool = False
    kong: str = ""

    # -- keys ----------------------------------------------------------------

    def key_problem(self, key: Any) -> str:
        """Why ``key`` cannot be this algorithm's key, or "" when it fits.

        Secrets are bytes; public keys are ``cryptography`` public keys.
        """
        if self.family == HMAC:
            if not isinstance(key, bytes | bytearray):
                return f"{self.name} needs a shared secret"
            if len(key) < self.min_secret_bytes:
                return f"{self.name} needs a secret of at least {self.min_secret_bytes} bytes; got {len(key)}"
            return ""
        if self.family == RSA:
            if not isinstance(key, rsa.RSAPublicKey):
                return f"{self.name} needs an RSA public key; got {describe_key(key)}"
            if key.key_size < MIN_RSA_BITS:
                return f"RSA keys must have at least {MIN_RSA_BITS} bits; got {key.key_size}"
            return ""
        if self.family == EC:
            if not isinstance(key, ec.EllipticCurvePublicKey):
                return f"{self.name} needs an EC public key on {self.curve}; got {describe_key(key)}"
            if key.curve.name != self.curve:
                return f"{self.name} needs curve {self.curve}; got {key.curve.name}"
            return ""
        if isinstance(key, ed25519.Ed25519PublicKey) or (self.ed448 and isinstance(key, ed448.Ed448PublicKey)):
            return ""
        return f"{self.name} needs an Ed25519 public key; got {describe_key(key)}"

    # -- verification ----------------------------------------------------------

    def verify(self, key: Any, data: bytes, signature: bytes) -> bool:
        """Does ``signature`` over ``data`` verify with ``key``? Never raises."""
        try:
            return self._verify(key, data, signature)
        except (InvalidSignature, ValueError, TypeError):
            return False

    def _verify(self, key: Any, data: bytes, sig: bytes) -> bool:
        family = self.family
        if family == HMAC:
            if not isinstance(key, bytes | bytearray):
                return False
            return hmac.compare_digest(hmac.new(key, data, self.hash).digest(), sig)
        if family == EC:
            # r || s, each a fixed-size big-endian integer (JWS and RFC 9421 alike, not DER).
            # r and s must lie in [1, n-1]: the "psychic signature" forgery (CVE-2022-21449)
            # is refused here even though OpenSSL refuses it too.
            if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != self.curve:
                return False
            order, size, _ = CURVES[self.curve]
            if len(sig) != 2 * size:
                return False
            r = int.from_bytes(sig[:size], "big")
            s = int.from_bytes(sig[size:], "big")
            if not (0 < r < order and 0 < s < order):
                return False
            key.verify(encode_dss_signature(r, s), data, ec.ECDSA(_HASHES[self.hash]()))
            return True
        if family == RSA:
            if not isinstance(key, rsa.RSAPublicKey):
                return False
            key.verify(sig, data, self._rsa_padding(), _HASHES[self.hash]())
            return True
        if isinstance(key, ed25519.Ed25519PublicKey):
            if len(sig) != 64:
                return False
            key.verify(sig, data)
            return True
        if self.ed448 and isinstance(key, ed448.Ed448PublicKey):
            if len(sig) != 114:
                return False
            key.verify(sig, data)
            return True
        return False

    def _rsa_padding(self) -> padding.AsymmetricPadding:
        if self.pss_salt:
            return padding.PSS(mgf=padding.MGF1(_HASHES[self.hash]()), salt_length=self.pss_salt)
        return padding.PKCS1v15()

    # -- signing (tools and tests; the server only verifies) --------------------

    def sign(self, key: Any, data: bytes) -> bytes:
        """Sign ``data`` with a private key (or an HMAC secret).

        :raises ValueError: the key does not fit the algorithm
        """
        family = self.family
        if family == HMAC:
            if not isinstance(key, bytes | bytearray):
                raise ValueError(f"{self.name} needs secret bytes")
            return hmac.new(key, data, self.hash).digest()
        if family == EC:
            if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != self.curve:
                raise ValueError(f"{self.name} needs an EC private key on {self.curve}")
            _, size, _ = CURVES[self.curve]
            r, s = decode_dss_signature(key.sign(data, ec.ECDSA(_HASHES[self.hash]())))
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        if family == RSA:
            if not isinstance(key, rsa.RSAPrivateKey):
                raise ValueError(f"{self.name} needs an RSA private key")
            return key.sign(data, self._rsa_padding(), _HASHES[self.hash]())
        if isinstance(key, ed25519.Ed25519PrivateKey) or (self.ed448 and isinstance(key, ed448.Ed448PrivateKey)):
            return key.sign(data)
        raise ValueError(f"{self.name} needs an Ed25519 private key")


def describe_key(key: Any) -> str:
    """A short description of key material, for messages (never the material itself)."""
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return f"an RSA key ({key.key_size} bits)"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return f"an EC key on {key.curve.name}"
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "an Ed25519 key"
    if isinstance(key, ed448.Ed448PublicKey | ed448.Ed448PrivateKey):
        return "an Ed448 key"
    if isinstance(key, bytes | bytearray):
        return "a secret"
    return type(key).__name__.lstrip("_")


def _rows() -> tuple[Algorithm, ...]:
    a = Algorithm
    return (
        # RFC 9421 section 3.3
        a("hmac-sha256", RFC9421, HMAC, "sha256", min_secret_bytes=32, kong="hmac-sha256"),
        a("ed25519", RFC9421, OKP),
        a("ecdsa-p256-sha256", RFC9421, EC, "sha256", curve="secp256r1"),
        a("ecdsa-p384-sha384", RFC9421, EC, "sha384", curve="secp384r1"),
        a("rsa-pss-sha512", RFC9421, RSA, "sha512", pss_salt=64),
        a("rsa-v1_5-sha256", RFC9421, RSA, "sha256"),
        # JWS (RFC 7518, RFC 8037)
        a("HS256", JWS, HMAC, "sha256", min_secret_bytes=32, kong="hmac-sha256"),
        a("HS384", JWS, HMAC, "sha384", min_secret_bytes=48, kong="hmac-sha384"),
        a("HS512", JWS, HMAC, "sha512", min_secret_bytes=64, kong="hmac-sha512"),
        a("RS256", JWS, RSA, "sha256"),
        a("RS384", JWS, RSA, "sha384"),
        a("RS512", JWS, RSA, "sha512"),
        a("PS256", JWS, RSA, "sha256", pss_salt=32),
        a("PS384", JWS, RSA, "sha384", pss_salt=48),
        a("PS512", JWS, RSA, "sha512", pss_salt=64),
        a("ES256", JWS, EC, "sha256", curve="secp256r1"),
        a("ES384", JWS, EC, "sha384", curve="secp384r1"),
        a("ES512", JWS, EC, "sha512", curve="secp521r1"),
        a("EdDSA", JWS, OKP, ed448=True),
    )


#: every algorithm by name
ALGORITHMS: Mapping[str, Algorithm] = {a.name: a for a in _rows()}
#: the names of one standard, in table order
RFC9421_NAMES: tuple[str, ...] = tuple(a.name for a in ALGORITHMS.values() if a.standard == RFC9421)
JWS_NAMES: tuple[str, ...] = tuple(a.name for a in ALGORITHMS.values() if a.standard == JWS)
#: keyring algorithm -> the Kong hmac-auth algorithm name its key verifies
KONG_NAMES: Mapping[str, str] = {a.name: a.kong for a in ALGORITHMS.values() if a.kong}
#: JWK curve name -> the JWS algorithm an EC key on it is bound to
JWS_BY_JWK_CURVE: Mapping[str, str] = {
    CURVES[a.curve][2]: a.name for a in ALGORITHMS.values() if a.standard == JWS and a.family == EC
}


def ec_curve(name: str) -> type[ec.EllipticCurve]:
    """The cryptography curve class of a curve name (``secp256r1``)."""
    return _EC_CLASSES[name]


def hmac_digest(hash_name: str, key: bytes, data: bytes) -> bytes:
    """HMAC of ``data`` (Kong's hmac-auth uses the same primitive as the table's rows)."""
    return hmac.new(key, data, getattr(hashlib, hash_name)).digest()


__all__ = [
    "ALGORITHMS",
    "CURVES",
    "EC",
    "HMAC",
    "JWS",
    "JWS_BY_JWK_CURVE",
    "JWS_NAMES",
    "KONG_NAMES",
    "MIN_RSA_BITS",
    "OKP",
    "RFC9421",
    "RFC9421_NAMES",
    "RSA",
    "Algorithm",
    "describe_key",
    "ec_curve",
    "hmac_digest",
]
