"""CheckRequest messages as raw protobuf bytes, built by hand from generated parts.

A message is a list of ``(field name, value)`` parts, encoded in order: a
field may appear twice (protobuf keeps the last scalar and merges messages),
or not at all, and a ``string`` field may hold any bytes, invalid UTF-8
included, which no protobuf library would serialize. Field numbers and types
come from the descriptors, so the encoding follows the installed protos.
"""

from __future__ import annotations

from typing import Any, Union

from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import strategies as st

from tests.fuzz import creds, hostile

Parts = list[tuple[str, Union[bytes, int, "Parts"]]]
CHECK = external_auth_pb2.CheckRequest.DESCRIPTOR

_VARINT_TYPES = {
    FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_BOOL, FieldDescriptor.TYPE_ENUM,
}  # fmt: skip


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64 / int32: two's complement in ten bytes
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode(parts: Parts, desc: Descriptor = CHECK) -> bytes:
    out = bytearray()
    for name, value in parts:
        field = desc.fields_by_name[name]
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            assert isinstance(value, list)
            payload = encode(value, field.message_type)
            out += varint(field.number << 3 | 2) + varint(len(payload)) + payload
        elif field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
            assert isinstance(value, bytes)
            out += varint(field.number << 3 | 2) + varint(len(value)) + value
        elif field.type in _VARINT_TYPES:
            assert isinstance(value, int)
            out += varint(field.number << 3) + varint(value)
        else:
            raise AssertionError(f"no encoding for {field.full_name}")
    return bytes(out)


def bad_strings(parts: Parts, desc: Descriptor = CHECK) -> list[str]:
    """Names of ``string`` fields anywhere in the parts that hold bytes that are not UTF-8."""
    found = []
    for name, value in parts:
        field = desc.fields_by_name[name]
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            assert isinstance(value, list)
            found += bad_strings(value, field.message_type)
        elif field.type == FieldDescriptor.TYPE_STRING and isinstance(value, bytes) and not hostile.is_utf8(value):
            found.append(field.full_name)
    return found


# strategies

HEADER_NAMES = [
    b"user-agent", b"authorization", b"x-forwarded-for", b"signature-input", b"signature", b"content-type",
    b"x-authz-subject", b"cookie", b"x-request-id", b"Host", b"X-Mixed-Case", b":authority", b":path", b":method",
    b"x-envoy-external-address", b"content-digest", b"accept",
]  # fmt: skip
CREDENTIAL_NAMES = {b"authorization", b"signature-input", b"signature", b"content-digest"}
HEADER_VALUES = [b"curl/8.0", b"text/plain", b"a=b; c=d", b"Bearer x.y.z", b"sig1=:AAAA:", *hostile.XFF]


def _optional(strategy: st.SearchStrategy[Any], name: str, present: int) -> st.SearchStrategy[Parts]:
    """``[(name, value)]`` in ``present`` cases out of 10, else ``[]``; one in ten of those twice."""
    absent = (10 - present) * 10

    @st.composite
    def draw_optional(draw: st.DrawFn) -> Parts:
        r = draw(hostile.PERCENT)
        if r < absent:
            return []
        if r % 10:
            return [(name, draw(strategy))]
        return [(name, draw(strategy)), (name, draw(strategy))]

    return draw_optional()


def _concat(*groups: st.SearchStrategy[Parts], shuffle: bool = True) -> st.SearchStrategy[Parts]:
    @st.composite
    def draw_concat(draw: st.DrawFn) -> Parts:
        parts = [p for g in groups for p in draw(g)]
        if shuffle and len(parts) > 1 and draw(hostile.PERCENT) < 30:
            parts = draw(st.permutations(parts))
        return parts

    return draw_concat()


class Gen:
    """The strategies, with hostile values in ``rate`` cases out of 100 in each field."""

    def __init__(self, rate: int, credentials: list[bytes], lines: st.SearchStrategy[creds.Line]) -> None:
        self.rate = rate
        self.credentials = credentials
        self.lines = lines

    def around(self, good: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
        return hostile.around(good, self.rate)

    def junk(self) -> st.SearchStrategy[bytes]:
        return self.around(st.sampled_from([b"", b"x", b"some text", b"k=v"]))

    def header_names(self) -> st.SearchStrategy[bytes]:
        if not self.rate:  # clean requests keep the credentials they were made with
            return st.sampled_from([n for n in HEADER_NAMES if n not in CREDENTIAL_NAMES])
        return self.around(st.sampled_from(HEADER_NAMES))

    def header_values(self) -> st.SearchStrategy[bytes]:
        return self.around(st.sampled_from(HEADER_VALUES + self.credentials))

    def header_value(self) -> st.SearchStrategy[Parts]:
        values = self.header_values()
        return _concat(
            _optional(self.header_names(), "key", 10),
            st.one_of(
                _optional(values, "value", 9),
                _optional(values, "raw_value", 9),
                _concat(_optional(values, "value", 5), _optional(values, "raw_value", 5)),
            ),
            shuffle=False,
        )

    def headers_entries(self) -> st.SearchStrategy[Parts]:
        entry = _concat(_optional(self.header_names(), "key", 10), _optional(self.header_values(), "value", 9), shuffle=False)
        return st.lists(entry, max_size=6).map(lambda es: [("headers", e) for e in es])

    def http(self) -> st.SearchStrategy[Parts]:
        """An HttpRequest: method, path, host (sometimes a signed set of them), headers in either map."""
        rate = self.rate
        methods, paths, hosts = hostile.methods(rate), hostile.paths(rate), hostile.hosts(rate)
        schemes = [b"https", b"http", b"HTTPS", b"ftp"] if rate else [b"http"]  # clean requests are signed for http
        rest = _concat(
            _optional(self.around(st.sampled_from(schemes)), "scheme", 6),
            _optional(self.around(st.sampled_from([b"HTTP/1.1", b"HTTP/2", b"HTTP/3"])), "protocol", 5),
            _optional(self.around(st.just(b"5e0f6a1c-9d2b-4f7e")), "id", 3),
            _optional(self.junk(), "query", 1),
            _optional(self.junk(), "fragment", 1),
            _optional(st.integers(-(1 << 63), (1 << 63) - 1), "size", 1),
            _optional(self.junk(), "body", 1),
            _optional(self.junk(), "raw_body", 1),
            shuffle=False,
        )
        entries = self.headers_entries()
        extra = st.lists(self.header_value(), max_size=8).map(lambda es: [("headers", e) for e in es])
        many = st.integers(0, 60).map(lambda n: [("headers", [("key", b"x-h%d" % i), ("value", b"v")]) for i in range(n)])
        bulk = st.one_of(*[st.just([])] * 18, many, many.map(lambda e: e * 5)) if rate else st.just([])
        which_map = st.integers(0, 2)

        @st.composite
        def draw_http(draw: st.DrawFn) -> Parts:
            method, path, host, signed = draw(self.lines)
            parts: Parts = []
            for name, value, others, present in (("method", method, methods, 90), ("path", path, paths, 90), ("host", host, hosts, 80)):
                r = draw(hostile.PERCENT)
                if r < present:
                    parts.append((name, value if r % 2 or not rate else draw(others)))
                if r % 10 == 0:
                    parts.append((name, draw(others)))
            parts += draw(rest)
            kind = draw(which_map)
            if kind in (0, 2):
                given = [("headers", [("key", k), ("raw_value", v)]) for k, v in signed]
                header_map = draw(extra) + draw(bulk) + given
                if draw(hostile.PERCENT) < 50:
                    header_map = draw(st.permutations(header_map))
                if header_map:
                    parts.append(("header_map", header_map))
            if kind in (1, 2):
                parts += draw(entries)
            if draw(hostile.PERCENT) < 30:
                parts = draw(st.permutations(parts))
            return parts

        return draw_http()

    def address(self) -> st.SearchStrategy[Parts]:
        socket_address = _concat(
            _optional(self.around(st.sampled_from(hostile.ADDRESSES)), "address", 9),
            _optional(st.integers(0, (1 << 32) - 1) | st.integers(-(1 << 40), 1 << 40), "port_value", 7),
            _optional(st.integers(-3, 3), "protocol", 1),
            _optional(self.junk(), "named_port", 1),
            _optional(self.junk(), "resolver_name", 1),
        )
        pipe = _concat(_optional(self.around(st.just(b"/run/envoy.sock")), "path", 8), _optional(st.integers(0, 0o777), "mode", 3))
        return _concat(_optional(socket_address, "socket_address", 8), _optional(pipe, "pipe", 2))

    def pairs(self, max_size: int) -> st.SearchStrategy[list[Parts]]:
        return st.lists(_concat(_optional(self.junk(), "key", 9), _optional(self.junk(), "value", 9)), max_size=max_size)

    def peer(self) -> st.SearchStrategy[Parts]:
        return _concat(
            _optional(self.address(), "address", 9),
            _optional(self.around(st.just(b"spiffe://cluster.local/ns/a/sa/b")), "principal", 3),
            _optional(self.around(st.just(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")), "certificate", 2),
            _optional(self.junk(), "service", 1),
            self.pairs(2).map(lambda es: [("labels", e) for e in es]),
        )

    def check(self) -> st.SearchStrategy[Parts]:
        timestamp = _concat(
            _optional(st.integers(-(1 << 63), (1 << 63) - 1) | st.integers(0, 2_000_000_000), "seconds", 8),
            _optional(st.integers(-(1 << 31), (1 << 31) - 1), "nanos", 5),
        )
        request = _concat(_optional(timestamp, "time", 5), _optional(self.http(), "http", 9))
        attributes = _concat(
            _optional(self.peer(), "source", 9),
            _optional(self.peer(), "destination", 2),
            _optional(request, "request", 9),
            self.pairs(3).map(lambda es: [("context_extensions", e) for e in es]),
            _optional(_optional(self.around(st.just(b"api.test")), "sni", 9), "tls_session", 2),
        )
        return _optional(attributes, "attributes", 10)


def check_requests(credentials: list[bytes], lines: st.SearchStrategy[creds.Line]) -> st.SearchStrategy[Parts]:
    """Whole CheckRequests: clean ones (to reach every allow), slightly and very hostile ones."""
    return st.one_of(*(Gen(rate, credentials, lines).check() for rate in (0, 0, 2, 8, 30)))
