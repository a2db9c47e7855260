"""The fast path for canonical Signature-Input / Signature agrees with http-sfv on every input.

Property tests: canonical fields that http-sfv itself serializes are taken by
the fast path and read exactly as http-sfv reads them (components, parameters
and their types, the ``@signature-params`` text); any other text, mutated or
hostile, is either refused by the fast path (and goes to http-sfv) or read
the same way.
"""

from __future__ import annotations

from typing import Any

from http_sfv.item import InnerList, Item
from http_sfv.types import Token
from hypothesis import example, given, settings
from hypothesis import strategies as st

from authz.httpsig import base, fast
from authz.httpsig.errors import SignatureError
from authz.httpsig.sfv import parse_dictionary

KEYS = st.from_regex(r"[a-z*][a-z0-9_\-.*]{0,8}", fullmatch=True)
#: strings without escapes: the fast path's shape (one with '"' or '\\' takes the http-sfv path)
STRINGS = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, blacklist_characters='"\\'), max_size=12)
TOKENS = st.from_regex(r"[A-Za-z*][!#$%&'*+\-.^_`|~:/A-Za-z0-9]{0,8}", fullmatch=True).map(Token)
INTEGERS = st.integers(min_value=-(10**12), max_value=10**12)
VALUES = st.one_of(INTEGERS, STRINGS, TOKENS, st.booleans())
PARAMS = st.dictionaries(KEYS, VALUES, max_size=4)
NAMES = st.sampled_from(["@method", "@authority", "@target-uri", "@path", "@query", "content-digest", "date", "x-a", "example-dict"])


def slow(value: str) -> dict[str, base.SignatureInput] | SignatureError:
    """The http-sfv path alone."""
    try:
        d = parse_dictionary(value, "Signature-Input")
        return {label: base._input(label, member) for label, member in d.items()}
    except SignatureError as exc:
        return exc


def quick(value: str) -> dict[str, base.SignatureInput] | SignatureError | None:
    if fast.signature_input(value) is None:
        return None
    try:
        return base.parse_signature_input(value)
    except SignatureError as exc:
        return exc


def same(a: Any, b: Any) -> bool:
    if isinstance(a, SignatureError) or isinstance(b, SignatureError):
        return isinstance(a, SignatureError) and isinstance(b, SignatureError) and a.code == b.code
    return bool(a == b)


@st.composite
def canonical(draw: st.DrawFn) -> str:
    inner = InnerList()
    for name in draw(st.lists(NAMES, max_size=6, unique=True)):
        item = Item(name)
        for k, v in draw(PARAMS).items():
            item.params[k] = v
        inner.append(item)
    for k, v in draw(PARAMS).items():
        inner.params[k] = v
    return f"{draw(KEYS)}={inner}"


@settings(max_examples=300, deadline=None, derandomize=True)
@given(canonical())
@example('sig1=("@method" "@authority" "content-digest");created=1618884473;keyid="test-key-ed25519";nonce="b3k2pp5k"')
@example('sig1=();created=0')
@example('sig1=("x";sf "y";key="a;b");flag;neg=?0;tok=a/b:c')
def test_canonical_fields_take_the_fast_path_and_read_as_http_sfv_reads_them(text: str) -> None:
    assert fast.signature_input(text) is not None, text
    assert same(quick(text), slow(text))
    ok = slow(text)
    if isinstance(ok, dict):
        (si,) = ok.values()
        assert si.params_text == text.split("=", 1)[1]  # the canonical text is its own serialization


MUTATIONS = st.sampled_from([" ", "  ", ",", ";", "=", '"', "\\", "(", ")", "?1", "01", "1.5", ":YQ==:", "A", "\t", "x=1"])


@settings(max_examples=600, deadline=None, derandomize=True)
@given(canonical(), st.lists(st.tuples(st.integers(min_value=0, max_value=200), MUTATIONS), min_size=1, max_size=3))
@example('sig1=("@method");created=01', [])
@example('sig1=("@method");flag=?1', [])
@example('sig1=("@method" "@method")', [])
@example('sig1=("@method");created=1;created=2', [])
@example('a=("x"), b=("y")', [])
@example('sig1=( "x")', [])
@example('sig1=("x");nonce="a\\"b"', [])
def test_any_other_text_is_refused_by_the_fast_path_or_read_the_same(text: str, edits: list[tuple[int, str]]) -> None:
    for at, piece in edits:
        at = min(at, len(text))
        text = text[:at] + piece + text[at:]
    got = quick(text)
    if got is not None:
        assert same(got, slow(text)), text


@settings(max_examples=300, deadline=None, derandomize=True)
@given(KEYS, st.binary(max_size=80))
def test_signature_byte_sequences_read_as_http_sfv_reads_them(label: str, raw: bytes) -> None:
    item = Item(raw)
    text = f"{label}={item}"
    assert fast.signature(text) == (label, raw)
    d = parse_dictionary(text, "Signature")
    assert d[label].value == raw


def test_non_canonical_signatures_take_the_slow_path() -> None:
    for text in ("sig1=:YWJj:, sig2=:YWJj:", "sig1=:YWJ:", "sig1=:YW=j:", "sig1 =:YWJj:", "sig1=:YWJj:;x"):
        assert fast.signature(text) is None, text
