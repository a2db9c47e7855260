"""Remote JWKS from a real HTTPS server on loopback, with a certificate made in the test.

Rotation without restart, unknown-kid refetch, the IdP down with cached keys,
and a flood of random kids that does not multiply fetches.
"""

from __future__ import annotations

import asyncio
import datetime
import http.server
import ipaddress
import json
import ssl
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from authz.errors import ConfigError
from authz.stages.authenticate.jwt import JwtAuthenticator
from tests.support.jwt_tokens import AUD, ISS, KEYS, ctx, mint, provider, request

ALL_KEYS = {k["kid"]: k for k in json.loads((KEYS / "jwks.json").read_text())["keys"]}


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the CA bundle is the certificate itself)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jwks test idp")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "idp.crt", directory / "idp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class Idp(http.server.ThreadingHTTPServer):
    """An identity provider's JWKS endpoint: serves ``kids``, counts fetches, can fail."""

    daemon_threads = True

    def __init__(self, cert: Path, key: Path) -> None:
        super().__init__(("127.0.0.1", 0), _JwksHandler)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert, key)
        self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.kids: list[str] = []
        self.fetches = 0
        self.failing = False
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}/jwks.json"


class _JwksHandler(http.server.BaseHTTPRequestHandler):
    server: Idp

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.fetches += 1
            failing, kids = self.server.failing, list(self.server.kids)
        if failing:
            self.send_response(503)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        body = json.dumps({"keys": [ALL_KEYS[k] for k in kids]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    return make_cert(tmp_path)


@pytest.fixture
def idp(tls_files: tuple[Path, Path]) -> Iterator[Idp]:
    server = Idp(*tls_files)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def remote_provider(tmp_path: Path, idp: Idp, ca: Path, *, ttl: str = "10m", refetch: str = "0s") -> JwtAuthenticator:
    return provider(
        tmp_path,
        f"""
        issuer: {ISS}
        audiences: [{AUD}]
        algorithms: [RS256, ES256]
        keys:
          remote: {{url: "{idp.url}", ca_file: {ca}, cache_ttl: {ttl}, refetch_interval: {refetch}, timeout: 3s}}
        """,
    )


async def ok(auth: JwtAuthenticator, token: str) -> bool:
    result = await auth.authenticate(request(token), ctx())
    return result.ok


async def settle(auth: JwtAuthenticator, fetches: int) -> None:
    """Wait (bounded) until the provider started ``fetches`` fetches and none is running."""
    remote = auth.p.remote
    assert remote is not None
    for _ in range(200):
        if remote.fetches >= fetches and remote._task is None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"fetches={remote.fetches}, wanted {fetches}")


async def test_cold_start_fetches_once_and_then_serves_from_memory(tmp_path: Path, idp: Idp, tls_files: tuple[Path, Path]) -> None:
    idp.kids = ["rsa-2", "ec-1"]
    auth = remote_provider(tmp_path, idp, tls_files[0])
    assert await ok(auth, mint("RS256", kid="rsa-2", sub="a"))
    assert await ok(auth, mint("ES256", sub="b"))
    assert await ok(auth, mint("ES256", sub="c"))
    assert idp.fetches == 1


async def test_rotation_without_restart(tmp_path: Path, idp: Idp, tls_files: tuple[Path, Path]) -> None:
    idp.kids = ["rsa-2"]
    auth = remote_provider(tmp_path, idp, tls_files[0], ttl="300ms", refetch="0s")
    old = mint("RS256", kid="rsa-2")
    assert await ok(auth, old)
    # the IdP publishes a new key and withdraws the old one
    idp.kids = ["ec-1"]
    new = mint("ES256")
    assert await ok(auth, new)  # unknown kid: immediate refetch
    assert idp.fetches == 2
    # the old token was cached, but its key is gone: refused, not served from the cache
    result = await auth.authenticate(request(old), ctx())
    assert (result.ok, result.reason) == (False, "jwt.unknown_kid")
    # a stale set is refreshed in the background while requests use the known keys
    idp.kids = ["ec-1", "rsa-2"]
    await asyncio.sleep(0.35)
    fetches = auth.p.remote.fetches  # type: ignore[union-attr]
    assert await ok(auth, new)  # served at once, triggers the refresh
    await settle(auth, fetches + 1)
    assert await ok(auth, mint("RS256", kid="rsa-2", sub="back"))


async def test_idp_down_keeps_the_known_keys(tmp_path: Path, idp: Idp, tls_files: tuple[Path, Path]) -> None:
    idp.kids = ["ec-1"]
    auth = remote_provider(tmp_path, idp, tls_files[0], ttl="100ms", refetch="100ms")
    assert await ok(auth, mint("ES256", sub="before"))
    idp.failing = True
    await asyncio.sleep(0.15)
    assert await ok(auth, mint("ES256", sub="during-1"))  # stale, refresh starts and fails
    await settle(auth, 2)
    assert auth.p.remote.failures == 1  # type: ignore[union-attr]
    assert "503" in auth.p.remote.last_error  # type: ignore[union-attr]
    assert await ok(auth, mint("ES256", sub="during-2"))
    # the IdP comes back: the next refresh succeeds
    idp.failing = False
    await asyncio.sleep(0.15)
    before = idp.fetches
    assert await ok(auth, mint("ES256", sub="after"))
    await settle(auth, 3)
    assert idp.fetches == before + 1


async def test_a_flood_of_random_kids_costs_the_idp_at_most_one_fetch(tmp_path: Path, idp: Idp, tls_files: tuple[Path, Path]) -> None:
    idp.kids = ["ec-1"]
    auth = remote_provider(tmp_path, idp, tls_files[0], refetch="30s")
    assert await ok(auth, mint("ES256"))
    assert idp.fetches == 1
    tokens = [mint("ES256", kid=f"random-{uuid.uuid4()}") for _ in range(300)]
    results = await asyncio.gather(*(auth.authenticate(request(t), ctx()) for t in tokens))
    assert {r.reason for r in results} == {"jwt.unknown_kid"}
    assert idp.fetches <= 2
    # and a second wave inside the refetch interval costs nothing
    more = await asyncio.gather(*(auth.authenticate(request(t), ctx()) for t in tokens[:100]))
    assert {r.reason for r in more} == {"jwt.unknown_kid"}
    assert idp.fetches <= 2


async def test_a_server_certificate_the_ca_bundle_does_not_vouch_for_gives_no_keys(tmp_path: Path, idp: Idp) -> None:
    (tmp_path / "other").mkdir()
    other_ca, _ = make_cert(tmp_path / "other")
    idp.kids = ["ec-1"]
    auth = remote_provider(tmp_path, idp, other_ca)
    result = await auth.authenticate(request(mint("ES256")), ctx())
    assert (result.ok, result.reason) == (False, "jwt.keys_unavailable")
    assert "CERTIFICATE_VERIFY_FAILED" in auth.p.remote.last_error  # type: ignore[union-attr]
    assert idp.fetches == 0  # the TLS handshake failed before any request


def test_plain_http_jwks_url_is_refused_unless_allowed(tmp_path: Path) -> None:
    body = "algorithms: [ES256]\nkeys: {remote: {url: 'http://127.0.0.1:9/jwks.json'}}\n"
    with pytest.raises(ConfigError, match=r"policy.yaml:\d+: jwt_providers.p.keys.remote.url: a JWKS URL must be https"):
        provider(tmp_path, body)
    provider(tmp_path, body.replace("}}", ", allow_http: true}}"))
