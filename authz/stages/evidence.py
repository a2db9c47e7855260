"""Stage 2, identify (evidence): what a request shows about its sender, for the reputation stage.

Evidence is a list of ``(signal, strength)`` pairs, strength 0..1, in
``Ctx.evidence``; each comes with a readable signal in ``Ctx.signals`` (the
name of what matched, never the client's text). Evidence never refuses a
request by itself: the reputation stage weighs it into the senders' scores.
docs/signals.md describes every signal, its default strength and its false
positives.

Where ids are (``identify`` section)::

    identify:
      fingerprint: {header: x-ja4-fingerprint}   # JA4, set by the proxy (docs/envoy.md)
      session: {cookie: session}                 # or {header: x-session-id}
      device: {header: x-device-id}

What to gather (``evidence`` section; a family absent is not gathered)::

    evidence:
      probes: {injection: 1.0, traversal: 1.0, scanner_path: 0.8, max_query_bytes: 1024}
      user_agent: {automation: 0.3, scanner: 1.0}
      missing_headers: {strength: 0.3}
      fingerprint_mismatch: {strength: 1.0, browser: [], library: []}

Address lists (``ip_lists: {tor: {file: ..., signal: tor, strength: 0.6}}``)
and the hosting AS numbers (``geo.hosting_asns``) add evidence whenever they
are configured.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

from authz.config.cidr import CidrSet
from authz.config.geoip import AsnList
from authz.config.source import Node
from authz.stages.probes import (
    BROWSER,
    CIPHER_FAMILIES,
    LIBRARY,
    ORDINARY_HEADERS,
    missing_headers,
    probes,
    tls_family,
    user_agent,
    valid_ja4,
)

if TYPE_CHECKING:
    from authz.stages.context import Ctx

_TOKEN = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]{1,64}$")
_COOKIE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")
_SIGNAL = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_PLAIN_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
#: ids longer than this, or holding other characters, are kept as a digest
MAX_ID_CHARS = 64

DEFAULT_PROBES = {"injection": 1.0, "traversal": 1.0, "scanner_path": 0.8}
DEFAULT_MAX_QUERY_BYTES = 1024
DEFAULT_AUTOMATION = 0.3
DEFAULT_SCANNER = 1.0
DEFAULT_MISSING_HEADERS = 0.3
DEFAULT_MISMATCH = 1.0
DEFAULT_LIST_STRENGTH = 0.5


def digest(value: str) -> str:
    """A stable, short stand-in for an id: ``sha256:`` and 128 bits of its hash."""
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def bounded_id(value: str) -> str:
    """An id as sent when short and plain, else its digest."""
    value = value.strip()
    if not value:
        return ""
    return value if _PLAIN_ID.match(value) else digest(value)


def cookie_value(header: str, name: str) -> str:
    """The value of cookie ``name`` in a Cookie header ("" when absent); the first one wins."""
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"')
    return ""


@dataclass(frozen=True, slots=True)
class ClientIds:
    """Where the session id, the device id and the TLS fingerprint of a request are.

    The session id is always kept as a digest: a session cookie is a bearer
    credential, and identities reach decisions, logs and store keys. A
    device id is kept as sent when it is short and plain (letters, digits,
    ``._:-``, at most 64), else as a digest. A fingerprint that is not a JA4
    string is ignored (signal ``tls.fingerprint=invalid``).
    """

    fingerprint_header: str = ""
    session_cookie: str = ""
    session_header: str = ""
    device_header: str = ""

    def __bool__(self) -> bool:
        return bool(self.fingerprint_header or self.session_cookie or self.session_header or self.device_header)

    def identify(self, ctx: Ctx) -> None:
        headers = ctx.req.headers
        ident = ctx.identity
        if self.fingerprint_header:
            fp = headers.get(self.fingerprint_header, "").strip()
            if fp:
                if valid_ja4(fp):
                    ident.fingerprint = fp
                else:
                    ctx.signals.append(("tls.fingerprint", "invalid"))
        if self.session_cookie:
            value = cookie_value(headers.get("cookie", ""), self.session_cookie)
            if value:
                ident.session = digest(value)
        elif self.session_header:
            value = headers.get(self.session_header, "").strip()
            if value:
                ident.session = digest(value)
        if self.device_header:
            ident.device = bounded_id(headers.get(self.device_header, ""))


@dataclass(frozen=True, slots=True)
class ListSignal:
    """An address list used as evidence: a match adds (``list.<signal>``, strength)."""

    addresses: CidrSet
    signal: str
    strength: float


@dataclass(frozen=True, slots=True)
class Evidence:
    """The evidence the policy gathers, compiled. Falsy when it gathers nothing."""

    lists: tuple[ListSignal, ...] = ()
    hosting: AsnList | None = None
    hosting_strength: float = 1.0
    #: probe family -> strength; empty: probes are not looked for
    probes: dict[str, float] = field(default_factory=dict)
    max_query_bytes: int = DEFAULT_MAX_QUERY_BYTES
    automation: float = 0.0
    scanner: float = 0.0
    missing_headers: float = 0.0
    mismatch: float = 0.0
    #: (JA4 prefix, family, name), longest first, from the policy
    fingerprint_prefixes: tuple[tuple[str, str, str], ...] = ()
    #: JA4 cipher hash -> (family, name): the built-in table and the policy's additions
    fingerprint_ciphers: dict[str, tuple[str, str]] = field(default_factory=lambda: dict(CIPHER_FAMILIES))
    #: ``tls_family`` over the two tables above, cached per fingerprint (set in __post_init__)
    family_of: Callable[[str], tuple[str, str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        prefixes, ciphers = self.fingerprint_prefixes, self.fingerprint_ciphers

        def family_of(ja4: str) -> tuple[str, str]:
            return tls_family(ja4, prefixes, ciphers)

        object.__setattr__(self, "family_of", lru_cache(maxsize=4096)(family_of))

    def __bool__(self) -> bool:
        return bool(
            self.lists or self.hosting is not None or self.probes or self.automation or self.scanner
            or self.missing_headers or self.mismatch
        )  # fmt: skip

    def gather(self, ctx: Ctx) -> None:
        ident = ctx.identity
        req = ctx.req
        evidence = ctx.evidence
        signals = ctx.signals
        for ls in self.lists:
            label = ls.addresses.match(ident.client_ip)
            if label is not None:
                evidence.append((ls.signal, ls.strength))
                signals.append((ls.signal, label))
        if self.hosting is not None and ident.asn:
            label = self.hosting.match(ident.asn)
            if label is not None:
                evidence.append(("network.hosting", self.hosting_strength))
                signals.append(("network.hosting", f"AS{ident.asn} {label}"))
        ua_text = req.headers.get("user-agent", "")
        if self.probes:
            for family, name in probes(req.path, req.query, req.route_path, ua_text, self.max_query_bytes):
                strength = self.probes.get(family, 0.0)
                if strength:
                    evidence.append((f"probe.{family}", strength))
                    signals.append((f"probe.{family}", name))
        ua = user_agent(ua_text) if ua_text and (self.scanner or self.automation or (self.mismatch and ident.fingerprint)) else None
        if ua is not None and ua.scanner and self.scanner:
            evidence.append(("ua.scanner", self.scanner))
            signals.append(("ua.scanner", ua.scanner))
        elif ua is not None and ua.automation and self.automation:
            evidence.append(("ua.automation", self.automation))
            signals.append(("ua.automation", ua.automation))
        if self.missing_headers:
            missing = missing_headers(req.headers)
            if missing:
                evidence.append(("headers.missing", round(self.missing_headers * len(missing) / len(ORDINARY_HEADERS), 4)))
                signals.append(("headers.missing", ",".join(missing)))
        if self.mismatch and ident.fingerprint and ua is not None and ua.browser:
            family, name = self.family_of(ident.fingerprint)
            if family == LIBRARY:
                evidence.append(("ua.fingerprint_mismatch", self.mismatch))
                signals.append(("ua.fingerprint_mismatch", f"browser user agent, {name} TLS"))


# -- compiling the policy's sections -------------------------------------------------------------


def _header_name(node: Node) -> str:
    name = node.str().lower()
    if not _TOKEN.match(name):
        node.error(f"not a header name: {node.value!r}")
    return name


def compile_identify(node: Node) -> ClientIds:
    """The ``identify`` section: where the fingerprint, the session and the device ids are."""
    if node.value is None:
        return ClientIds()
    node.keys(allowed={"fingerprint", "session", "device"})
    fingerprint = session_cookie = session_header = device = ""
    if node.has("fingerprint"):
        fnode = node.get("fingerprint")
        fnode.keys(allowed={"header"}, required={"header"})
        fingerprint = _header_name(fnode.get("header"))
    if node.has("session"):
        snode = node.get("session")
        snode.keys(allowed={"cookie", "header"})
        if snode.has("cookie") == snode.has("header"):
            snode.error("give exactly one of cookie, header")
        if snode.has("cookie"):
            cnode = snode.get("cookie")
            session_cookie = cnode.str()
            if not _COOKIE.match(session_cookie):
                cnode.error(f"not a cookie name: {session_cookie!r}")
        else:
            session_header = _header_name(snode.get("header"))
    if node.has("device"):
        dnode = node.get("device")
        dnode.keys(allowed={"header"}, required={"header"})
        device = _header_name(dnode.get("header"))
    return ClientIds(fingerprint, session_cookie, session_header, device)


def list_signal(node: Node, addresses: CidrSet) -> ListSignal | None:
    """An address list's ``signal`` and ``strength`` keys, if it has them."""
    if not node.has("signal"):
        if node.has("strength"):
            node.get("strength").error("strength applies to a list used as evidence: give 'signal' too")
        return None
    snode = node.get("signal")
    name = snode.str()
    if not _SIGNAL.match(name):
        snode.error(f"not a signal name: {name!r} (lower-case letters, digits, '_', '-'; at most 32)")
    strength = node.get("strength", DEFAULT_LIST_STRENGTH).number(min=0.0, max=1.0)
    if strength == 0:
        node.get("strength").error("must be more than 0 (remove 'signal' to stop using the list as evidence)")
    return ListSignal(addresses, f"list.{name}", strength)


def _strength(node: Node, key: str, default: float) -> float:
    return node.get(key, default).number(min=0.0, max=1.0)


def compile_evidence(
    node: Node,
    *,
    lists: tuple[ListSignal, ...] = (),
    hosting: AsnList | None = None,
    hosting_strength: float = 1.0,
    ids: ClientIds = ClientIds(),
) -> Evidence:
    """The ``evidence`` section, with the evidence other sections configured (lists, hosting)."""
    if node.value is None:
        return Evidence(lists=lists, hosting=hosting, hosting_strength=hosting_strength)
    node.keys(allowed={"probes", "user_agent", "missing_headers", "fingerprint_mismatch"})
    probe_strengths: dict[str, float] = {}
    max_query = DEFAULT_MAX_QUERY_BYTES
    if node.has("probes"):
        pnode = node.get("probes")
        pnode.keys(allowed={*DEFAULT_PROBES, "max_query_bytes"})
        probe_strengths = {family: _strength(pnode, family, default) for family, default in DEFAULT_PROBES.items()}
        max_query = pnode.get("max_query_bytes", DEFAULT_MAX_QUERY_BYTES).int(min=0, max=1 << 16)
    automation = scanner = 0.0
    if node.has("user_agent"):
        unode = node.get("user_agent")
        unode.keys(allowed={"automation", "scanner"})
        automation = _strength(unode, "automation", DEFAULT_AUTOMATION)
        scanner = _strength(unode, "scanner", DEFAULT_SCANNER)
    missing = 0.0
    if node.has("missing_headers"):
        mnode = node.get("missing_headers")
        mnode.keys(allowed={"strength"})
        missing = _strength(mnode, "strength", DEFAULT_MISSING_HEADERS)
    mismatch = 0.0
    prefixes: list[tuple[str, str, str]] = []
    ciphers = dict(CIPHER_FAMILIES)
    if node.has("fingerprint_mismatch"):
        fnode = node.get("fingerprint_mismatch")
        fnode.keys(allowed={"strength", BROWSER, LIBRARY})
        if not ids.fingerprint_header:
            fnode.error("fingerprint_mismatch needs identify.fingerprint.header (where the proxy puts the JA4 fingerprint)")
        mismatch = _strength(fnode, "strength", DEFAULT_MISMATCH)
        for family in (BROWSER, LIBRARY):
            for item in fnode.get(family, []).items():
                text = item.str()
                if re.fullmatch(r"[0-9a-f]{12}", text):
                    ciphers[text] = (family, f"policy:{text}")
                elif _ja4_prefix(text):
                    prefixes.append((text, family, f"policy:{text}"))
                else:
                    item.error(
                        f"not a JA4 cipher hash (12 hex digits) or a JA4 prefix (t13d1516h2, t13d1516h2_8daaf6152771...): {text!r}"
                    )
        prefixes.sort(key=lambda p: -len(p[0]))
    return Evidence(
        lists=lists,
        hosting=hosting,
        hosting_strength=hosting_strength,
        probes=probe_strengths,
        max_query_bytes=max_query,
        automation=automation,
        scanner=scanner,
        missing_headers=missing,
        mismatch=mismatch,
        fingerprint_prefixes=tuple(prefixes),
        fingerprint_ciphers=ciphers,
    )


_JA4_PREFIX = re.compile(r"^[tqd][0-9s][0-9a-z][di][0-9]{4}[0-9a-z]{2}(?:_[0-9a-f]{1,12}(?:_[0-9a-f]{0,12})?)?$")


def _ja4_prefix(text: str) -> bool:
    """A JA4 fingerprint, or its beginning from at least the whole section a."""
    return _JA4_PREFIX.match(text) is not None
