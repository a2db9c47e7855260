"""Read the RFC 9421 vectors into library objects (messages, keys)."""

from __future__ import annotations

import base64
import json
import pathlib
from functools import cache
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

from authz.httpsig import Message
from authz.httpsig.message import normalize_value
from authz.request import Request, join_field_lines

HERE = pathlib.Path(__file__).parent


@cache
def data(name: str) -> dict[str, Any]:
    return json.loads((HERE / f"{name}.json").read_text())  # type: ignore[no-any-return]


def messages() -> dict[str, dict[str, Any]]:
    return data("messages")["messages"]  # type: ignore[no-any-return]


def cases() -> list[dict[str, Any]]:
    return data("signature_cases")["cases"]  # type: ignore[no-any-return]


def request_cases() -> list[dict[str, Any]]:
    """Signature cases whose signed message is a request."""
    return [c for c in cases() if messages()[c["target_message"]]["kind"] == "request"]


def key(keyid: str) -> dict[str, Any]:
    return data("keys")["keys"][keyid]  # type: ignore[no-any-return]


def public_key(keyid: str) -> Any:
    k = key(keyid)
    if "secret_b64" in k:
        return base64.b64decode(k["secret_b64"])
    return load_pem_public_key(k["public_pem"].encode())


def private_key(keyid: str) -> Any:
    k = key(keyid)
    if "secret_b64" in k:
        return base64.b64decode(k["secret_b64"])
    return load_pem_private_key(k["private_pem"].encode(), None)


def message(msg: dict[str, Any], scheme: str = "https") -> Message:
    """The vector message with its separate field lines (as an HTTP/1.1 parser sees them)."""
    lines: dict[str, list[str]] = {}
    for name, value in msg["headers"]:
        lines.setdefault(name.lower(), []).append(normalize_value(value))
    query = msg["query"]
    return Message(
        method=msg["method"],
        scheme=scheme,
        authority=msg["authority"],
        path=msg["path"],
        query=query[1:] if query else "",
        has_query=bool(query),
        fields={n: ", ".join(v) for n, v in lines.items()},
        field_lines=lines,
    )


def request(msg: dict[str, Any], scheme: str = "https") -> Request:
    """The vector message as the decision server's normalized request (lines joined with ", ")."""
    query = msg["query"]
    return Request(
        method=msg["method"],
        path=msg["path"],
        query=query[1:] if query else "",
        has_query=bool(query),
        host=msg["authority"],
        scheme=scheme,
        protocol="HTTP/1.1",
        headers=join_field_lines([(n.lower(), v) for n, v in msg["headers"]]),
        peer_ip="127.0.0.1",
    )
