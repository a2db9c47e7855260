"""The client side: sign a request (tests, examples and ``authz sign`` use this).

    headers = sign_request("POST", "https://api.example.com/v1/items", [("content-type", "application/json")],
                           key_id="bot-ed25519", algorithm="ed25519", key=private_key, body=b'{"a": 1}')

returns the header lines to add (``Content-Digest`` when a body is given,
``Signature-Input`` and ``Signature``). A fresh random nonce and the current
time as ``created`` are included unless told otherwise.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_private_key

from authz.httpsig import algorithms
from authz.httpsig.base import build_params, parse_signature_input, signature_base
from authz.httpsig.digest import content_digest
from authz.httpsig.message import Message

DEFAULT_COMPONENTS = ("@method", "@target-uri")


def new_nonce() -> str:
    """A 128-bit random nonce, URL-safe."""
    return secrets.token_urlsafe(16)


def sign_request(
    method: str,
    url: str,
    headers: Iterable[tuple[str, str]] | Mapping[str, str] = (),
    *,
    key_id: str,
    algorithm: str,
    key: Any,
    components: Sequence[str] = DEFAULT_COMPONENTS,
    label: str = "sig1",
    created: int | None = None,
    expires: int | None = None,
    expires_in: int | None = None,
    nonce: str | bool = True,
    tag: str | None = None,
    include_alg: bool = False,
    body: bytes | None = None,
    digest_algorithm: str = "sha-256",
) -> list[tuple[str, str]]:
    """Sign a request; return the header lines to add to it.

    :param components: covered component identifiers (``@method``, ``content-type``,
        ``"@query-param";name="id"``); ``content-digest`` is added when ``body`` is given
    :param created: UNIX seconds; the current time when None
    :param expires_in: seconds after ``created`` for ``expires`` (or give ``expires``)
    :param nonce: a nonce string, True for a fresh random one, False for none
    :param body: the body to digest into ``Content-Digest`` (the body itself is not signed)
    """
    if algorithm not in algorithms.ALGORITHMS:
        raise ValueError(f"unknown signature algorithm {algorithm!r}")
    pairs = list(headers.items() if isinstance(headers, Mapping) else headers)
    added: list[tuple[str, str]] = []
    comps = list(components)
    if body is not None:
        digest = content_digest(body, digest_algorithm)
        pairs = [(n, v) for n, v in pairs if n.lower() != "content-digest"] + [("Content-Digest", digest)]
        added.append(("Content-Digest", digest))
        if "content-digest" not in comps:
            comps.append("content-digest")
    created = int(time.time()) if created is None else created
    if expires is None and expires_in is not None:
        expires = created + expires_in
    params: list[tuple[str, int | str]] = [("created", created)]
    if expires is not None:
        params.append(("expires", expires))
    if nonce:
        params.append(("nonce", new_nonce() if nonce is True else str(nonce)))
    params.append(("keyid", key_id))
    if include_alg:
        params.append(("alg", algorithm))
    if tag is not None:
        params.append(("tag", tag))
    inner = build_params(comps, params)
    sig_input_value = f"{label}={inner}"
    si = parse_signature_input(sig_input_value)[label]
    base = signature_base(Message.from_url(method, url, pairs), si)
    signature = algorithms.sign(algorithm, key, base)
    added.append(("Signature-Input", sig_input_value))
    added.append(("Signature", f"{label}=:{base64.b64encode(signature).decode('ascii')}:"))
    return added


def load_signing_key(data: bytes, algorithm: str, password: bytes | None = None) -> Any:
    """A signing key from a file's bytes: the raw HMAC secret, or a PEM private key.

    :raises ValueError: the data does not hold a key for ``algorithm``
    """
    if algorithm == algorithms.HMAC_SHA256:
        if data.lstrip().startswith(b"-----BEGIN"):
            raise ValueError("an hmac-sha256 secret must be raw bytes, not PEM")
        if len(data) < 32:
            raise ValueError("an hmac-sha256 secret must be at least 32 bytes")
        return data
    try:
        return load_pem_private_key(data, password)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a PEM private key: {exc}") from None


def decode_secret(text: str) -> bytes:
    """An HMAC secret written as base64 or base64url (padding optional)."""
    t = text.strip()
    t += "=" * (-len(t) % 4)
    alt = b"-_" if ("-" in t or "_" in t) else b"+/"
    return base64.b64decode(t, altchars=alt, validate=True)
