"""Covered components (RFC 9421 section 2): identifiers and their values in a request.

A component identifier is a structured-field String with parameters:
``"@method"``, ``"content-digest"``, ``"example-dict";key="a"``,
``"@query-param";name="Pet"``. :func:`parse_component` checks one against the
rules for *requests*; :func:`component_value` produces its value from a
``Message``. Anything the RFC calls an error raises ``SignatureError``.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

from http_sfv.item import Item

from authz.httpsig.errors import COMPONENT_MISSING, MALFORMED, UNSUPPORTED, SignatureError
from authz.httpsig.message import Message, normalize_value
from authz.httpsig.sfv import parse_dictionary, reserialize

#: derived components that apply to requests
DERIVED = frozenset(
    {"@method", "@target-uri", "@authority", "@scheme", "@request-target", "@path", "@query", "@query-param"}
)
_FIELD_NAME = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")
_FIELD_PARAMS = frozenset({"sf", "key", "bs"})
# characters the application/x-www-form-urlencoded serializer leaves alone
_QP_SAFE = frozenset(b"*-._0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True, slots=True)
class Component:
    """One covered component: its name, its parameters, and its serialized identifier."""

    name: str
    params: tuple[tuple[str, Any], ...]
    #: the identifier as it appears in the signature base (``"@query-param";name="Pet"``)
    text: str

    def param(self, key: str) -> Any:
        for k, v in self.params:
            if k == key:
                return v
        return None


def parse_component(item: Item) -> Component:
    """Check one component identifier from a ``Signature-Input`` inner list."""
    return check_component(item.value, tuple(item.params.items()), str(item))


def check_component(name: Any, params: tuple[tuple[str, Any], ...], text: str) -> Component:
    """Check one component identifier: its value, its parameters, and its strict serialization ``text``."""
    if not isinstance(name, str) or not name:
        raise SignatureError(MALFORMED, "a component identifier must be a non-empty string")
    keys = [k for k, _ in params]
    if name.startswith("@"):
        if name == "@signature-params":
            raise SignatureError(MALFORMED, "@signature-params must not be a covered component")
        if name == "@status":
            raise SignatureError(UNSUPPORTED, "@status applies to responses only")
        if name not in DERIVED:
            raise SignatureError(UNSUPPORTED, f"unknown derived component {name!r}")
        if "req" in keys:
            raise SignatureError(UNSUPPORTED, f"{name};req applies to responses only")
        if name == "@query-param":
            if keys != ["name"] or not isinstance(params[0][1], str):
                raise SignatureError(MALFORMED, "@query-param needs exactly one string parameter 'name'")
        elif params:
            raise SignatureError(MALFORMED, f"{name} takes no parameters")
    else:
        if not _FIELD_NAME.match(name):
            # RFC 9421 2.1: field names are lower-cased in identifiers; "Host" is not "host"
            raise SignatureError(MALFORMED, f"component {name!r} is not a lower-case field name")
        for k, v in params:
            if k in ("req", "tr"):
                raise SignatureError(UNSUPPORTED, f"{name};{k} does not apply to a request's own fields")
            if k not in _FIELD_PARAMS:
                raise SignatureError(MALFORMED, f"unknown component parameter {k!r} on {name!r}")
            if k == "key" and not isinstance(v, str):
                raise SignatureError(MALFORMED, "the key parameter needs a string")
            if k in ("sf", "bs") and v is not True:
                raise SignatureError(MALFORMED, f"the {k} parameter is a boolean flag")
        if len(set(keys)) != len(keys):
            raise SignatureError(MALFORMED, f"repeated parameter on {name!r}")
        if "bs" in keys and ("sf" in keys or "key" in keys):
            raise SignatureError(MALFORMED, "bs cannot be combined with sf or key")
    return Component(name, params, text)


def component_value(msg: Message, comp: Component) -> str:
    """The value of ``comp`` in ``msg`` (RFC 9421 2.1 and 2.2), as it goes into the base."""
    name = comp.name
    if name[0] == "@":
        value = _derived(msg, comp)
    else:
        value = _field(msg, comp)
    if not value.isascii() or "\n" in value or "\r" in value:
        raise SignatureError(MALFORMED, f"the value of {comp.text} is not printable ASCII on one line (use ;bs)")
    return value


def _derived(msg: Message, comp: Component) -> str:
    name = comp.name
    if name == "@method":
        return msg.method
    if name == "@authority":
        return msg.norm_authority()
    if name == "@path":
        return msg.path
    if name == "@query":
        return f"?{msg.query}"
    if name == "@target-uri":
        return msg.target_uri()
    if name == "@scheme":
        return msg.scheme.lower()
    if name == "@request-target":
        return msg.target()
    # @query-param
    wanted = comp.params[0][1]
    found = [v for k, v in query_params(msg) if k == wanted]
    if not found:
        raise SignatureError(COMPONENT_MISSING, f"query parameter {wanted!r} is not in the request")
    if len(found) > 1:
        # RFC 9421 2.2.8: a repeated parameter cannot be covered by name; sign @query instead
        raise SignatureError(MALFORMED, f"query parameter {wanted!r} occurs {len(found)} times")
    return found[0]


def query_params(msg: Message) -> list[tuple[str, str]]:
    """The query's (name, value) pairs, each decoded and re-encoded as RFC 9421 2.2.8 says."""
    if msg._qp is None:
        pairs: list[tuple[str, str]] = []
        if msg.query:
            for part in msg.query.split("&"):
                if not part:
                    continue
                key, _, value = part.partition("=")
                pairs.append((_qp_encode(key), _qp_encode(value)))
        msg._qp = pairs
    return msg._qp


def _qp_encode(raw: str) -> str:
    """Form-urlencoded parse then serialize, with spaces as ``%20`` (RFC 9421 2.2.8)."""
    data = unquote_to_bytes(raw.replace("+", " "))
    return "".join(chr(b) if b in _QP_SAFE else f"%{b:02X}" for b in data)


def _field(msg: Message, comp: Component) -> str:
    name = comp.name
    combined = msg.fields.get(name)
    if combined is None:
        raise SignatureError(COMPONENT_MISSING, f"field {name!r} is not in the request")
    if not comp.params:
        lines = msg.field_lines.get(name) if msg.field_lines is not None else None
        if lines is not None:
            return ", ".join(normalize_value(v) for v in lines)
        return normalize_value(combined)
    key = comp.param("key")
    if key is not None:
        d = parse_dictionary(normalize_value(combined), f"field {name!r}", strict_keys=False)
        if key not in d:
            raise SignatureError(COMPONENT_MISSING, f"field {name!r} has no member {key!r}")
        member = d[key]
        # a bare key is the boolean true, serialized as ?1 (RFC 9421 2.1.2)
        return str(member)
    if comp.param("sf"):
        return reserialize(name, normalize_value(combined))
    # bs: each field line as a byte sequence, joined with ", " (RFC 9421 2.1.3)
    lines = msg.field_lines.get(name) if msg.field_lines is not None else None
    values = lines if lines is not None else [combined]
    return ", ".join(":" + base64.b64encode(normalize_value(v).encode("utf-8")).decode("ascii") + ":" for v in values)
