"""Doors: wire formats in (a normalized Request) and out (the decision on the wire).

``envoy_grpc`` speaks Envoy's ext_authz gRPC API; ``http`` speaks the HTTP
conventions of Envoy http_service, forward-auth proxies and nginx auth_request.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from authz.config.cidr import canonical_ip
from authz.decision import REQUEST_MALFORMED, Reason

#: an origin-form request target (RFC 9112 3.2.1): "/" then printable ASCII, no space
_BAD_TARGET = re.compile(r"[^!-~]")
#: an authority as Host carries it (RFC 3986 3.2.2): reg-name or IPv4, or [IPv6], then an optional port
_HOST = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+(?::[0-9]{0,5})?|\[[0-9A-Fa-f:.]+\](?::[0-9]{0,5})?")
#: a DNS name (253) with a port (":65535"); a longer Host names no host
MAX_HOST_CHARS = 259
#: RFC 9110 5.1 / 5.5: the characters of field names (tokens), and what no field value may hold
_TOKEN_CHARS = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]*")
_UNSAFE_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class Malformed(Exception):
    """A door's input cannot become a Request; carries the reason code to deny with."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def peer_address(text: str) -> str:
    """The connection peer's address in canonical form (``authz.config.cidr.canonical_ip``).

    Both doors apply it: an address that is not an IPv4 or IPv6 address
    (``1.2.3.4\\r\\nx-evil: 1``, a name, a zone id, nothing) would become the
    client's identity and its ``x-authz-client-ip``, so it is refused.

    :raises Malformed: ``request.malformed``
    """
    ip = canonical_ip(text)
    if ip is None:
        raise Malformed(REQUEST_MALFORMED, "the peer address is not an IP address")
    return ip


def check_method(method: str) -> None:
    """:raises Malformed: an empty method, or one that is not ASCII letters"""
    if not method or not method.isascii() or not method.isalpha():
        raise Malformed(REQUEST_MALFORMED, "missing or invalid method")


def check_target(target: str) -> None:
    """The request target must be origin-form: ``/``, then printable ASCII without a space.

    Both doors refuse the same targets (a relative path, ``*``, absolute-form,
    nothing, a space, CR, LF, NUL or another control character, a raw byte
    outside ASCII), as the HTTP door's parser does; Envoy always sends
    origin-form. What an origin-form target means as a path (encodings, dot
    segments, parameters...) is the path canonicalizer's to judge
    (``request.ambiguous_path``).

    :raises Malformed: ``request.malformed``
    """
    if target[:1] != "/" or _BAD_TARGET.search(target) is not None:
        raise Malformed(REQUEST_MALFORMED, "the request target is not an origin-form path")


def check_host(host: str) -> None:
    """The authority must be present, one, and a host name or address with an optional port.

    A repeated Host joined into one value (``a, b``) has a space and is refused.

    :raises Malformed: ``request.malformed``
    """
    if not host:
        raise Malformed(REQUEST_MALFORMED, "no Host")
    # the length first: only short texts become cache keys
    if len(host) > MAX_HOST_CHARS or not _host_ok(host):
        raise Malformed(REQUEST_MALFORMED, "the Host is not a host name or address")


@lru_cache(maxsize=4096)
def _host_ok(host: str) -> bool:
    # a service sees a handful of hosts: one dictionary lookup per request
    return _HOST.fullmatch(host) is not None


def fields_safe(fields: list[tuple[str, str]], names: Sequence[str] = ()) -> bool:
    """Whether header fields may go on the wire: every name a non-empty token, no
    value with a control character but HTAB (CR, LF and NUL least of all).

    ``fields`` are (name, value) pairs, ``names`` more names (headers to remove).
    The last check of each door before it answers: whatever a token, a list or a
    bug put in a decision, a response or an upstream request is never split.
    Two C-speed passes over the joined text, whatever the number of fields.
    """
    field_names, field_values = zip(*fields, strict=True) if fields else ((), ())
    if "" in field_names or "" in names or _TOKEN_CHARS.fullmatch("".join(field_names) + "".join(names)) is None:
        return False
    values = "".join(field_values)
    return values.isprintable() or _UNSAFE_VALUE.search(values) is None
