"""Raw HTTP/1.1 request heads for the HTTP door, and a strict oracle over the bytes.

A head is built from parts (request line, field lines, line ends) that may
each be hostile; the oracle then parses the *bytes* it produced, as RFC 9112
says a server must, so a value holding CR LF is judged as the extra line it
becomes, not as the value it was meant to be.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from tests.fuzz import creds, hostile

MODES = ("envoy", "forward-auth", "nginx")
EXTRA_NAMES = [
    b"User-Agent", b"Accept", b"X-Forwarded-For", b"X-Request-Id", b"Cookie", b"X-Authz-Subject", b"Content-Type",
    b"Signature", b"Signature-Input", b"Authorization", b"X-Envoy-External-Address", b"Upgrade", b"Connection",
    b"Expect", b"Content-Length", b"Transfer-Encoding", b"Host", b"X-Forwarded-Host", b"X-Forwarded-Proto",
    b"X-Original-URI", b"X-Forwarded-Uri", b"X-Forwarded-Method", b"X-Original-Method",
]  # fmt: skip
EXTRA_VALUES = [
    b"curl/8.0", b"*/*", b"a=b", b"keep-alive", b"close", b"websocket", b"100-continue", b"0", b"5", b"1, 1", b"-1",
    b"chunked", b"gzip, chunked", b"chunked, gzip", b"http", b"https", b"HTTPS", b"ws", b"ftp", b"http, https",
    *hostile.XFF, *hostile.HOSTS, *hostile.PATHS, *hostile.METHODS,
]  # fmt: skip
VERSIONS = [b"HTTP/1.1"] * 8 + [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.10", b"http/1.1", b"HTTP/0.9", b"HTTP/1.1 ", b""]
SEPARATORS = [b": "] * 8 + [b":", b":\t", b":  ", b" : ", b"\t: ", b" :"]


@dataclass
class Head:
    mode: str
    method: bytes
    target: bytes
    version: bytes
    lines: list[tuple[bytes, bytes, bytes]]  # name, separator, value
    eol: bytes = b"\r\n"
    space: bytes = b" "

    def encode(self) -> bytes:
        out = [self.method + self.space + self.target + self.space + self.version]
        out += [n + s + v for n, s, v in self.lines]
        return self.eol.join(out) + self.eol + self.eol


def heads(now_s: int, rate: int) -> st.SearchStrategy[Head]:
    """Request heads in each convention, with hostile parts in ``rate`` cases out of 100 per part."""

    def a(good: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
        return hostile.around(good, rate)

    methods, paths, hosts = hostile.methods(rate), hostile.paths(rate), hostile.hosts(rate)
    protos = a(st.sampled_from([b"http", b"https"]))
    # clean heads keep the credentials they were made with, and plain framing
    names = a(st.sampled_from(EXTRA_NAMES)) if rate else st.sampled_from(EXTRA_NAMES[:5])
    values = a(st.sampled_from(EXTRA_VALUES + list(creds.bearer_tokens(now_s))))
    separators = st.sampled_from(SEPARATORS) if rate else st.just(b": ")
    versions = st.sampled_from(VERSIONS) if rate else st.just(b"HTTP/1.1")
    extras = st.lists(st.tuples(names, separators, values), max_size=6 if rate else 3)
    lines = creds.lines(now_s, "http")

    @st.composite
    def draw_head(draw: st.DrawFn) -> Head:
        mode = draw(st.sampled_from(MODES))
        method, path, host, signed = draw(lines)

        def pick(good: bytes, others: st.SearchStrategy[bytes]) -> bytes:
            return good if draw(hostile.PERCENT) < 70 else draw(others)

        def times() -> int:
            r = draw(hostile.PERCENT)
            return 1 if r >= 2 * rate / 3 or not rate else (0 if r % 2 else 2)

        sep = b": "
        fields: list[tuple[bytes, bytes, bytes]] = []

        def add(name: bytes, good: bytes, others: st.SearchStrategy[bytes]) -> None:
            for _ in range(times()):
                fields.append((name, draw(separators) if rate else sep, pick(good, others)))

        prefix = b"/" + mode.encode()
        if mode == "envoy":
            line_method, target = pick(method, methods), prefix + pick(path, paths)
            add(b"Host", host, hosts)
            if draw(hostile.PERCENT) < 30:
                add(b"X-Forwarded-Proto", b"http", protos)
        else:
            line_method = pick(b"GET", methods)
            target = prefix + (b"" if draw(hostile.PERCENT) < 80 else draw(a(st.sampled_from([b"/", b"/x", b"?a=b"]))))
            add(b"Host", b"authz:9190", hosts)
            m, u = (b"X-Forwarded-Method", b"X-Forwarded-Uri") if mode == "forward-auth" else (b"X-Original-Method", b"X-Original-URI")
            add(m, method, methods)
            add(u, path, paths)
            if mode == "forward-auth" or draw(hostile.PERCENT) < 50:
                add(b"X-Forwarded-Host", host, hosts)
                add(b"X-Forwarded-Proto", b"http", protos)
        fields += [(n, sep, v) for n, v in signed]
        fields += draw(extras)
        if draw(hostile.PERCENT) < 50:
            fields = draw(st.permutations(fields))
        head = Head(mode, line_method, target, draw(versions), fields)
        if rate and draw(hostile.PERCENT) < rate // 3:
            head.eol = draw(st.sampled_from([b"\n", b"\r", b"\n\r"]))
        if rate and draw(hostile.PERCENT) < rate // 3:
            head.space = draw(st.sampled_from([b"  ", b"\t", b"\x0b", b""]))
        return head

    return draw_head()


# the oracle


def malformed(data: bytes, mode: str) -> str | None:
    """Why the first request in ``data`` is malformed for an authorization request in ``mode``, or None."""
    head = data.partition(b"\r\n\r\n")[0]
    lines = head.split(b"\r\n")
    if any(b"\r" in line or b"\n" in line for line in lines):
        return "a bare CR or LF"
    # RFC 9112 3: a recipient MAY split the request line on any whitespace
    parts = lines[0].split()
    if len(parts) != 3:
        return "request line is not method SP target SP version"
    method, target, version = parts
    if not hostile.is_token(method):
        return "method is not a token"
    if not hostile.is_target(target):
        return "request target is not origin-form"
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        return "not HTTP/1.x"
    fields: dict[bytes, list[bytes]] = {}
    size = 0
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            return "obsolete line folding"
        name, colon, value = line.partition(b":")
        if not colon or not hostile.is_token(name):
            return f"field line {line[:30]!r} has no token name"
        value = value.strip(b" \t")
        if not hostile.value_ok(value):
            return f"field {name[:30]!r}: control characters or not UTF-8"
        fields.setdefault(name.lower(), []).append(value)
        size += len(name) + len(value)
    if size > hostile.MAX_HEADER_BYTES or len(fields) > hostile.MAX_HEADERS + 20 or len(lines) > hostile.MAX_HEADERS * 4:
        return "head over the limits"
    if hostile.target_too_large(target):
        return "target over the limits"
    # RFC 9112 6.3: framing must be unambiguous
    lengths = fields.get(b"content-length", [])
    codings = fields.get(b"transfer-encoding", [])
    if lengths and codings:
        return "Content-Length with Transfer-Encoding"
    if lengths:
        numbers = {v.strip() for value in lengths for v in value.split(b",")}
        if len(numbers) != 1 or not next(iter(numbers)).isdigit():
            return "bad Content-Length"
    if codings and b",".join(codings).split(b",")[-1].strip().lower() != b"chunked":
        return "Transfer-Encoding does not end with chunked"
    # RFC 9112 3.2: exactly one valid Host
    hosts = fields.get(b"host", [])
    if len(hosts) > 1 or (hosts and not hostile.is_host(hosts[0])):
        return "Host repeated or invalid"
    return _convention(mode, method, target, fields)


def _one(fields: dict[bytes, list[bytes]], name: bytes) -> bytes | None:
    values = fields.get(name, [])
    return values[0] if len(values) == 1 else None


def _convention(mode: str, method: bytes, target: bytes, fields: dict[bytes, list[bytes]]) -> str | None:
    prefix = b"/" + mode.encode()
    path = target.partition(b"?")[0]
    if not path.startswith(prefix) or path[len(prefix) : len(prefix) + 1] not in (b"", b"/"):
        return "no convention prefix"
    proto = fields.get(b"x-forwarded-proto")
    if proto is not None and b",".join(proto).split(b",")[0].strip().lower() not in (b"http", b"https", b"ws", b"wss"):
        return "X-Forwarded-Proto is not http or https"
    if mode == "envoy":
        original = target[len(prefix) :]
        if not hostile.is_target(original if original[:1] == b"/" else b"/" + original):
            return "original target is not a target"
        return None
    names = (b"x-forwarded-method", b"x-forwarded-uri") if mode == "forward-auth" else (b"x-original-method", b"x-original-uri")
    original_method, original_target = _one(fields, names[0]), _one(fields, names[1])
    if original_method is None or not hostile.is_token(original_method):
        return f"{names[0].decode()} missing, repeated or not a token"
    if original_target is None or not hostile.is_target(original_target) or hostile.target_too_large(original_target):
        return f"{names[1].decode()} missing, repeated or not a target"
    if b"x-forwarded-host" in fields:
        forwarded_host = _one(fields, b"x-forwarded-host")
        if forwarded_host is None or not hostile.is_host(forwarded_host):
            return "X-Forwarded-Host repeated or invalid"
    return None
