"""RFC 8941 structured fields through ``http-sfv``, with the strictness signatures need.

``http-sfv`` follows RFC 8941 to the letter, including "the last of duplicate
dictionary keys wins". For ``Signature-Input`` / ``Signature`` that rule lets
a proxy-appended or attacker-appended member silently replace another with the
same label, so :func:`parse_dictionary` refuses duplicate keys instead.
"""

from __future__ import annotations

from typing import Any

from http_sfv.dictionary import Dictionary
from http_sfv.item import InnerList, Item
from http_sfv.list import List

from authz.httpsig.errors import MALFORMED, SignatureError


class _StrictDictionary(Dictionary):
    """A Dictionary whose parse fails on a repeated key."""

    def __setitem__(self, key: str, value: Any) -> None:
        if key in self.data:
            raise ValueError(f"duplicate dictionary key {key!r}")
        super().__setitem__(key, value)


def parse_dictionary(value: str, what: str, *, strict_keys: bool = True) -> Dictionary:
    """Parse a Dictionary field value or raise ``SignatureError(malformed)``."""
    d: Dictionary = _StrictDictionary() if strict_keys else Dictionary()
    try:
        d.parse(value.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        cause = exc.__cause__ or exc
        raise SignatureError(MALFORMED, f"{what} is not a structured dictionary: {cause}") from None
    return d


def parse_item(value: str, what: str) -> Item:
    """Parse an Item (a component identifier such as ``"@query-param";name="id"``)."""
    item = Item()
    try:
        item.parse(value.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise SignatureError(MALFORMED, f"{what} is not a structured item: {exc.__cause__ or exc}") from None
    return item


#: structured fields whose type RFC 9421 2.1.1 needs to know for ``;sf`` / ``;key``
KNOWN_TYPES: dict[str, str] = {
    "accept-signature": "dictionary",
    "signature-input": "dictionary",
    "signature": "dictionary",
    "content-digest": "dictionary",
    "repr-digest": "dictionary",
    "want-content-digest": "dictionary",
    "want-repr-digest": "dictionary",
    "priority": "dictionary",
    "cache-status": "list",
    "proxy-status": "list",
    "cdn-cache-control": "dictionary",
    "client-cert": "item",
    "client-cert-chain": "list",
    "example-dict": "dictionary",
}


def reserialize(name: str, value: str) -> str:
    """Strictly re-serialize a structured field (RFC 9421 2.1.1, ``;sf``).

    The type comes from :data:`KNOWN_TYPES`; an unknown field is tried as a
    Dictionary, then a List, then an Item, which gives the same text for any
    value that parses as more than one of them.
    """
    kinds = [KNOWN_TYPES[name]] if name in KNOWN_TYPES else ["dictionary", "list", "item"]
    for kind in kinds:
        parsed: Dictionary | List | Item = {"dictionary": Dictionary, "list": List, "item": Item}[kind]()
        try:
            parsed.parse(value.encode("ascii"))
            return str(parsed)
        except (ValueError, UnicodeEncodeError):
            continue
    raise SignatureError(MALFORMED, f"field {name!r} is not a structured field value")


__all__ = ["KNOWN_TYPES", "Dictionary", "InnerList", "Item", "List", "parse_dictionary", "parse_item", "reserialize"]
