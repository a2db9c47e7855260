"""The HTTP door over TLS and mTLS (a real ``authz serve``), its certificate and client CA replaced on disk."""

from __future__ import annotations

import datetime
import http.client
import json
import socket
import ssl
import time
from pathlib import Path

import pytest

from authz.errors import ConfigError
from authz.server import tls
from tests.support.certs import SERVER_NAME, Authority, Issued, replace, serial_of
from tests.support.procs import LOOPBACK, free_port, start_authz

POLICY = Path(__file__).parent / "policies" / "http_door.yaml"


def https(port: int, ca: Path, client: Issued | None = None, path: str = "/healthz") -> tuple[int, int, bytes]:
    """(status, the serial of authz's certificate, body) of one GET on a new TLS connection."""
    ctx = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        ctx.load_cert_chain(str(client.cert), str(client.key))
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
    try:
        sock = ctx.wrap_socket(socket.create_connection((LOOPBACK, port), timeout=5), server_hostname=SERVER_NAME)
        conn.sock = sock
        der = sock.getpeercert(binary_form=True)
        assert der is not None
        serial = serial_of(ssl.DER_cert_to_PEM_cert(der).encode())
        conn.request("GET", path, headers={"host": SERVER_NAME})
        reply = conn.getresponse()
        return reply.status, serial, reply.read()
    finally:
        conn.close()


def refused(port: int, ca: Path, client: Issued | None = None) -> bool:
    try:
        https(port, ca, client)
    except (ssl.SSLError, ConnectionError):
        return True
    return False


def test_http_door_over_mtls_follows_its_files(tmp_path: Path) -> None:
    server_ca = Authority(tmp_path, "server-ca")
    client_ca = Authority(tmp_path, "client-ca")
    other_ca = Authority(tmp_path, "other-ca")
    first = server_ca.issue("authz")
    client = client_ca.issue("proxy", dns=(), client=True)
    other_client = other_ca.issue("other-proxy", dns=(), client=True)
    live_cert, live_key, live_ca = tmp_path / "live.pem", tmp_path / "live.key", tmp_path / "live-ca.pem"
    replace(live_cert, first.cert.read_bytes())
    replace(live_key, first.key.read_bytes())
    replace(live_ca, client_ca.path.read_bytes())
    port = free_port()
    args = ["--http-listen", f"{LOOPBACK}:{port}", "--http-tls-cert", str(live_cert), "--http-tls-key", str(live_key), "--http-client-ca", str(live_ca)]
    proc, _ = start_authz(POLICY, *args)
    with proc:
        status, serial, body = https(port, server_ca.path, client)
        assert (status, serial) == (200, first.serial)
        assert json.loads(body)["status"] == "serving"
        status, _, body = https(port, server_ca.path, client, "/forward-auth")
        assert status in (400, 403)  # a decision, over TLS
        assert "decision_id" in json.loads(body)
        assert refused(port, server_ca.path)  # no client certificate
        assert refused(port, server_ca.path, other_client)  # another CA's
        assert "serving HTTPS with client certificates" in proc.log_text()

        # a new certificate: new handshakes show it
        second = server_ca.issue("authz-2")
        replace(live_cert, second.cert.read_bytes())
        replace(live_key, second.key.read_bytes())
        deadline = time.monotonic() + 5
        while https(port, server_ca.path, client)[1] != second.serial:
            assert time.monotonic() < deadline
            time.sleep(0.05)

        # a new client CA: the old one's clients are refused, the new one's admitted
        replace(live_ca, other_ca.path.read_bytes())
        deadline = time.monotonic() + 5
        while not refused(port, server_ca.path, client):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert https(port, server_ca.path, other_client)[0] == 200

        # a key that does not match: refused, the certificate in use stays
        third = server_ca.issue("authz-3")
        replace(live_cert, third.cert.read_bytes())
        time.sleep(1.3)
        assert https(port, server_ca.path, other_client)[1] == second.serial
        proc.wait_for_log("the key does not belong to the certificate of --http-tls-cert", timeout=5)


def test_plain_http_client_gets_no_answer_from_the_tls_door(tmp_path: Path) -> None:
    ca = Authority(tmp_path)
    cert = ca.issue("authz")
    port = free_port()
    proc, _ = start_authz(POLICY, "--http-listen", f"{LOOPBACK}:{port}", "--http-tls-cert", str(cert.cert), "--http-tls-key", str(cert.key))
    with proc:
        assert https(port, ca.path)[0] == 200
        conn = http.client.HTTPConnection(LOOPBACK, port, timeout=3)
        try:
            with pytest.raises((http.client.HTTPException, ConnectionError)):
                conn.request("GET", "/healthz")
                conn.getresponse()
        finally:
            conn.close()


# bad files: refused at start with the option at fault


def _files(tmp_path: Path) -> tuple[Authority, Issued]:
    ca = Authority(tmp_path)
    return ca, ca.issue("authz")


def test_a_key_of_another_certificate_is_refused(tmp_path: Path) -> None:
    ca, cert = _files(tmp_path)
    other = ca.issue("other")
    with pytest.raises(ConfigError) as err:
        tls.ssl_context(str(cert.cert), str(other.key))
    assert str(err.value) == "settings: http_tls_key: the key does not belong to the certificate of --http-tls-cert"


def test_missing_and_malformed_files_are_refused(tmp_path: Path) -> None:
    ca, cert = _files(tmp_path)
    with pytest.raises(ConfigError) as err:
        tls.server_credentials(str(tmp_path / "absent.pem"), str(cert.key))
    assert str(err.value) == f"settings: grpc_tls_cert: cannot read {str(tmp_path / 'absent.pem')!r}: No such file or directory"
    with pytest.raises(ConfigError) as err:
        tls.server_credentials(str(cert.key), str(cert.key))
    assert str(err.value) == "settings: grpc_tls_cert: not a PEM certificate (chain)"
    with pytest.raises(ConfigError) as err:
        tls.server_credentials(str(cert.cert), str(cert.cert))
    assert str(err.value) == "settings: grpc_tls_key: not an unencrypted PEM private key"
    with pytest.raises(ConfigError) as err:
        tls.server_credentials(str(cert.cert), str(cert.key), str(cert.key))
    assert str(err.value) == "settings: grpc_client_ca: not a PEM certificate bundle"


def test_an_expired_certificate_is_refused(tmp_path: Path) -> None:
    ca = Authority(tmp_path)
    old = ca.issue("old", not_before=datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=3), days=1)
    with pytest.raises(ConfigError) as err:
        tls.ssl_context(str(old.cert), str(old.key))
    assert str(err.value).startswith("settings: http_tls_cert: the certificate expired on ")


def test_refresh_keeps_the_pair_in_use_until_a_consistent_one_is_written(tmp_path: Path) -> None:
    ca, cert = _files(tmp_path)
    now = [0.0]
    files = tls.CertFiles(str(cert.cert), str(cert.key), name="grpc", clock=lambda: now[0])
    try:
        assert files.material.serial == cert.serial
        nxt = ca.issue("next")
        replace(cert.cert, nxt.cert.read_bytes())  # the key still the old one
        assert not files.refresh()  # within the interval: not even looked at
        now[0] += 1.0
        assert not files.refresh()
        assert files.material.serial != nxt.serial
        assert files.failures == 1 and "does not belong" in files.last_error
        now[0] += 1.0
        assert not files.refresh()  # the same refused files: not read again
        assert files.failures == 1
        replace(cert.key, nxt.key.read_bytes())
        now[0] += 1.0
        assert files.refresh()
        assert files.material.serial == nxt.serial
        assert (files.generation, files.reloads, files.last_error) == (1, 1, "")
        now[0] += 1.0
        cert.cert.touch()  # a new time, the same content: nothing to adopt
        assert not files.refresh()
        assert files.generation == 1
    finally:
        files.close()
