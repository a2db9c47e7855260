"""authz and a real redis-server over TLS with client certificates (rediss://, tls-auth-clients yes)."""

from __future__ import annotations

import json
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from authz.errors import ConfigError
from authz.store.redis import parse_url
from tests.support.certs import Authority, Issued
from tests.support.procs import LOOPBACK, Proc, free_port, http_request, start_authz, wait_port
from tests.support.redis import REDIS_SERVER

POLICY = Path(__file__).parents[1] / "integration" / "policies" / "through_envoy.yaml"


class TlsRedis:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca = Authority(directory, "redis-ca")
        self.server = self.ca.issue("redis", dns=("localhost",), ips=(LOOPBACK,))
        self.client = self.ca.issue("authz-client", dns=(), client=True)
        self.port = free_port()
        args = [
            REDIS_SERVER, "--port", "0", "--tls-port", str(self.port), "--bind", LOOPBACK,
            "--tls-cert-file", str(self.server.cert), "--tls-key-file", str(self.server.key),
            "--tls-ca-cert-file", str(self.ca.path), "--tls-auth-clients", "yes",
            "--dir", str(directory), "--save", "", "--appendonly", "no", "--protected-mode", "no",
        ]  # fmt: skip
        self.proc = Proc(args, name="redis-tls").start()
        wait_port(LOOPBACK, self.port, proc=self.proc)

    def url(self, client: Issued | None) -> str:
        query = {"ssl_ca_certs": str(self.ca.path)}
        if client is not None:
            query |= {"ssl_certfile": str(client.cert), "ssl_keyfile": str(client.key)}
        return f"rediss://{LOOPBACK}:{self.port}/0?{urllib.parse.urlencode(query)}"

    def keys(self) -> list[bytes]:
        with redis.Redis(
            host=LOOPBACK, port=self.port, ssl=True, ssl_ca_certs=str(self.ca.path),
            ssl_certfile=str(self.client.cert), ssl_keyfile=str(self.client.key), socket_timeout=2,
        ) as c:  # fmt: skip
            return list(c.scan_iter("authz:*"))


@pytest.fixture(scope="module")
def tls_redis() -> Iterator[TlsRedis]:
    server = TlsRedis(Path(tempfile.mkdtemp(prefix="authz-redis-tls-")))
    with server.proc:
        yield server


def test_quotas_live_in_redis_over_mtls(tls_redis: TlsRedis) -> None:
    proc, _ = start_authz(POLICY, "--store", tls_redis.url(tls_redis.client))
    with proc:
        base = f"http://{LOOPBACK}:{proc.ports['http']}/envoy"
        statuses = [http_request(f"{base}/limited/x")[0] for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        assert tls_redis.keys()  # the buckets are in Redis
        health = json.loads(http_request(f"http://{LOOPBACK}:{proc.ports['http']}/healthz")[2])
        assert health["components"]["store"]["status"] == "serving"
        log = proc.log_text()
        assert f"store rediss://{LOOPBACK}:{tls_redis.port}" in log
        assert str(tls_redis.client.key) not in log and "ssl_keyfile" not in log


def test_without_a_client_certificate_redis_refuses_and_authz_follows_on_store_error(tls_redis: TlsRedis) -> None:
    proc, _ = start_authz(POLICY, "--store", tls_redis.url(None))
    with proc:
        base = f"http://{LOOPBACK}:{proc.ports['http']}"
        deadline = time.monotonic() + 5
        while True:
            health = json.loads(http_request(f"{base}/healthz")[2])
            if health["components"]["store"]["status"] == "not_serving":
                break
            assert time.monotonic() < deadline, health
            time.sleep(0.1)
        status, headers, _ = http_request(f"{base}/envoy/limited/x")
        assert status == 200  # the quota fails open (the route's default), tagged
        assert str(tls_redis.ca.path) not in json.dumps(health)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://h:6379?ssl_ca_certs=/x/ca.pem", "--store: store: ssl_ca_certs needs TLS: use rediss:// (or rediss+sentinel://, rediss+cluster://)"),
        ("rediss://h:6379?ssl_certfile=/x/c.pem", "--store: store: ssl_certfile and ssl_keyfile go together (the client certificate and its key)"),
        ("rediss://h:6379?ssl_cert_reqs=none", "--store: store: ssl_cert_reqs=none would accept any server: authz always verifies Redis's certificate (give the CA that issued it as ssl_ca_certs)"),
    ],
)
def test_tls_parameters_are_checked(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_url(url)
    assert str(err.value) == message


def test_an_unreadable_key_file_is_refused_at_start_without_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "secret-dir" / "client.key"
    proc = Proc(
        [str(Path(__import__("sys").prefix) / "bin" / "authz"), "serve", "-c", str(POLICY), "--no-http", "--no-metrics",
         "--grpc-listen", f"{LOOPBACK}:{free_port()}",
         "--store", f"rediss://{LOOPBACK}:1?ssl_certfile={missing}.pem&ssl_keyfile={missing}"],
        name="authz",
    ).start()  # fmt: skip
    with proc:
        deadline = time.monotonic() + 15
        while proc.alive:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert proc.returncode == 1
        out = proc.log_text()
        assert "--store: store: cannot read the file of ssl_certfile" in out
        assert "secret-dir" not in out
