"""JA4 fingerprints from a real Envoy TLS listener to authz: the example's commented lines, switched on.

``envoy/envoy.yaml`` ships the JA4 lines commented out between ``# >>> ja4``
and ``# <<< ja4`` markers (its listener is plain HTTP). These tests take the
example, uncomment exactly those lines, and run it: once with TLS terminated
on the listener (a certificate made here), once as shipped, plain HTTP. A
Python TLS client claiming to be Chrome must show up in authz's decisions as
a browser user agent on a library fingerprint, whatever fingerprint header
it sends itself.
"""

from __future__ import annotations

import datetime
import http.client
import json
import re
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.procs import (
    ENVOY_YAML,
    LOOPBACK,
    EchoUpstream,
    Proc,
    free_port,
    render_envoy_config,
    start_authz,
    start_envoy,
)

pytestmark = pytest.mark.envoy

CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
CHROME_JA4 = "t13d1516h2_8daaf6152771_02713d6af862"
JA4 = re.compile(r"^t13[di]\d{4}[0-9a-z]{2}_[0-9a-f]{12}_[0-9a-f]{12}$")

POLICY = """
version: 1
identify:
  fingerprint: {header: x-ja4-fingerprint}
evidence:
  user_agent: {}
  fingerprint_mismatch: {}
routes:
  - {name: api, auth: [anonymous]}
"""


def ja4_enabled(text: str) -> str:
    """The example config with the lines between the ja4 markers uncommented, nothing else changed."""
    out: list[str] = []
    inside = False
    blocks = 0
    for line in text.splitlines():
        marker = line.strip()
        if marker == "# >>> ja4":
            inside, blocks = True, blocks + 1
            continue
        if marker == "# <<< ja4":
            inside = False
            continue
        if inside:
            indent = len(line) - len(line.lstrip())
            assert line[indent : indent + 2] == "# ", line
            line = line[:indent] + line[indent + 2 :]
        out.append(line)
    assert blocks == 2 and not inside  # the listener filter and the HTTP filter
    return "\n".join(out) + "\n"


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(1)
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


def with_tls(text: str, cert: Path, key: Path) -> str:
    conf = yaml.safe_load(text)
    (chain,) = conf["static_resources"]["listeners"][0]["filter_chains"]
    chain["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": {
                "tls_certificates": [{"certificate_chain": {"filename": str(cert)}, "private_key": {"filename": str(key)}}],
                "alpn_protocols": ["h2", "http/1.1"],
            },
        },
    }
    return yaml.safe_dump(conf, sort_keys=False)


class Stack:
    def __init__(self, authz: Proc, envoy: Proc, port: int, upstream: EchoUpstream, log: Path, tls: bool) -> None:
        self.authz, self.envoy, self.port, self.upstream, self.log, self.tls = authz, envoy, port, upstream, log, tls

    def get(self, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """One request with Python's own TLS stack (or none); returns the status and authz's decision record."""
        if self.tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            conn: http.client.HTTPConnection = http.client.HTTPSConnection("localhost", self.port, timeout=5, context=ctx)
        else:
            conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=5)
        try:
            conn.request("GET", "/v1/items", headers={"host": "api.example.com", **headers})
            resp = conn.getresponse()
            resp.read()
            decision_id = resp.getheader("x-authz-decision-id") or ""
        finally:
            conn.close()
        return resp.status, self.record(decision_id) if decision_id else self.record_of_last()

    def record_of_last(self) -> dict[str, Any]:
        decision_id = self.upstream.last()["headers"]["x-authz-decision-id"]
        return self.record(decision_id)

    def record(self, decision_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for line in self.log.read_text().splitlines() if self.log.exists() else []:
                rec = json.loads(line)
                if rec["id"] == decision_id:
                    return dict(rec)
            time.sleep(0.05)
        raise AssertionError(f"decision {decision_id} not in the log")


def _stack(tmp: Path, tls: bool) -> Iterator[Stack]:
    (tmp / "policy.yaml").write_text(POLICY)
    log = tmp / "decisions.jsonl"
    text = ja4_enabled(ENVOY_YAML.read_text())
    if tls:
        text = with_tls(text, *self_signed(tmp))
    with EchoUpstream() as upstream:
        authz, grpc_port = start_authz(tmp / "policy.yaml", "--decision-log", str(log))
        with authz:
            port = free_port()
            config = render_envoy_config(text, {"admin": free_port(), "ingress": port, "upstream": upstream.port, "authz": grpc_port})
            envoy, _ = start_envoy(config)
            with envoy:
                yield Stack(authz, envoy, port, upstream, log, tls)


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from _stack(tmp_path_factory.mktemp("ja4-tls"), tls=True)


@pytest.fixture(scope="module")
def plain_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from _stack(tmp_path_factory.mktemp("ja4-plain"), tls=False)


def test_the_commented_lines_are_the_only_difference() -> None:
    shipped = yaml.safe_load(ENVOY_YAML.read_text())
    enabled = yaml.safe_load(ja4_enabled(ENVOY_YAML.read_text()))
    listener = enabled["static_resources"]["listeners"][0]
    assert listener["listener_filters"][0]["typed_config"]["enable_ja4_fingerprinting"] is True
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    names = [f["name"] for f in hcm["http_filters"]]
    assert names == ["envoy.filters.http.header_mutation", "envoy.filters.http.ext_authz", "envoy.filters.http.router"]
    del listener["listener_filters"]
    del hcm["http_filters"][0]
    assert enabled == shipped


def test_a_browser_user_agent_on_pythons_tls_is_a_mismatch(tls_stack: Stack) -> None:
    status, rec = tls_stack.get({"user-agent": CHROME, "accept": "*/*"})
    assert status == 200  # evidence, never a refusal by itself
    assert rec["signals"]["ua.fingerprint_mismatch"] == "browser user agent, python TLS"
    seen = tls_stack.upstream.last()["headers"]["x-ja4-fingerprint"]
    assert JA4.match(seen) and "_85036bcba153_" in seen  # the cipher hash of Python's ssl defaults


def test_a_forged_fingerprint_header_is_overwritten(tls_stack: Stack) -> None:
    status, rec = tls_stack.get({"user-agent": CHROME, "x-ja4-fingerprint": CHROME_JA4})
    assert status == 200
    assert rec["signals"]["ua.fingerprint_mismatch"] == "browser user agent, python TLS"
    assert tls_stack.upstream.last()["headers"]["x-ja4-fingerprint"] != CHROME_JA4


def test_a_library_that_says_so_is_no_mismatch(tls_stack: Stack) -> None:
    status, rec = tls_stack.get({"user-agent": "python-requests/2.31.0"})
    assert status == 200
    assert rec["signals"] == {"ua.automation": "python-requests"}


def test_without_tls_a_client_sent_fingerprint_is_removed(plain_stack: Stack) -> None:
    python_ja4 = "t13d181100_85036bcba153_d41ae481755e"
    status, rec = plain_stack.get({"user-agent": CHROME, "x-ja4-fingerprint": python_ja4})
    assert status == 200
    assert "x-ja4-fingerprint" not in plain_stack.upstream.last()["headers"]
    assert "signals" not in rec  # no fingerprint reached authz: no verdict either way
