"""``Signature-Input`` / ``Signature`` parsing and the signature base (RFC 9421 2.3, 2.5, 4).

The verifier never trusts the received text of ``@signature-params``: the
inner list is parsed and strictly re-serialized (RFC 8941), so parameter
values must have their registered types and whitespace tricks change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from http_sfv.item import InnerList, Item

from authz.httpsig import fast
from authz.httpsig.components import Component, check_component, component_value, parse_component
from authz.httpsig.errors import MALFORMED, SignatureError
from authz.httpsig.message import Message
from authz.httpsig.sfv import parse_dictionary

#: signature parameters and their RFC 8941 types (RFC 9421 2.3)
PARAM_TYPES: dict[str, type] = {"created": int, "expires": int, "nonce": str, "alg": str, "keyid": str, "tag": str}
#: bounds that keep a hostile header from costing more than a normal one
MAX_LABELS = 8
MAX_COMPONENTS = 32
MAX_PARAM_CHARS = 256


@dataclass(frozen=True, slots=True)
class SignatureInput:
    """One member of ``Signature-Input``, checked: what it covers and its parameters."""

    label: str
    components: tuple[Component, ...]
    #: the strict serialization of the inner list, the value of ``@signature-params``
    params_text: str
    created: int | None = None
    expires: int | None = None
    nonce: str | None = None
    alg: str | None = None
    keyid: str | None = None
    tag: str | None = None

    def covers(self, name: str) -> bool:
        return any(c.name == name for c in self.components)


def parse_signature_input(value: str) -> dict[str, SignatureInput]:
    """Parse a ``Signature-Input`` field value: label -> checked input, in field order."""
    quick = fast.signature_input(value)
    if quick is not None:  # the canonical one-member shape: read directly (authz.httpsig.fast)
        label, items, params, text = quick
        if len(items) > MAX_COMPONENTS:
            raise SignatureError(MALFORMED, f"{label!r} covers {len(items)} components (at most {MAX_COMPONENTS})")
        return {label: _checked(label, _components(items), params, text)}
    d = parse_dictionary(value, "Signature-Input")
    if len(d) > MAX_LABELS:
        raise SignatureError(MALFORMED, f"Signature-Input has {len(d)} members (at most {MAX_LABELS})")
    return {label: _input(label, member) for label, member in d.items()}


def parse_signature(value: str) -> dict[str, bytes]:
    """Parse a ``Signature`` field value: label -> signature bytes."""
    quick = fast.signature(value)
    if quick is not None:
        return {quick[0]: quick[1]}
    d = parse_dictionary(value, "Signature")
    if len(d) > MAX_LABELS:
        raise SignatureError(MALFORMED, f"Signature has {len(d)} members (at most {MAX_LABELS})")
    out: dict[str, bytes] = {}
    for label, member in d.items():
        if not isinstance(member, Item) or not isinstance(member.value, bytes) or member.params:
            raise SignatureError(MALFORMED, f"Signature member {label!r} is not a byte sequence")
        out[label] = member.value
    return out


def _input(label: str, member: object) -> SignatureInput:
    if not isinstance(member, InnerList):
        raise SignatureError(MALFORMED, f"Signature-Input member {label!r} is not an inner list")
    if len(member) > MAX_COMPONENTS:
        raise SignatureError(MALFORMED, f"{label!r} covers {len(member)} components (at most {MAX_COMPONENTS})")
    comps = tuple(parse_component(item) for item in member)
    return _checked(label, comps, list(member.params.items()), str(member))


@lru_cache(maxsize=1024)
def _components(items: fast.Items) -> tuple[Component, ...]:
    # the same few covered-component lists, request after request: checked once each
    return tuple(check_component(name, params, text) for name, params, text in items)


def _checked(label: str, comps: tuple[Component, ...], params: list[tuple[str, object]], text: str) -> SignatureInput:
    """The rules every Signature-Input member obeys, however it was parsed."""
    seen = set()
    for c in comps:
        if c.text in seen:
            raise SignatureError(MALFORMED, f"{label!r} covers {c.text} twice")
        seen.add(c.text)
    values: dict[str, object] = {}
    for key, v in params:
        want = PARAM_TYPES.get(key)
        if want is not None:
            if type(v) is not want:  # bool is an int subclass: the type must be exact
                raise SignatureError(MALFORMED, f"signature parameter {key!r} must be {want.__name__}")
            if isinstance(v, str) and len(v) > MAX_PARAM_CHARS:
                raise SignatureError(MALFORMED, f"signature parameter {key!r} is too long")
            if isinstance(v, int) and not 0 <= v < 2**40:
                raise SignatureError(MALFORMED, f"signature parameter {key!r} is out of range")
            values[key] = v
    created, expires = values.get("created"), values.get("expires")
    if isinstance(created, int) and isinstance(expires, int) and expires < created:
        raise SignatureError(MALFORMED, f"{label!r} expires before it was created")
    return SignatureInput(label=label, components=comps, params_text=text, **values)  # type: ignore[arg-type]


def signature_base(msg: Message, si: SignatureInput) -> bytes:
    """The signature base of ``si`` over ``msg`` (RFC 9421 2.5), LF-separated, no trailing LF."""
    lines = [f"{c.text}: {component_value(msg, c)}" for c in si.components]
    lines.append(f'"@signature-params": {si.params_text}')
    return "\n".join(lines).encode("ascii")


def build_params(
    components: list[str] | tuple[str, ...],
    params: list[tuple[str, int | str]],
) -> InnerList:
    """The inner list for a new signature: component identifiers and ordered parameters.

    Each identifier is given as its structured text, e.g. ``"@query-param";name="id"``
    or plain ``@method`` / ``content-digest`` (quoted automatically).
    """
    from authz.httpsig.sfv import parse_item

    inner = InnerList()
    for text in components:
        item = parse_item(text if text.startswith('"') else f'"{text}"', "component identifier")
        parse_component(item)
        inner.append(item)
    for key, value in params:
        inner.params[key] = value
    return inner
