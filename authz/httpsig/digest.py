"""``Content-Digest`` (RFC 9530): well-formedness here, body comparison elsewhere.

The decision server never reads bodies, so it can only check that a covered
``Content-Digest`` is present and carries a ``sha-256`` or ``sha-512`` digest
of the right length; the signature then binds that digest to the request, and
whoever holds the body (the backend, or a proxy that buffers it) compares the
digest with the body. :func:`content_digest` and :func:`body_matches` are for
those parties and for clients.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from http_sfv.item import Item

from authz.httpsig.errors import BAD_CONTENT_DIGEST, SignatureError
from authz.httpsig.sfv import parse_dictionary

#: accepted algorithms and their digest sizes; the insecure ones of RFC 9530 are not accepted
DIGEST_SIZES = {"sha-256": 32, "sha-512": 64}


def check_content_digest(value: str | None) -> dict[str, bytes]:
    """Check a ``Content-Digest`` value; return the accepted digests by algorithm.

    :raises SignatureError: ``bad_content_digest`` when absent, unparsable, or
        without one well-formed ``sha-256`` / ``sha-512`` member
    """
    if value is None:
        raise SignatureError(BAD_CONTENT_DIGEST, "Content-Digest is required and absent")
    try:
        d = parse_dictionary(value, "Content-Digest")
    except SignatureError as exc:
        raise SignatureError(BAD_CONTENT_DIGEST, exc.detail) from None
    out: dict[str, bytes] = {}
    for alg, member in d.items():
        size = DIGEST_SIZES.get(alg)
        if size is None:
            continue
        if not isinstance(member, Item) or not isinstance(member.value, bytes) or len(member.value) != size:
            raise SignatureError(BAD_CONTENT_DIGEST, f"Content-Digest {alg} is not a {size}-byte sequence")
        out[alg] = member.value
    if not out:
        raise SignatureError(BAD_CONTENT_DIGEST, "Content-Digest has no sha-256 or sha-512 digest")
    return out


def content_digest(body: bytes, algorithm: str = "sha-256") -> str:
    """The ``Content-Digest`` value for ``body`` (client side, or a body-holding verifier)."""
    if algorithm not in DIGEST_SIZES:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    digest = hashlib.new(algorithm.replace("-", ""), body).digest()
    return f"{algorithm}=:{base64.b64encode(digest).decode('ascii')}:"


def body_matches(value: str, body: bytes) -> bool:
    """Does every accepted digest in ``value`` match ``body``? For whoever holds the body."""
    try:
        digests = check_content_digest(value)
    except SignatureError:
        return False
    return all(
        hmac.compare_digest(hashlib.new(alg.replace("-", ""), body).digest(), want) for alg, want in digests.items()
    )
