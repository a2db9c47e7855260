"""Hostile values for both doors, and the oracle that says which requests are malformed.

The oracle is written from the RFCs (9110, 9112, 3986), not from authz's
adapters: a door may refuse more than it says, never less. "Malformed" here:

* a method that is not an RFC 9110 token;
* a request target that is not origin-form (``/...``) or absolute-form
  (``http(s)://...``), or holds a byte outside VCHAR (controls, space,
  anything not ASCII);
* a header name that is not a token; a header value with a control character
  other than HTAB, or that is not UTF-8 (authz reads header values as UTF-8);
* a host with a byte an authority cannot hold;
* a scheme other than http / https;
* more than the policy's limits (they are deny reasons too).

Each door adds its own rules (framing for HTTP/1.1, the convention headers).
"""

from __future__ import annotations

import re

from hypothesis import strategies as st

# RFC 9110 5.6.2
TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VCHARS = re.compile(rb"[\x21-\x7e]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# RFC 3986 3.2.2 reg-name / IPv4 (unreserved, pct-encoded, sub-delims) or an IP literal, then an optional port
_HOST = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=%]*|\[[0-9A-Fa-f:.]+\])(?::[0-9]*)?")

#: policy limits (tests/fuzz/policy.yaml), kept in step by test_the_oracle_knows_the_policy_limits
MAX_HEADERS = 48
MAX_HEADER_BYTES = 16384
MAX_TARGET_BYTES = 2048


def is_token(b: bytes) -> bool:
    return _TOKEN.fullmatch(b) is not None


def is_target(b: bytes) -> bool:
    """Origin-form or absolute-form (http/https), VCHARs only."""
    if not _VCHARS.fullmatch(b):
        return False
    if b.startswith(b"/"):
        return True
    low = b.lower()
    return low.startswith((b"http://", b"https://"))


def is_host(b: bytes) -> bool:
    return _HOST.fullmatch(b) is not None


def is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def value_ok(b: bytes) -> bool:
    """A header value authz may accept: UTF-8, no control character but HTAB."""
    return is_utf8(b) and not _BAD_VALUE.search(b)


def target_too_large(b: bytes) -> bool:
    """Clearly over ``max_target_bytes`` (path + query), whatever the door counts."""
    return len(b) > MAX_TARGET_BYTES + 2


# values

#: byte sequences that are not UTF-8: a lone continuation, a truncated sequence,
#: an overlong "/", a UTF-16 surrogate, a code point above U+10FFFF, Latin-1
NOT_UTF8 = [b"\xff", b"\x80", b"\xc3", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"caf\xe9"]
#: controls that split lines or end strings, DEL, and the Unicode ones that look like spaces or lines
CONTROL = [b"\x00", b"\r", b"\n", b"\r\n", b"\x0b", b"\x0c", b"\x1b", b"\x7f", b"\t"]
ODD_UNICODE = [s.encode() for s in ("\u2028", "\u0085", "\ufeff", "\u202e", "\uff0f", "\u00a0", "é", "日本")]
SPECIAL = [b"", b" ", b"  ", b",", b";", b"%", b"%00", b"%2e%2e", b"..", b"/", b"//", b"?", b"#", b"@", b":", b"\\", b'"', b"*"]


def huge(min_size: int = 1) -> st.SearchStrategy[bytes]:
    """A long run of one ASCII letter, across and far over the policy limits."""
    sizes = st.sampled_from([MAX_TARGET_BYTES - 1, MAX_TARGET_BYTES + 8, 8192, MAX_HEADER_BYTES + 1, 70_000])
    return st.builds(lambda n, c: c * max(n, min_size), sizes, st.sampled_from([b"a", b"%", b"/"]))


def pieces() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.sampled_from(NOT_UTF8),
        st.sampled_from(CONTROL),
        st.sampled_from(ODD_UNICODE),
        st.sampled_from(SPECIAL),
        st.binary(max_size=12),
        st.text(max_size=8).map(str.encode),
    )


_HOSTILE: list[st.SearchStrategy[bytes]] = []


def hostile() -> st.SearchStrategy[bytes]:
    """A value built of hostile pieces, or huge, or empty."""
    if not _HOSTILE:
        _HOSTILE.append(st.one_of(st.lists(pieces(), max_size=4).map(b"".join), huge()))
    return _HOSTILE[0]


PERCENT = st.integers(0, 99)
_WHERE = st.integers(0, 1 << 16)
_HOW = st.integers(0, 2)


def around(good: st.SearchStrategy[bytes], rate: int = 30) -> st.SearchStrategy[bytes]:
    """A good value, or in ``rate`` cases out of 100 one with hostile bytes before, inside or after it, or instead of it."""
    if rate <= 0:
        return good
    bad = hostile()

    @st.composite
    def draw_around(draw: st.DrawFn) -> bytes:
        value = draw(good)
        if draw(PERCENT) >= rate:
            return value
        junk, how = draw(bad), draw(_HOW)
        if how == 2:
            return junk
        cut = draw(_WHERE) % (len(value) + 1) if how == 0 else len(value)
        return value[:cut] + junk + value[cut:]

    return draw_around()


METHODS = [b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"get", b"M-SEARCH", b"PROPFIND", b"CONNECT"]
PATHS = [
    b"/anyone/a", b"/jwt/orders/1", b"/sig/items", b"/host/a/b", b"/admin/x", b"/healthz", b"/",
    b"/anyone/a?x=1&y=%20", b"/jwt/q?access_token=t", b"/a/../admin/x", b"/%61dmin/x", b"http://api.test/anyone",
]  # fmt: skip
HOSTS = [b"api.test", b"API.test", b"a.example.org", b"api.test:8443", b"[::1]:80", b"127.0.0.1", b""]
ADDRESSES = [b"172.16.0.1", b"127.0.0.1", b"10.1.2.3", b"192.0.2.5", b"::1", b"2001:db8::1", b"fe80::1%eth0", b"0.0.0.0", b"999.1.1.1", b"localhost", b""]
XFF = [b"203.0.113.9", b"203.0.113.9, 10.0.0.1", b"192.0.2.5", b"unknown", b"::ffff:192.0.2.5", b"1.1.1.1,,", b"[2001:db8::1]:443"]


def methods(rate: int = 30) -> st.SearchStrategy[bytes]:
    return around(st.sampled_from(METHODS), rate)


def paths(rate: int = 30) -> st.SearchStrategy[bytes]:
    return around(st.sampled_from(PATHS), rate)


def hosts(rate: int = 30) -> st.SearchStrategy[bytes]:
    return around(st.sampled_from(HOSTS), rate)
