"""The RFC 9421 signature algorithms (section 3.3): the RFC 9421 rows of ``authz.algorithms``.

Verification takes the algorithm from the *key* (the caller looks the key up
by ``keyid`` and passes its bound algorithm); a request can never choose it.
``verify`` returns a bool and never raises for a bad signature, a
wrong-length signature or a key of the wrong type.
"""

from __future__ import annotations

from typing import Any

from authz.algorithms import ALGORITHMS as _TABLE
from authz.algorithms import RFC9421, RFC9421_NAMES

HMAC_SHA256 = "hmac-sha256"
ED25519 = "ed25519"
ECDSA_P256 = "ecdsa-p256-sha256"
ECDSA_P384 = "ecdsa-p384-sha384"
RSA_PSS = "rsa-pss-sha512"
RSA_V15 = "rsa-v1_5-sha256"

#: the RFC 9421 algorithm names, in the RFC's order
ALGORITHMS = RFC9421_NAMES


def verify(algorithm: str, key: Any, base: bytes, signature: bytes) -> bool:
    """Does ``signature`` over ``base`` verify with ``key`` under ``algorithm``?

    :param key: HMAC secret bytes, or a ``cryptography`` public key of the matching type
    """
    row = _TABLE.get(algorithm)
    return row is not None and row.standard == RFC9421 and row.verify(key, base, signature)


def sign(algorithm: str, key: Any, base: bytes) -> bytes:
    """Sign ``base`` with a private key (or HMAC secret) under ``algorithm``.

    :raises ValueError: unknown algorithm, or a key that does not fit it
    """
    row = _TABLE.get(algorithm)
    if row is None or row.standard != RFC9421:
        raise ValueError(f"unknown signature algorithm {algorithm!r}")
    return row.sign(key, base)
