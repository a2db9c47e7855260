"""Web Bot Auth agents for tests: keys, directories, signed requests, and a real HTTPS directory server.

The RFC 9421 B.1.4 example key (``test-key-ed25519``) comes from the RFC's own
test vectors (tests/vectors/rfc9421/keys.json); other agents get keys made per
test session. ``DirectoryServer`` serves
``/.well-known/http-message-signatures-directory`` over TLS on loopback with a
certificate made in the test, and can misbehave on demand (redirect, stall,
grow, lie about its media type, fail, sign its response).
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from authz.httpsig.agent import ed25519_jwk, sign_agent_request
from authz.request import Request, join_field_lines

VECTORS = Path(__file__).parent.parent / "vectors" / "rfc9421" / "keys.json"
WELL_KNOWN = "/.well-known/http-message-signatures-directory"
MEDIA_TYPE = "application/http-message-signatures-directory+json"


def rfc9421_ed25519() -> ed25519.Ed25519PrivateKey:
    """The RFC 9421 B.1.4 example key ``test-key-ed25519``."""
    entry = json.loads(VECTORS.read_text())["keys"]["test-key-ed25519"]
    key = load_pem_private_key(entry["private_pem"].encode(), None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return key


def thumbprint(key: ed25519.Ed25519PrivateKey) -> str:
    return ed25519_jwk(key)["kid"]


def directory(*keys: ed25519.Ed25519PrivateKey, **extra: Any) -> dict[str, Any]:
    """A key directory document holding the public halves of ``keys``."""
    return {"keys": [{**ed25519_jwk(k), "use": "sig", **extra} for k in keys]}


def write_directory(path: Path, *keys: ed25519.Ed25519PrivateKey) -> Path:
    path.write_text(json.dumps(directory(*keys)))
    return path


def signed(
    url: str, key: ed25519.Ed25519PrivateKey, agent: str | None, *, headers: Sequence[tuple[str, str]] = (), method: str = "GET", **kw: Any
) -> list[tuple[str, str]]:
    """The request's header lines plus an agent's signature headers."""
    return [*headers, *sign_agent_request(method, url, headers, key=key, agent=agent, **kw)]


def to_request(url: str, headers: Sequence[tuple[str, str]], *, method: str = "GET", peer: str = "198.51.100.7") -> Request:
    parts = urlsplit(url)
    return Request(
        method=method,
        path=parts.path or "/",
        query=parts.query,
        has_query="?" in url,
        host=parts.netloc,
        scheme=parts.scheme,
        protocol="HTTP/1.1",
        headers=join_field_lines([(n.lower(), v) for n, v in headers]),
        peer_ip=peer,
    )


# -- a real HTTPS directory --------------------------------------------------------------


class DirectoryServer(http.server.ThreadingHTTPServer):
    """An agent origin serving its key directory over TLS on 127.0.0.1.

    Behaviour, set by the test: ``keys`` (private keys whose public halves are
    served), ``mode`` ("ok", "redirect", "slow", "huge", "json-type", "fail"),
    ``cache_control``, ``sign`` (add one possession proof per key), ``delay_s``.
    """

    daemon_threads = True

    def __init__(self, cert: Path, key: Path) -> None:
        super().__init__(("127.0.0.1", 0), _DirectoryHandler)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert, key)
        self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.keys: list[ed25519.Ed25519PrivateKey] = []
        self.mode = "ok"
        self.cache_control = "max-age=3600"
        self.sign = False
        self.bad_proof = False
        self.delay_s = 5.0
        self.fetches = 0
        self.paths: list[str] = []
        self.hosts: list[str] = []
        self.lock = threading.Lock()

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}"

    def body(self) -> bytes:
        return json.dumps(directory(*self.keys)).encode()


class _DirectoryHandler(http.server.BaseHTTPRequestHandler):
    server: DirectoryServer

    def do_GET(self) -> None:
        s = self.server
        with s.lock:
            s.fetches += 1
            s.paths.append(self.path)
            s.hosts.append(self.headers.get("host", ""))
            mode = s.mode
        if self.path == "/moved" and mode == "redirect":
            self._send(200, s.body(), MEDIA_TYPE)  # where the redirect points: a good directory
            return
        if self.path != WELL_KNOWN:
            self._send(404, b"", "text/plain")
            return
        if mode == "redirect":
            self.send_response(302)
            self.send_header("location", f"{s.origin}/moved")
            self.send_header("content-length", "0")
            self.end_headers()
            return
        if mode == "fail":
            self._send(503, b"", "text/plain")
            return
        if mode == "slow":
            time.sleep(s.delay_s)
        if mode == "huge":
            padding = {"keys": [], "padding": "x" * (200 * 1024)}
            self._send(200, json.dumps(padding).encode(), MEDIA_TYPE, chunked=True)
            return
        body = s.body()
        extra: list[tuple[str, str]] = []
        if s.sign:
            extra = _proofs(body, self.headers.get("host", ""), s.keys, bad=s.bad_proof)
        self._send(200, body, "application/json" if mode == "json-type" else MEDIA_TYPE, extra)

    def _send(self, status: int, body: bytes, ctype: str, extra: Sequence[tuple[str, str]] = (), *, chunked: bool = False) -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("cache-control", self.server.cache_control)
        for name, value in extra:
            self.send_header(name, value)
        if chunked:
            # no content-length: the client must count what arrives
            self.send_header("connection", "close")
            self.end_headers()
            try:
                for i in range(0, len(body), 16 * 1024):
                    self.wfile.write(body[i : i + 16 * 1024])
            except OSError:
                pass
            return
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass

    def log_message(self, *args: object) -> None:
        return


def _proofs(body: bytes, authority: str, keys: Sequence[ed25519.Ed25519PrivateKey], *, bad: bool) -> list[tuple[str, str]]:
    """One possession proof per key: an RFC 9421 response signature over "@authority";req and content-digest."""
    digest = "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"
    now = int(time.time())
    inputs, sigs = [], []
    for i, key in enumerate(keys):
        params = f'("@authority";req "content-digest");created={now};expires={now + 300};keyid="{ed25519_jwk(key)["kid"]}";alg="ed25519";tag="http-message-signatures-directory"'
        base = f'"@authority";req: {authority}\n"content-digest": {digest}\n"@signature-params": {params}'.encode()
        signature = key.sign(base + (b"x" if bad else b""))
        inputs.append(f"binding{i}={params}")
        sigs.append(f"binding{i}=:{base64.b64encode(signature).decode()}:")
    return [("content-digest", digest), ("signature-input", ", ".join(inputs)), ("signature", ", ".join(sigs))]


def make_cert(directory: Path, dns_names: Sequence[str] = ("localhost",)) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and ``dns_names`` (the CA bundle is the certificate itself)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agent directory test")])
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), *(x509.DNSName(n) for n in dns_names)]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "agent.crt", directory / "agent.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


@contextmanager
def directory_server(cert: Path, key: Path) -> Iterator[DirectoryServer]:
    server = DirectoryServer(cert, key)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
