"""A fast path for the common shapes of ``Signature-Input`` and ``Signature`` (RFC 8941 canonical text).

Signers write these fields in the canonical serialization of RFC 8941: one
member, ``label=("@method" "@authority" "content-digest");created=1;keyid="k"``
and ``label=:base64:``. When a field is *exactly* that (one member, plain
strings without escapes, integers without leading zeros, tokens, bare-key
booleans, single spaces), its parse is what ``http-sfv`` would produce and its
re-serialization is the text itself: the members are read with a few regular
expressions and the text becomes ``@signature-params`` as it is.

Anything else (several members, escapes, decimals, byte sequences in
parameters, extra whitespace, non-canonical forms) returns None and takes the
full ``http-sfv`` path, which refuses or re-serializes it. Tests check the two
agree on every input (tests/unit/test_httpsig_fast.py).
"""

from __future__ import annotations

import base64
import binascii
import re
from functools import lru_cache
from typing import Any

from http_sfv.types import Token

_KEY = r"[a-z*][a-z0-9_\-.*]{0,63}"
_STRING = r'"[\x20\x21\x23-\x5b\x5d-\x7e]*"'
_INTEGER = r"-?(?:0|[1-9][0-9]{0,14})"
#: an RFC 8941 Token
_BARE_WORD = r"[A-Za-z*][!#$%&'*+\-.^_`|~:/A-Za-z0-9]*"
#: a parameter: a bare key is boolean true (canonical); false is ?0
_PARAM = rf";{_KEY}(?:=(?:{_INTEGER}|{_STRING}|{_BARE_WORD}|\?0))?"
_ITEM = rf"{_STRING}(?:{_PARAM})*"
_INPUT = re.compile(rf"({_KEY})=(\((?:{_ITEM}(?: {_ITEM})*)?\)((?:{_PARAM})*))")
_ITEMS = re.compile(rf"({_STRING})((?:{_PARAM})*)")
_PARAMS = re.compile(rf";({_KEY})(?:=({_INTEGER}|{_STRING}|{_BARE_WORD}|\?0))?")
_SIGNATURE = re.compile(rf"({_KEY})=:([A-Za-z0-9+/]*={{0,2}}):")


def _value(text: str | None) -> Any:
    if text is None or text == "":
        return True
    c = text[0]
    if c == '"':
        return text[1:-1]
    if c == "?":
        return False
    if c == "-" or c.isdigit():
        return int(text)
    return Token(text)


def params(text: str) -> list[tuple[str, Any]] | None:
    """Parameters in canonical text, in order; None when a key repeats (http-sfv keeps the last)."""
    out: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for m in _PARAMS.finditer(text):
        key = m.group(1)
        if key in seen:
            return None
        seen.add(key)
        out.append((key, _value(m.group(2))))
    return out


Items = tuple[tuple[str, tuple[tuple[str, Any], ...], str], ...]


def signature_input(value: str) -> tuple[str, Items, list[tuple[str, Any]], str] | None:
    """(label, ((component name, its parameters, its identifier text), ...), inner-list parameters, inner-list text).

    None: not the one-member canonical shape; the caller parses with http-sfv.
    """
    m = _INPUT.fullmatch(value)
    if m is None:
        return None
    label, inner, tail = m.group(1), m.group(2), m.group(3)
    list_params = params(tail)
    if list_params is None:
        return None
    items = components(inner[1 : len(inner) - len(tail) - 1])
    if items is None:
        return None
    return label, items, list_params, inner


@lru_cache(maxsize=1024)
def components(text: str) -> Items | None:
    """The items of an inner list's canonical text (without the parentheses): the same for every
    request of a signer, only the parameters after them change."""
    items = []
    for im in _ITEMS.finditer(text):
        item_params = params(im.group(2))
        if item_params is None:
            return None
        items.append((im.group(1)[1:-1], tuple(item_params), im.group(0)))
    return tuple(items)


def signature(value: str) -> tuple[str, bytes] | None:
    """(label, signature bytes) of a one-member canonical ``Signature``; None otherwise."""
    m = _SIGNATURE.fullmatch(value)
    if m is None:
        return None
    b64 = m.group(2)
    if len(b64) % 4:
        return None  # http-sfv decides what unpadded base64 means
    try:
        return m.group(1), base64.b64decode(b64, validate=True)
    except binascii.Error:
        return None


__all__ = ["params", "signature", "signature_input"]
