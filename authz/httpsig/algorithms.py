"""The RFC 9421 signature algorithms (section 3.3), on ``cryptography``.

Verification takes the algorithm from the *key* (the caller looks the key up
by ``keyid`` and passes its bound algorithm); a request can never choose it.
Every verify function returns a bool and never raises for a bad signature, a
wrong-length signature or a key of the wrong type.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

HMAC_SHA256 = "hmac-sha256"
ED25519 = "ed25519"
ECDSA_P256 = "ecdsa-p256-sha256"
ECDSA_P384 = "ecdsa-p384-sha384"
RSA_PSS = "rsa-pss-sha512"
RSA_V15 = "rsa-v1_5-sha256"

ALGORITHMS = (HMAC_SHA256, ED25519, ECDSA_P256, ECDSA_P384, RSA_PSS, RSA_V15)

_EC = {ECDSA_P256: (ec.SECP256R1, hashes.SHA256, 32), ECDSA_P384: (ec.SECP384R1, hashes.SHA384, 48)}


def verify(algorithm: str, key: Any, base: bytes, signature: bytes) -> bool:
    """Does ``signature`` over ``base`` verify with ``key`` under ``algorithm``?

    :param key: HMAC secret bytes, or a ``cryptography`` public key of the matching type
    """
    fn = _VERIFY.get(algorithm)
    if fn is None:
        return False
    try:
        return fn(key, base, signature)
    except (InvalidSignature, ValueError, TypeError):
        return False


def _hmac(key: Any, base: bytes, sig: bytes) -> bool:
    if not isinstance(key, bytes | bytearray):
        return False
    expected = hmac.new(key, base, hashlib.sha256).digest()
    return hmac.compare_digest(expected, sig)


def _ed25519(key: Any, base: bytes, sig: bytes) -> bool:
    if not isinstance(key, ed25519.Ed25519PublicKey) or len(sig) != 64:
        return False
    key.verify(sig, base)
    return True


def _ecdsa(algorithm: str) -> Callable[[Any, bytes, bytes], bool]:
    curve, hash_cls, size = _EC[algorithm]

    def check(key: Any, base: bytes, sig: bytes) -> bool:
        # RFC 9421 3.3.4/3.3.5: r || s, each a fixed-size big-endian integer (not DER)
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, curve) or len(sig) != 2 * size:
            return False
        r = int.from_bytes(sig[:size], "big")
        s = int.from_bytes(sig[size:], "big")
        key.verify(encode_dss_signature(r, s), base, ec.ECDSA(hash_cls()))
        return True

    return check


def _rsa_pss(key: Any, base: bytes, sig: bytes) -> bool:
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    key.verify(sig, base, padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=64), hashes.SHA512())
    return True


def _rsa_v15(key: Any, base: bytes, sig: bytes) -> bool:
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    key.verify(sig, base, padding.PKCS1v15(), hashes.SHA256())
    return True


_VERIFY: dict[str, Callable[[Any, bytes, bytes], bool]] = {
    HMAC_SHA256: _hmac,
    ED25519: _ed25519,
    ECDSA_P256: _ecdsa(ECDSA_P256),
    ECDSA_P384: _ecdsa(ECDSA_P384),
    RSA_PSS: _rsa_pss,
    RSA_V15: _rsa_v15,
}


def sign(algorithm: str, key: Any, base: bytes) -> bytes:
    """Sign ``base`` with a private key (or HMAC secret) under ``algorithm``.

    :raises ValueError: unknown algorithm, or a key that does not fit it
    """
    if algorithm == HMAC_SHA256:
        if not isinstance(key, bytes | bytearray):
            raise ValueError("hmac-sha256 needs secret bytes")
        return hmac.new(key, base, hashlib.sha256).digest()
    if algorithm == ED25519:
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ValueError("ed25519 needs an Ed25519 private key")
        return key.sign(base)
    if algorithm in _EC:
        curve, hash_cls, size = _EC[algorithm]
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, curve):
            raise ValueError(f"{algorithm} needs an EC private key on {curve.name}")
        r, s = decode_dss_signature(key.sign(base, ec.ECDSA(hash_cls())))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if algorithm in (RSA_PSS, RSA_V15):
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{algorithm} needs an RSA private key")
        if algorithm == RSA_PSS:
            return key.sign(base, padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=64), hashes.SHA512())
        return key.sign(base, padding.PKCS1v15(), hashes.SHA256())
    raise ValueError(f"unknown signature algorithm {algorithm!r}")
