"""The agent side of Web Bot Auth: sign a request as an automated client (tests, ``authz sign --web-bot-auth``).

    headers = sign_agent_request("GET", "https://api.example.com/v1/items", key=ed25519_private_key,
                                 agent="https://crawler.example")

returns the header lines to add: ``Signature-Agent`` (a structured Dictionary
keyed by the signature's label, or with ``form="string"`` the older bare
String), ``Signature-Input`` and ``Signature``. The signature covers
``@authority`` and the agent's ``Signature-Agent`` member, carries ``created``,
``expires``, ``keyid`` (the key's JWK thumbprint) and ``tag="web-bot-auth"``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from authz.httpsig.signer import sign_request

TAG = "web-bot-auth"


def ed25519_jwk(key: ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey) -> dict[str, str]:
    """The public JWK of an Ed25519 key (RFC 8037), with its thumbprint as ``kid``."""
    public = key.public_key() if isinstance(key, ed25519.Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    return {"kty": "OKP", "crv": "Ed25519", "kid": ed25519_thumbprint(x), "x": x}


def ed25519_thumbprint(x: str) -> str:
    """The RFC 7638 SHA-256 thumbprint of the Ed25519 JWK with public value ``x``."""
    text = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()


def sign_agent_request(
    method: str,
    url: str,
    headers: Iterable[tuple[str, str]] | Mapping[str, str] = (),
    *,
    key: ed25519.Ed25519PrivateKey,
    agent: str | None,
    label: str = "sig1",
    form: str = "dictionary",
    created: int | None = None,
    expires_in: int = 60,
    expires: int | None = None,
    nonce: str | bool = True,
    tag: str = TAG,
    components: Sequence[str] = ("@authority",),
    key_id: str | None = None,
    body: bytes | None = None,
) -> list[tuple[str, str]]:
    """Sign a request as a Web Bot Auth agent; return the header lines to add.

    :param agent: the agent's origin (``https://crawler.example``), None for no ``Signature-Agent``
    :param form: ``dictionary`` (``Signature-Agent: sig1="https://..."``, covered as
        ``"signature-agent";key="sig1"``) or ``string`` (the older ``"https://..."``, covered whole)
    :param key_id: default: the key's JWK thumbprint
    :param body: adds and covers ``Content-Digest`` (the body itself is not signed)
    """
    pairs = list(headers.items() if isinstance(headers, Mapping) else headers)
    added: list[tuple[str, str]] = []
    comps = list(components)
    if agent is not None:
        if form == "dictionary":
            value, component = f'{label}="{agent}"', f'"signature-agent";key="{label}"'
        elif form == "string":
            value, component = f'"{agent}"', "signature-agent"
        else:
            raise ValueError(f"unknown Signature-Agent form {form!r} (dictionary or string)")
        pairs.append(("Signature-Agent", value))
        added.append(("Signature-Agent", value))
        comps.append(component)
    created = int(time.time()) if created is None else created
    added += sign_request(
        method, url, pairs, key_id=key_id or ed25519_jwk(key)["kid"], algorithm="ed25519", key=key,
        components=comps, label=label, created=created,
        expires=expires if expires is not None else created + expires_in, nonce=nonce, tag=tag, body=body,
    )  # fmt: skip
    return added
