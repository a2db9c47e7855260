"""Key directories of Web Bot Auth agents (the webbotauth key-directory draft).

An agent publishes its Ed25519 keys at
``https://<agent origin>/.well-known/http-message-signatures-directory``, a
JWKS served as ``application/http-message-signatures-directory+json``. This
module reads such directories from local files (compiled with the policy) and
fetches them over HTTPS:

* one ``GET`` of the well-known URI, **never following a redirect** (only a
  ``200`` with the directory media type counts), bounded in bytes, in keys and
  in wall-clock time (name resolution included);
* for origins the request chose (``trust: any``) the host name is resolved
  once, every address must be a public one (no loopback, private, link-local
  or reserved address: a client must not make authz fetch from the inside),
  and the connection goes to that very address, the TLS certificate checked
  against the name, so a second resolution cannot swap it;
* cached per origin for the response's ``Cache-Control: max-age`` held within
  the operator's bounds; a stale directory is refreshed in the background
  while requests go on using it; a failed fetch keeps the keys known
  (stale-while-error: an outage of the agent is no revocation), a directory
  that does resolve replaces them (a removed key stops verifying);
* an unknown ``keyid`` refetches at most once per ``refetch_interval``, and at
  most ``max_concurrent_fetches`` fetches run at once across all origins.

Each key is indexed by its RFC 7638 thumbprint, computed here (a ``kid``
member that disagrees drops the key), so lookups are by (origin, thumbprint):
a key learnt from one origin never verifies a request claiming another.

The directory response may carry possession proofs: one RFC 9421 response
signature per key, ``tag="http-message-signatures-directory"``, covering
``"@authority";req`` (and ``content-digest``, which is then checked against
the body). ``proofs: verify`` drops a key whose proof is present but does not
verify; ``proofs: require`` drops every key without a valid proof.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import re
import socket
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ed25519

from authz.algorithms import ALGORITHMS
from authz.httpsig import SignatureError
from authz.httpsig.message import normalize_value
from authz.httpsig.sfv import InnerList, Item, parse_dictionary
from authz.stages.authenticate.jwks import jwk_thumbprint, strict_json

log = logging.getLogger("authz.webbotauth")

WELL_KNOWN_PATH = "/.well-known/http-message-signatures-directory"
MEDIA_TYPE = "application/http-message-signatures-directory+json"
PROOF_TAG = "http-message-signatures-directory"
#: the thumbprint of the RFC 9421 B.1.4 example key (``test-key-ed25519``): the draft
#: says verifiers should refuse published test keys; ``insecure_test_keys`` admits it
RFC9421_TEST_KEY_X = "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs"
TEST_KEY_THUMBPRINTS = frozenset({jwk_thumbprint({"kty": "OKP", "crv": "Ed25519", "x": RFC9421_TEST_KEY_X})})
_HOST = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
_MAX_ORIGIN_CHARS = 255
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d{1,10})\"?\s*(?:,|$)", re.IGNORECASE)

PROOF_MODES = ("ignore", "verify", "require")


def parse_origin(text: str) -> str | None:
    """The normalized ``https://host[:port]`` of an agent origin, or None when ``text`` is not one.

    An origin is a scheme, a host and a port, nothing else (RFC 6454 6.2); a
    lone trailing ``/`` is accepted. The host is lower-cased and port 443
    dropped, so one agent has one spelling in identities, quotas and logs.
    """
    if not text or len(text) > _MAX_ORIGIN_CHARS or not text.isascii() or not text.isprintable():
        return None
    if any(c in text for c in "?#@\\ ") or not text.lower().startswith("https://"):
        return None
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    if parts.path not in ("", "/") or parts.username is not None or parts.password is not None:
        return None
    host = parts.hostname
    if not host:
        return None
    if ":" in host:  # an IPv6 literal
        try:
            host = f"[{ipaddress.IPv6Address(host).compressed}]"
        except ValueError:
            return None
    elif not _HOST.match(host):
        return None
    if port == 0:
        return None
    return f"https://{host}" if port in (None, 443) else f"https://{host}:{port}"


@dataclass(frozen=True, slots=True, eq=False)
class AgentKey:
    """One Ed25519 key of an agent's directory, parsed once."""

    thumbprint: str
    material: ed25519.Ed25519PublicKey
    #: the key's own validity (the directory's ``nbf`` / ``exp``, ms), 0 for none
    nbf_ms: int = 0
    exp_ms: int = 0

    def usable(self, now_ms: int) -> bool:
        return (not self.nbf_ms or now_ms >= self.nbf_ms) and (not self.exp_ms or now_ms < self.exp_ms)


class DirectoryError(ValueError):
    """A directory (or one of its keys) that cannot be used; the message says why."""


def b64url(text: Any) -> bytes:
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise DirectoryError("not base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise DirectoryError("not base64url") from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != text:
        raise DirectoryError("non-canonical base64url")
    return raw


def parse_key(jwk: Any, *, accept_test_keys: bool) -> AgentKey | None:
    """One directory entry as an ``AgentKey``; None for an entry that is not an Ed25519 signing key.

    :raises DirectoryError: the entry is an Ed25519 key but unusable (private,
        malformed, a ``kid`` that is not its thumbprint, a test key)
    """
    if not isinstance(jwk, dict):
        raise DirectoryError("a key is a JSON object")
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        return None  # another kind of key (RSA, EC, Ed448): not one this verifier uses
    if "d" in jwk:
        raise DirectoryError("holds private key material")
    use, ops, alg = jwk.get("use"), jwk.get("key_ops"), jwk.get("alg")
    if use is not None and use != "sig":
        return None
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return None
    if alg is not None and alg not in ("ed25519", "EdDSA", "Ed25519"):
        raise DirectoryError(f"alg {alg!r} does not fit an Ed25519 key")
    raw = b64url(jwk.get("x"))
    if len(raw) != 32:
        raise DirectoryError("x is not a 32-byte Ed25519 public key")
    thumb = jwk_thumbprint({"kty": "OKP", "crv": "Ed25519", "x": jwk["x"]})
    kid = jwk.get("kid")
    if kid is not None and kid != thumb:
        raise DirectoryError(f"kid {str(kid)[:64]!r} is not the key's JWK thumbprint {thumb}")
    if thumb in TEST_KEY_THUMBPRINTS and not accept_test_keys:
        raise DirectoryError("is the RFC 9421 example key (test-key-ed25519), which is public; set insecure_test_keys: true to accept it in tests")
    bounds = []
    for member in ("nbf", "exp"):
        value = jwk.get(member)
        if value is None:
            bounds.append(0)
        elif isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**40:
            raise DirectoryError(f"{member} is not a NumericDate")
        else:
            bounds.append(value * 1000)
    try:
        material = ed25519.Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise DirectoryError("x is not an Ed25519 public key") from None
    return AgentKey(thumb, material, bounds[0], bounds[1])


def parse_directory(doc: Any, *, max_keys: int, accept_test_keys: bool, strict: bool) -> tuple[dict[str, AgentKey], list[str]]:
    """The usable keys of a directory document by thumbprint, and the problems found.

    :param strict: raise on the first bad key (a local file); otherwise skip it and report it
    :raises DirectoryError: the document is not a directory, or has too many keys
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise DirectoryError('a directory is a JSON object with a "keys" list')
    entries = doc["keys"]
    if len(entries) > max_keys:
        raise DirectoryError(f"{len(entries)} keys (at most {max_keys})")
    keys: dict[str, AgentKey] = {}
    problems: list[str] = []
    for i, jwk in enumerate(entries):
        try:
            key = parse_key(jwk, accept_test_keys=accept_test_keys)
            if key is not None and key.thumbprint in keys:
                raise DirectoryError("listed twice")
        except DirectoryError as exc:
            if strict:
                raise DirectoryError(f"keys[{i}]: {exc}") from None
            problems.append(f"keys[{i}]: {exc}")
            continue
        if key is not None:
            keys[key.thumbprint] = key
    return keys, problems


def cache_seconds(cache_control: str | None, *, default_s: float, min_s: float, max_s: float) -> float:
    """How long to keep a directory: its ``max-age`` (``no-store`` / ``no-cache``: as short as allowed), within bounds."""
    ttl = default_s
    if cache_control:
        lowered = cache_control.lower()
        match = _MAX_AGE.search(lowered)
        if "no-store" in lowered or "no-cache" in lowered:
            ttl = min_s
        elif match is not None:
            ttl = float(int(match.group(1)))
    return max(min_s, min(max_s, ttl))


# -- possession proofs on the directory response ---------------------------------------


def verify_proofs(
    headers: Mapping[str, str], body: bytes, authority: str, keys: Mapping[str, AgentKey], now_s: float, skew_s: float
) -> tuple[set[str], set[str]]:
    """The thumbprints with a valid possession proof in the response, and those with an invalid one.

    A proof is an RFC 9421 signature of the response by the key itself
    (``keyid`` its thumbprint), ``tag="http-message-signatures-directory"``,
    ``created`` not in the future and ``expires`` not past, covering
    ``"@authority";req`` (the directory's authority as requested) and
    optionally ``content-digest``, which must then match the body.
    """
    valid: set[str] = set()
    invalid: set[str] = set()
    sig_input, sig_value = headers.get("signature-input"), headers.get("signature")
    if not sig_input or not sig_value:
        return valid, invalid
    try:
        inputs = parse_dictionary(sig_input, "Signature-Input")
        sigs = parse_dictionary(sig_value, "Signature")
    except SignatureError:
        return valid, invalid
    for label, member in list(inputs.items())[:64]:
        if not isinstance(member, InnerList) or member.params.get("tag") != PROOF_TAG:
            continue
        keyid = member.params.get("keyid")
        key = keys.get(keyid) if isinstance(keyid, str) else None
        if key is None:
            continue
        sig = sigs.get(label)
        ok = isinstance(sig, Item) and isinstance(sig.value, bytes) and _proof_ok(member, sig.value, headers, body, authority, key, now_s, skew_s)
        (valid if ok else invalid).add(key.thumbprint)
    return valid, invalid - valid


def _proof_ok(
    member: InnerList, signature: bytes, headers: Mapping[str, str], body: bytes, authority: str, key: AgentKey, now_s: float, skew_s: float
) -> bool:
    params = member.params
    created, expires, alg = params.get("created"), params.get("expires"), params.get("alg")
    if type(created) is not int or type(expires) is not int or expires < created:
        return False
    if created > now_s + skew_s or expires < now_s - skew_s:
        return False
    if alg is not None and alg != "ed25519":
        return False
    lines: list[str] = []
    covered: set[str] = set()
    for item in member:
        if not isinstance(item, Item) or not isinstance(item.value, str):
            return False
        name, item_params = item.value, dict(item.params)
        if name == "@authority" and item_params == {"req": True}:
            value = authority
        elif name == "content-digest" and not item_params:
            digest = headers.get("content-digest")
            if digest is None or not _digest_matches(digest, body):
                return False
            value = normalize_value(digest)
        else:
            return False  # nothing else is needed to prove possession; refuse what is not checked
        if name in covered:
            return False
        covered.add(name)
        lines.append(f"{item}: {value}")
    if "@authority" not in covered:
        return False
    lines.append(f'"@signature-params": {member}')
    try:
        base = "\n".join(lines).encode("ascii")
    except UnicodeEncodeError:
        return False
    return ALGORITHMS["ed25519"].verify(key.material, base, signature)


def _digest_matches(value: str, body: bytes) -> bool:
    try:
        d = parse_dictionary(normalize_value(value), "Content-Digest")
    except SignatureError:
        return False
    checked = False
    for alg, member in d.items():
        if alg not in ("sha-256", "sha-512"):
            continue
        if not isinstance(member, Item) or not isinstance(member.value, bytes):
            return False
        if not hmac.compare_digest(hashlib.new(alg.replace("-", ""), body).digest(), member.value):
            return False
        checked = True
    return checked


# -- fetching -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FetchOptions:
    ssl_context: ssl.SSLContext | None = None
    default_ttl_s: float = 3600.0
    min_ttl_s: float = 60.0
    max_ttl_s: float = 86400.0
    #: the least time between two fetches of one origin after a failure or for unknown keyids
    refetch_interval_s: float = 30.0
    #: the wall-clock bound of one fetch (resolution, connection, TLS, body), and of a request's wait for it
    timeout_s: float = 3.0
    max_bytes: int = 64 * 1024
    max_keys: int = 32
    accept_test_keys: bool = False
    proofs: str = "ignore"
    #: refuse to fetch from loopback, private, link-local and other non-public addresses
    public_only: bool = True
    #: tolerance on a possession proof's created / expires
    skew_s: float = 5.0


class FetchGate:
    """At most ``limit`` directory fetches at once across every origin of one configuration."""

    __slots__ = ("limit", "running")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0

    def acquire(self) -> bool:
        if self.running >= self.limit:
            return False
        self.running += 1
        return True

    def release(self) -> None:
        self.running -= 1


class Directory:
    """The keys of one agent origin. A local file's directory never changes."""

    def __init__(self, origin: str, keys: dict[str, AgentKey] | None = None) -> None:
        self.origin = origin
        self.keys: dict[str, AgentKey] = keys or {}

    @property
    def loaded(self) -> bool:
        return True

    async def find(self, thumbprint: str) -> AgentKey | None:
        """The key with this thumbprint, fetching when needed (bounded); None when unknown."""
        return self.keys.get(thumbprint)


class RemoteDirectory(Directory):
    """An agent's well-known directory, fetched and cached. Requests never wait longer than one fetch's timeout."""

    def __init__(self, origin: str, options: FetchOptions, gate: FetchGate, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__(origin)
        self.options = options
        self._gate = gate
        self._monotonic = monotonic
        self._fetched_at: float | None = None
        self._ttl_s = options.default_ttl_s
        self._attempted_at: float | None = None
        self._task: asyncio.Task[bool] | None = None
        self.fetches = 0
        self.failures = 0
        self.last_error = ""

    @property
    def loaded(self) -> bool:
        return self._fetched_at is not None

    @property
    def url(self) -> str:
        return self.origin + WELL_KNOWN_PATH

    async def find(self, thumbprint: str) -> AgentKey | None:
        now = self._monotonic()
        stale = self._fetched_at is None or now - self._fetched_at >= self._ttl_s
        if stale and self._may_retry(now):
            self._start_fetch()
        if not self.loaded or thumbprint not in self.keys:
            # cold, or an unknown keyid: wait for a fetch (running, or one the rate limit allows)
            if self._task is None and self.loaded and self._may_retry(now):
                self._start_fetch()
            if self._task is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(self._task), self.options.timeout_s)
                except TimeoutError:
                    pass
        return self.keys.get(thumbprint)

    def _may_retry(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self.options.refetch_interval_s

    def _start_fetch(self) -> None:
        if self._task is not None or not self._gate.acquire():
            return
        self._attempted_at = self._monotonic()
        self.fetches += 1
        self._task = asyncio.get_running_loop().create_task(self._fetch())

    async def _fetch(self) -> bool:
        try:
            body, headers = await asyncio.wait_for(self._get(), self.options.timeout_s)
            doc = strict_json(body)
            opts = self.options
            keys, problems = parse_directory(doc, max_keys=opts.max_keys, accept_test_keys=opts.accept_test_keys, strict=False)
            if opts.proofs != "ignore":
                valid, invalid = verify_proofs(headers, body, self.origin[len("https://") :], keys, time.time(), opts.skew_s)
                dropped = {t for t in keys if t in invalid or (opts.proofs == "require" and t not in valid)}
                if dropped:
                    problems.append(f"{len(dropped)} keys without a valid possession proof")
                keys = {t: k for t, k in keys.items() if t not in dropped}
        except Exception as exc:  # resolution, address, TLS, status, media type, size, JSON: keep the known keys
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("agent directory %s: fetch failed (%s); keeping %d known keys", self.url, self.last_error, len(self.keys))
            return False
        finally:
            self._task = None
            self._gate.release()
        if problems:
            log.warning("agent directory %s: skipped: %s", self.url, "; ".join(problems[:5]))
        self.keys = keys
        self._ttl_s = cache_seconds(
            headers.get("cache-control"), default_s=opts.default_ttl_s, min_s=opts.min_ttl_s, max_s=opts.max_ttl_s
        )
        self._fetched_at = self._monotonic()
        return True

    async def _get(self) -> tuple[bytes, dict[str, str]]:
        import httpx

        parts = urlsplit(self.origin)
        host = (parts.hostname or "").strip("[]")
        port = parts.port or 443
        addresses = await _addresses(host, port, public_only=self.options.public_only)
        last: Exception | None = None
        for address in addresses[:3]:  # the checked addresses, in resolver order, until one connects
            try:
                return await self._get_from(address, host, port)
            except httpx.ConnectError as exc:
                last = exc
        raise DirectoryError(f"cannot connect to {host}: {last}")

    async def _get_from(self, address: str, host: str, port: int) -> tuple[bytes, dict[str, str]]:
        """GET the directory from ``address``, the certificate checked against ``host`` (no second resolution)."""
        import httpx

        opts = self.options
        ip_host = f"[{address}]" if ":" in address else address
        verify: ssl.SSLContext | bool = opts.ssl_context if opts.ssl_context is not None else True
        authority = self.origin[len("https://") :]
        async with httpx.AsyncClient(verify=verify, trust_env=False, follow_redirects=False, timeout=opts.timeout_s) as client:
            request = client.build_request(
                "GET",
                f"https://{ip_host}:{port}{WELL_KNOWN_PATH}",
                headers={"host": authority, "accept": MEDIA_TYPE},
                extensions={"sni_hostname": host},
            )
            resp = await client.send(request, stream=True)
            try:
                if resp.status_code != 200:
                    raise DirectoryError(f"HTTP {resp.status_code} (only 200 counts; redirects are not followed)")
                media = resp.headers.get("content-type", "").split(";")[0].strip().lower()
                if media != MEDIA_TYPE:
                    raise DirectoryError(f"content-type {media!r}, not {MEDIA_TYPE}")
                declared = resp.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > opts.max_bytes:
                    raise DirectoryError(f"response larger than {opts.max_bytes} bytes")
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > opts.max_bytes:
                        raise DirectoryError(f"response larger than {opts.max_bytes} bytes")
            finally:
                await resp.aclose()
        return bytes(body), {k.lower(): v for k, v in resp.headers.items()}


async def _addresses(host: str, port: int, *, public_only: bool) -> list[str]:
    """The addresses a directory may be fetched from; every address of the name must be public when asked."""
    literal = host
    try:
        addresses = [str(ipaddress.ip_address(literal))]
    except ValueError:
        infos = await asyncio.get_running_loop().getaddrinfo(literal, port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise DirectoryError(f"{host} has no address")
    if public_only:
        for text in addresses:
            addr = ipaddress.ip_address(text.split("%")[0])
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            if not addr.is_global or addr.is_multicast:
                raise DirectoryError(f"{host} resolves to {addr}, which is not a public address")
    return addresses


class Directories:
    """The directories of one configuration: local files, fetched allow-listed origins, and (``trust: any``) a bounded LRU of others."""

    def __init__(
        self,
        static: dict[str, Directory],
        options: FetchOptions,
        *,
        fetch: bool,
        max_agents: int,
        max_concurrent: int,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.static = static
        self.options = options
        self.fetch = fetch
        self.max_agents = max_agents
        self.gate = FetchGate(max_concurrent)
        self._monotonic = monotonic
        self._remote: OrderedDict[str, RemoteDirectory] = OrderedDict()

    def get(self, origin: str, *, public_only: bool) -> Directory | None:
        """The directory of a trusted origin (created on first use), or None when none can be had."""
        found = self.static.get(origin)
        if found is not None:
            return found
        if not self.fetch:
            return None
        remote = self._remote.get(origin)
        if remote is None:
            options = self.options if self.options.public_only == public_only else _with_public_only(self.options, public_only)
            remote = RemoteDirectory(origin, options, self.gate, monotonic=self._monotonic)
            self._remote[origin] = remote
            if len(self._remote) > self.max_agents:
                self._remote.popitem(last=False)
        else:
            self._remote.move_to_end(origin)
        return remote

    def remote(self, origin: str) -> RemoteDirectory | None:
        """The fetched directory of an origin, if any (tests, metrics)."""
        return self._remote.get(origin)


def _with_public_only(options: FetchOptions, public_only: bool) -> FetchOptions:
    from dataclasses import replace

    return replace(options, public_only=public_only)
