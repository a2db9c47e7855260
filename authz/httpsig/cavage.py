"""The draft-cavage HMAC form Kong's ``hmac-auth`` plugin uses.

    Authorization: hmac username="alice", algorithm="hmac-sha256",
                   headers="date request-line", signature="<base64>"

The signing string is one line per listed header, in order, joined with
"\\n": ``request-line`` is ``METHOD target HTTP/x.y``, any other name is
``name: value`` (lower-cased name). Only the parsing and the signing string
live here; clock and key rules belong to the caller.
"""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Mapping

from authz.algorithms import ALGORITHMS, hmac_digest
from authz.httpsig.errors import COMPONENT_MISSING, MALFORMED, SignatureError

#: Kong algorithm names -> hash names, from the algorithm table (hmac-sha1 is not accepted)
HASHES = {row.kong: row.hash for row in ALGORITHMS.values() if row.kong}
_PARAM = re.compile(r'\s*([A-Za-z]+)\s*=\s*"([^"\\]*)"\s*(?:,|$)')
MAX_HEADERS = 32


def parse_authorization(value: str) -> dict[str, str]:
    """Parse ``hmac username=..., algorithm=..., headers=..., signature=...`` into its parameters."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "hmac":
        raise SignatureError(MALFORMED, "not an hmac Authorization value")
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if m is None:
            raise SignatureError(MALFORMED, "hmac Authorization parameters do not parse")
        name = m.group(1).lower()
        if name in params:
            raise SignatureError(MALFORMED, f"hmac parameter {name!r} repeated")
        params[name] = m.group(2)
        pos = m.end()
    for required in ("username", "algorithm", "signature"):
        if not params.get(required):
            raise SignatureError(MALFORMED, f"hmac Authorization lacks {required}")
    return params


def signed_headers(params: dict[str, str]) -> list[str]:
    """The header names the signature covers (Kong's default is ``date``)."""
    names = params.get("headers", "").lower().split() or ["date"]
    if len(names) > MAX_HEADERS or len(set(names)) != len(names):
        raise SignatureError(MALFORMED, "hmac headers list too long or repeated")
    return names


def signing_string(names: list[str], method: str, target: str, protocol: str, fields: Mapping[str, str]) -> bytes:
    """The string Kong clients sign, from the request's parts and fields (lower-cased names)."""
    lines = []
    for name in names:
        if name == "request-line":
            lines.append(f"{method} {target} {protocol or 'HTTP/1.1'}")
            continue
        value = fields.get(name)
        if value is None:
            raise SignatureError(COMPONENT_MISSING, f"signed header {name!r} is not in the request")
        lines.append(f"{name}: {value}")
    return "\n".join(lines).encode("utf-8")


def sign(algorithm: str, secret: bytes, text: bytes) -> str:
    """The base64 ``signature`` parameter for ``text``."""
    return base64.b64encode(hmac_digest(HASHES[algorithm], secret, text)).decode("ascii")


def matches(algorithm: str, secret: bytes, text: bytes, signature_b64: str) -> bool:
    """Constant-time comparison of a received signature with the expected one."""
    try:
        received = base64.b64decode(signature_b64, validate=True)
    except ValueError:
        return False
    expected = hmac_digest(HASHES[algorithm], secret, text)
    return hmac.compare_digest(expected, received)


def authorization(username: str, algorithm: str, secret: bytes, names: list[str], text: bytes) -> str:
    """A complete ``Authorization`` value (the client side)."""
    return (
        f'hmac username="{username}", algorithm="{algorithm}", headers="{" ".join(names)}", '
        f'signature="{sign(algorithm, secret, text)}"'
    )
