"""HTTP Message Signatures (RFC 9421) for requests: parse, build the base, verify, sign.

A library: it knows HTTP messages, structured fields and cryptography, and
nothing of policies, stores or proxies. The authenticate stage
(``authz.stages.authenticate.signature``) adds keys, time and replay rules.

    msg = Message(method=..., scheme=..., authority=..., path=..., fields=headers)
    inputs = parse_signature_input(headers["signature-input"])
    sigs = parse_signature(headers["signature"])
    base = signature_base(msg, inputs["sig1"])
    ok = verify(key.algorithm, key.material, base, sigs["sig1"])
"""

from __future__ import annotations

from authz.httpsig.algorithms import ALGORITHMS, sign, verify
from authz.httpsig.base import SignatureInput, parse_signature, parse_signature_input, signature_base
from authz.httpsig.components import Component, component_value, parse_component
from authz.httpsig.digest import body_matches, check_content_digest, content_digest
from authz.httpsig.errors import SignatureError
from authz.httpsig.message import Message
from authz.httpsig.signer import decode_secret, load_signing_key, new_nonce, sign_request

__all__ = [
    "ALGORITHMS",
    "Component",
    "Message",
    "SignatureError",
    "SignatureInput",
    "body_matches",
    "check_content_digest",
    "component_value",
    "content_digest",
    "decode_secret",
    "load_signing_key",
    "new_nonce",
    "parse_component",
    "parse_signature",
    "parse_signature_input",
    "sign",
    "sign_request",
    "signature_base",
    "verify",
]
