"""TLS and mTLS between real Envoy and authz, and certificate rotation under load.

Envoy runs the shipped ``envoy/envoy-tls.yaml`` and ``envoy/envoy-mtls.yaml``
with only their ports and certificate paths changed. Certificates are made by
the test (tests/support/certs.py): one CA for authz's server certificate, one
for Envoy's client certificate, and a rogue CA whose certificates must not
get in.
"""

from __future__ import annotations

import copy
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.certs import SERVER_NAME, Authority, Issued, replace, serial_of
from tests.support.procs import (
    ENVOY_YAML,
    LOOPBACK,
    ROOT,
    EchoUpstream,
    Proc,
    envoy_stat,
    free_port,
    http_request,
    render_envoy_config,
    start_authz,
    start_envoy,
)

pytestmark = pytest.mark.envoy

POLICY = Path(__file__).parent / "policies" / "through_envoy.yaml"
ENVOY_TLS = ROOT / "envoy" / "envoy-tls.yaml"
ENVOY_MTLS = ROOT / "envoy" / "envoy-mtls.yaml"


class Pki:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.authz_ca = Authority(directory, "authz-ca")
        self.server = self.authz_ca.issue("authz")
        self.envoy_ca = Authority(directory, "envoy-ca")
        self.client = self.envoy_ca.issue("envoy-client", dns=(), client=True)
        self.rogue_ca = Authority(directory, "rogue-ca")
        self.rogue = self.rogue_ca.issue("rogue-client", dns=(), client=True)

    def authz_args(self, mutual: bool) -> list[str]:
        args = ["--grpc-tls-cert", str(self.server.cert), "--grpc-tls-key", str(self.server.key)]
        return [*args, "--grpc-client-ca", str(self.envoy_ca.path)] if mutual else args

    def channel_credentials(self, client: Issued | None = None) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.authz_ca.path.read_bytes(),
            private_key=client.key.read_bytes() if client else None,
            certificate_chain=client.cert.read_bytes() if client else None,
        )

    def envoy_paths(self) -> dict[str, Path]:
        return {
            "/etc/envoy/tls/authz-ca.pem": self.authz_ca.path,
            "/etc/envoy/tls/envoy-client.pem": self.client.cert,
            "/etc/envoy/tls/envoy-client.key": self.client.key,
        }


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def with_paths(text: str, paths: dict[str, Path]) -> str:
    """The config with each certificate file the example names replaced; every one must be known."""
    conf = yaml.safe_load(text)
    seen: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if set(node) == {"filename"}:
                if node["filename"] not in paths:
                    raise KeyError(f"the test has no file for {node['filename']}")
                seen.add(node["filename"])
                node["filename"] = str(paths[node["filename"]])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(conf)
    assert seen, "the config names no certificate file"
    return yaml.safe_dump(conf, sort_keys=False)


def _authz_cluster(conf: dict[str, Any]) -> dict[str, Any]:
    (cluster,) = [c for c in conf["static_resources"]["clusters"] if c["name"] == "authz"]
    return cluster


def render(source: Path, pki: Pki, upstream: EchoUpstream, authz_port: int, *, max_requests_per_connection: int = 0) -> str:
    text = render_envoy_config(source, {"admin": free_port(), "ingress": free_port(), "upstream": upstream.port, "authz": authz_port})
    text = with_paths(text, pki.envoy_paths())
    if max_requests_per_connection:
        conf = yaml.safe_load(text)
        opts = _authz_cluster(conf)["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        opts["common_http_protocol_options"] = {"max_requests_per_connection": max_requests_per_connection}
        text = yaml.safe_dump(conf, sort_keys=False)
    return text


def peer_serial(port: int, pki: Pki, client: Issued | None) -> int:
    """The serial of the certificate authz shows a new TLS connection (ALPN h2, as gRPC clients)."""
    ctx = ssl.create_default_context(cafile=str(pki.authz_ca.path))
    ctx.set_alpn_protocols(["h2"])
    if client is not None:
        ctx.load_cert_chain(str(client.cert), str(client.key))
    with socket.create_connection((LOOPBACK, port), timeout=3) as raw, ctx.wrap_socket(raw, server_hostname=SERVER_NAME) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return serial_of(ssl.DER_cert_to_PEM_cert(der).encode())


def health(port: int, credentials: grpc.ChannelCredentials | None) -> str:
    """SERVING, or the gRPC status code name of the failure."""
    options = [("grpc.ssl_target_name_override", SERVER_NAME)]
    target = f"{LOOPBACK}:{port}"
    channel = grpc.secure_channel(target, credentials, options=options) if credentials else grpc.insecure_channel(target)
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError as exc:
            return str(exc.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


# the example configs


def test_tls_examples_are_the_plain_example_with_a_transport_socket() -> None:
    plain = yaml.safe_load(ENVOY_YAML.read_text())
    tls = yaml.safe_load(ENVOY_TLS.read_text())
    mtls = yaml.safe_load(ENVOY_MTLS.read_text())
    tls_socket = _authz_cluster(tls).pop("transport_socket")
    assert tls == plain
    mtls_socket = _authz_cluster(mtls).pop("transport_socket")
    assert mtls == plain
    context = tls_socket["typed_config"]["common_tls_context"]
    assert context["alpn_protocols"] == ["h2"]
    assert "tls_certificates" not in context
    assert context["validation_context"]["match_typed_subject_alt_names"] == [{"san_type": "DNS", "matcher": {"exact": SERVER_NAME}}]
    client_cert = copy.deepcopy(mtls_socket)["typed_config"]["common_tls_context"].pop("tls_certificates")
    assert len(client_cert) == 1
    stripped = copy.deepcopy(mtls_socket)
    del stripped["typed_config"]["common_tls_context"]["tls_certificates"]
    assert stripped == tls_socket


@pytest.mark.parametrize("source", [ENVOY_TLS, ENVOY_MTLS], ids=["tls", "mtls"])
def test_tls_examples_validate_with_real_envoy(source: Path, pki: Pki, tmp_path: Path) -> None:
    import subprocess

    from tests.support.procs import envoy_binary

    path = tmp_path / "envoy.yaml"
    path.write_text(with_paths(source.read_text(), pki.envoy_paths()))
    done = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", path, "--disable-hot-restart", "--log-level", "error"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


# TLS


@pytest.fixture(scope="module")
def tls_authz(pki: Pki) -> Iterator[tuple[Proc, int]]:
    proc, port = start_authz(POLICY, *pki.authz_args(mutual=False), credentials=pki.channel_credentials())
    with proc:
        yield proc, port


def test_checks_over_tls_through_envoy(tls_authz: tuple[Proc, int], pki: Pki, upstream: EchoUpstream) -> None:
    proc, port = tls_authz
    envoy, ports = start_envoy(render(ENVOY_TLS, pki, upstream, port))
    with envoy:
        url = f"http://{LOOPBACK}:{ports['ingress']}"
        status, headers, _ = http_request(url + "/v1/items")
        assert status == 200
        assert "x-authz-decision-id" in upstream.last()["headers"]
        status, _, _ = http_request(url + "/admin/users")
        assert status == 403
        assert upstream.count == 1
        assert envoy_stat(ports["admin"], "cluster.authz.ssl.handshake") >= 1
    assert "serving gRPC over TLS" in proc.log_text()


def test_a_tls_listener_refuses_plaintext(tls_authz: tuple[Proc, int], pki: Pki) -> None:
    _, port = tls_authz
    assert health(port, None) == "UNAVAILABLE"
    assert health(port, pki.channel_credentials()) == "SERVING"


# mTLS


@pytest.fixture(scope="module")
def mtls_authz(pki: Pki) -> Iterator[tuple[Proc, int]]:
    proc, port = start_authz(POLICY, *pki.authz_args(mutual=True), credentials=pki.channel_credentials(pki.client))
    with proc:
        yield proc, port


def test_mtls_through_envoy(mtls_authz: tuple[Proc, int], pki: Pki, upstream: EchoUpstream) -> None:
    _, port = mtls_authz
    envoy, ports = start_envoy(render(ENVOY_MTLS, pki, upstream, port))
    with envoy:
        url = f"http://{LOOPBACK}:{ports['ingress']}"
        assert http_request(url + "/v1/items")[0] == 200
        assert http_request(url + "/admin/users")[0] == 403
        assert upstream.count == 1


def test_an_envoy_without_the_client_certificate_is_refused(
    mtls_authz: tuple[Proc, int], pki: Pki, upstream: EchoUpstream
) -> None:
    """envoy-tls.yaml (no client certificate) against an mTLS authz: every request fails closed."""
    _, port = mtls_authz
    envoy, ports = start_envoy(render(ENVOY_TLS, pki, upstream, port))
    with envoy:
        url = f"http://{LOOPBACK}:{ports['ingress']}"
        for path in ("/v1/items", "/v1/other"):
            status, _, _ = http_request(url + path)
            assert status == 503  # status_on_error: authz could not be asked
        assert upstream.count == 0
        assert envoy_stat(ports["admin"], "http.ingress.ext_authz.authz.ok") == 0


def test_mtls_refuses_callers_without_the_right_certificate(mtls_authz: tuple[Proc, int], pki: Pki) -> None:
    _, port = mtls_authz
    assert health(port, pki.channel_credentials()) == "UNAVAILABLE"  # no client certificate
    assert health(port, pki.channel_credentials(pki.rogue)) == "UNAVAILABLE"  # another CA's
    assert health(port, None) == "UNAVAILABLE"  # plaintext
    assert health(port, pki.channel_credentials(pki.client)) == "SERVING"


# rotation


def test_certificate_rotation_under_load_fails_no_check(pki: Pki, upstream: EchoUpstream, tmp_path: Path) -> None:
    """Checks flow through Envoy over mTLS while authz's certificate files are replaced three times.

    Envoy opens a new connection to authz every 10 checks, so handshakes
    happen throughout, during the moments when the new certificate is written
    but its key is not yet (authz keeps the old pair then). Zero failed
    checks; new handshakes show the newest certificate.
    """
    live = Issued(tmp_path / "authz.pem", tmp_path / "authz.key", pki.server.serial)
    replace(live.cert, pki.server.cert.read_bytes())
    replace(live.key, pki.server.key.read_bytes())
    args = ["--grpc-tls-cert", str(live.cert), "--grpc-tls-key", str(live.key), "--grpc-client-ca", str(pki.envoy_ca.path)]
    authz, port = start_authz(POLICY, *args, credentials=pki.channel_credentials(pki.client))
    envoy, ports = start_envoy(render(ENVOY_MTLS, pki, upstream, port, max_requests_per_connection=10))
    with authz, envoy:
        url = f"http://{LOOPBACK}:{ports['ingress']}"
        assert peer_serial(port, pki, pki.client) == pki.server.serial
        statuses: list[int] = []
        errors: list[str] = []
        stop = threading.Event()
        lock = threading.Lock()

        def load(worker: int) -> None:
            deadline = time.monotonic() + 30
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    status, _, _ = http_request(f"{url}/v1/load/{worker}", timeout=5)
                except OSError as exc:
                    with lock:
                        errors.append(type(exc).__name__)
                    continue
                with lock:
                    statuses.append(status)

        threads = [threading.Thread(target=load, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        serials = [pki.server.serial]
        switched_in: list[float] = []
        try:
            for round_ in range(3):
                time.sleep(0.8)
                fresh = pki.authz_ca.issue(f"authz-next-{round_}")
                # the certificate first, the key a moment later: a window with a mismatched pair
                replace(live.cert, fresh.cert.read_bytes())
                written = time.monotonic()
                time.sleep(0.4)
                replace(live.key, fresh.key.read_bytes())
                # new handshakes show the new certificate within the check interval (1 s)
                deadline = time.monotonic() + 5
                while peer_serial(port, pki, pki.client) != fresh.serial:
                    assert time.monotonic() < deadline, "authz still shows the old certificate"
                    time.sleep(0.05)
                switched_in.append(time.monotonic() - written)
                serials.append(fresh.serial)
            time.sleep(0.8)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=10)
        assert not errors
        assert len(statuses) >= 100, len(statuses)
        assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
        assert envoy_stat(ports["admin"], "cluster.authz.ssl.handshake") > len(statuses) // 10 - 5
        assert envoy_stat(ports["admin"], "cluster.authz.ssl.connection_error") == 0
        assert envoy_stat(ports["admin"], "http.ingress.ext_authz.authz.error") == 0
        log = authz.log_text()
        assert log.count("TLS certificate of grpc reloaded") == 3
        print(f"rotation: {len(statuses)} checks, 3 rotations, all 200; switched {[round(s, 2) for s in switched_in]} s after the write")
