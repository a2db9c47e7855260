"""Several authz processes, one real redis-server: one logical decision server.

Real ``authz serve`` processes on free loopback ports, real gRPC over
sockets, a real redis-server that the tests kill and restart. Exactly-N
properties are checked with concurrent clients; faults with the processes'
own answers, health and logs.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.service.auth.v3 import attribute_context_pb2 as ac
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz.httpsig import sign_request
from tests.support.procs import (
    LOOPBACK,
    ROOT,
    EchoUpstream,
    Proc,
    free_port,
    http_request,
    render_envoy_config,
    start_authz,
    start_envoy,
)
from tests.support.redis import RedisServer

POLICY = """
version: 1
keys_file: keys.yaml
signatures:
  bots: {clock_skew: 1s}
quotas:
  burst: {limit: 10, window: 1h, by: global}
  open-q: {limit: 1, window: 1h, by: global}
  closed-q: {limit: 1000, window: 1h, by: ip}
  local-q: {limit: 4, window: 1h, by: global, local_share: 0.5}
routes:
  - {name: burst, match: {path: {prefix: /burst/}}, auth: [anonymous], quota: [burst], on_store_error: {quota: closed}}
  - {name: open, match: {path: {prefix: /open/}}, auth: [anonymous], quota: [open-q]}
  - {name: closed, match: {path: {prefix: /closed/}}, auth: [anonymous], quota: [closed-q], on_store_error: {quota: closed}}
  - {name: local, match: {path: {prefix: /local/}}, auth: [anonymous], quota: [local-q], on_store_error: {quota: local}}
  - {name: signed, match: {path: {prefix: /signed/}}, auth: [signature:bots]}
"""
HOST = "api.example.com"


@dataclass
class Setup:
    policy: Path
    key: ed25519.Ed25519PrivateKey


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    work = tmp_path_factory.mktemp("shared")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    (work / "keys.yaml").write_text(
        "keys:\n  - id: bot\n    algorithm: ed25519\n    public_key: |\n" + "".join(f"      {line}\n" for line in pem.splitlines())
    )
    (work / "policy.yaml").write_text(POLICY)
    return Setup(work / "policy.yaml", key)


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def authz(setup: Setup, store: str, *extra: str) -> Proc:
    proc, _ = start_authz(setup.policy, "--store", store, "--store-deadline", "200", *extra)
    return proc


def check(path: str, headers: dict[str, str] | None = None, peer: str = "198.51.100.7") -> external_auth_pb2.CheckRequest:
    entries = [base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in (headers or {}).items()]
    return external_auth_pb2.CheckRequest(
        attributes=ac.AttributeContext(
            source=ac.AttributeContext.Peer(address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address=peer, port_value=1))),
            request=ac.AttributeContext.Request(
                http=ac.AttributeContext.HttpRequest(
                    method="GET", path=path, host=HOST, scheme="https", header_map=base_pb2.HeaderMap(headers=entries)
                )
            ),
        )
    )


def reason(resp: Any) -> str:
    return str(resp.dynamic_metadata.fields["reason"].string_value)


async def burst(ports: list[int], requests: list[external_auth_pb2.CheckRequest]) -> list[Any]:
    """Send every request at once, spread over the processes' ports; gRPC over real sockets."""
    channels = [grpc.aio.insecure_channel(f"{LOOPBACK}:{p}") for p in ports]
    try:
        stubs = [external_auth_pb2_grpc.AuthorizationStub(ch) for ch in channels]
        calls = [stubs[i % len(stubs)].Check(req, timeout=5) for i, req in enumerate(requests)]
        return list(await asyncio.gather(*calls))
    finally:
        for ch in channels:
            await ch.close()


def signed_check(setup: Setup, path: str) -> external_auth_pb2.CheckRequest:
    url = f"https://{HOST}{path}"
    headers = dict(sign_request("GET", url, [], key_id="bot", algorithm="ed25519", key=setup.key))
    return check(path, {k.lower(): v for k, v in headers.items()})


def wait_epoch_clear() -> None:
    # clock_skew is 1 s: a signature made 1 s after the store's epoch began can be vouched for
    time.sleep(2.1)


@pytest.mark.parametrize("processes", [1, 2])
async def test_100_concurrent_clients_against_a_burst_of_10_get_exactly_10(setup: Setup, redis: RedisServer, processes: int) -> None:
    procs = [authz(setup, redis.url) for _ in range(processes)]
    try:
        answers = await burst([p.ports["grpc"] for p in procs], [check("/burst/x", peer=f"10.0.{i // 250}.{i % 250 + 1}") for i in range(100)])
        reasons = [reason(a) for a in answers]
        assert reasons.count("ok") == 10 and reasons.count("quota.exhausted") == 90, reasons
    finally:
        for p in procs:
            p.stop()


async def test_50_copies_of_one_signed_request_across_two_processes_pass_once(setup: Setup, redis: RedisServer) -> None:
    procs = [authz(setup, redis.url) for _ in range(2)]
    try:
        await burst([procs[0].ports["grpc"]], [check("/closed/warm")])  # the store's epoch begins
        wait_epoch_clear()
        one = signed_check(setup, "/signed/orders")
        answers = await burst([p.ports["grpc"] for p in procs], [one] * 50)
        reasons = [reason(a) for a in answers]
        assert reasons.count("ok") == 1 and reasons.count("sig.replay") == 49, reasons
    finally:
        for p in procs:
            p.stop()


async def test_restarting_authz_does_not_reopen_the_replay_window(setup: Setup, redis: RedisServer) -> None:
    first = authz(setup, redis.url)
    await burst([first.ports["grpc"]], [check("/closed/warm")])
    wait_epoch_clear()
    one = signed_check(setup, "/signed/x")
    assert [reason(a) for a in await burst([first.ports["grpc"]], [one])] == ["ok"]
    first.stop()
    second = authz(setup, redis.url)
    try:
        # the epoch lives in Redis: the new process still knows the nonce was used
        assert [reason(a) for a in await burst([second.ports["grpc"]], [one])] == ["sig.replay"]
    finally:
        second.stop()


def store_health(proc: Proc) -> tuple[int, dict[str, Any]]:
    with grpc.insecure_channel(f"{LOOPBACK}:{proc.ports['grpc']}") as ch:
        status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="authz.store"), timeout=2).status
    _, _, body = http_request(f"http://{LOOPBACK}:{proc.ports['http']}/healthz")
    return status, json.loads(body)


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.1)


async def test_redis_killed_under_load_each_route_behaves_as_declared_and_recovers(setup: Setup, redis: RedisServer) -> None:
    proc = authz(setup, redis.url)
    port = proc.ports["grpc"]
    try:
        load = [check(p, peer=f"10.9.0.{i % 200 + 1}") for i in range(40) for p in ("/open/a", "/closed/a", "/local/a")]
        before = [reason(a) for a in await burst([port], load)]
        assert "store.unavailable" not in before
        redis.kill()
        during = await burst([port], load)
        by_route: dict[str, set[str]] = {}
        for req, resp in zip(load, during, strict=True):
            by_route.setdefault(req.attributes.request.http.path, set()).add(reason(resp))
        assert by_route["/open/a"] == {"ok.store_unavailable"}
        assert by_route["/closed/a"] == {"store.unavailable"}
        assert by_route["/local/a"] <= {"ok.store_unavailable", "quota.exhausted"}
        local = [reason(r) for q, r in zip(load, during, strict=True) if q.attributes.request.http.path == "/local/a"]
        assert local.count("ok.store_unavailable") == 2  # local_share 0.5 of 4
        degraded = next(r for q, r in zip(load, during, strict=True) if q.attributes.request.http.path == "/open/a")
        assert ("x-authz-degraded", "quota") in [(h.header.key, h.header.value) for h in degraded.ok_response.headers]
        wait_for(lambda: store_health(proc)[0] == health_pb2.HealthCheckResponse.NOT_SERVING)
        status, body = store_health(proc)
        assert body["status"] == "serving" and body["components"]["store"]["status"] == "not_serving"
        assert body["components"]["store"]["breaker"] == "open"
        redis.start()  # same port, empty data
        wait_for(lambda: store_health(proc)[0] == health_pb2.HealthCheckResponse.SERVING)
        after = [reason(a) for a in await burst([port], [check("/closed/b", peer="10.8.0.1")])]
        assert after == ["ok"]
        log = proc.log_text()
        assert "Traceback" not in log and "store unavailable" in log and "store back" in log
    finally:
        proc.stop()


async def test_authz_started_before_redis_serves_at_once_and_connects_when_it_appears(setup: Setup) -> None:
    port = free_port()
    proc = authz(setup, f"redis://{LOOPBACK}:{port}")
    try:
        answers = [reason(a) for a in await burst([proc.ports["grpc"]], [check("/open/x"), check("/closed/x")])]
        assert answers == ["ok.store_unavailable", "store.unavailable"]
        with RedisServer(port=port):
            deadline = time.monotonic() + 10
            while True:
                got = [reason(a) for a in await burst([proc.ports["grpc"]], [check("/closed/x", peer="10.1.1.1")])]
                if got == ["ok"]:
                    break
                assert time.monotonic() < deadline, got
                await asyncio.sleep(0.2)
        assert "Traceback" not in proc.log_text()
    finally:
        proc.stop()


def test_workers_need_a_shared_store(setup: Setup) -> None:
    import subprocess

    from tests.support.procs import venv_bin

    out = subprocess.run(
        [str(venv_bin("authz")), "serve", "--config", str(setup.policy), "--workers", "2", "--no-http"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode != 0
    assert "several workers need a shared store" in out.stderr


async def test_two_workers_share_one_redis_and_split_the_calls(setup: Setup, redis: RedisServer) -> None:
    base = free_pair()
    proc, _ = start_authz(setup.policy, "--store", redis.url, "--workers", "2", "--store-deadline", "200", port=base)
    try:
        for p in (base, base + 1):
            wait_serving(p)
        answers = await burst([base, base + 1], [check("/burst/w", peer=f"10.3.0.{i + 1}") for i in range(40)])
        reasons = [reason(a) for a in answers]
        assert reasons.count("ok") == 10  # one quota across both workers
        prefixes = {a.dynamic_metadata.fields["decision_id"].string_value.split("-")[0] for a in answers}
        assert len(prefixes) == 2  # both workers decided
    finally:
        proc.stop(timeout=15)
    assert proc.returncode == 0
    assert "all workers stopped" in proc.log_text()


def wait_serving(port: int) -> None:
    from tests.support.procs import wait_grpc_serving

    wait_grpc_serving(f"{LOOPBACK}:{port}", timeout=20)


def free_pair() -> int:
    """A port whose successor is free too (worker i listens on the base port + i)."""
    for _ in range(50):
        base = free_port()
        try:
            with socket.socket() as s:
                s.bind((LOOPBACK, base + 1))
            return base
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports")


@pytest.mark.envoy
def test_through_envoy_two_workers_share_the_quota_and_split_the_calls(setup: Setup, redis: RedisServer, echo_upstream: EchoUpstream) -> None:
    echo_upstream.reset()
    base = free_pair()
    proc, _ = start_authz(setup.policy, "--store", redis.url, "--workers", "2", "--store-deadline", "200", "--no-http", "--log-level", "debug", port=base)
    envoy = None
    try:
        wait_serving(base + 1)
        text = render_envoy_config(
            ROOT / "envoy" / "envoy-workers.yaml",
            {"admin": free_port(), "ingress": free_port(), "upstream": echo_upstream.port, "authz": [base, base + 1]},
        )
        envoy, ports = start_envoy(text)
        url = f"http://{LOOPBACK}:{ports['ingress']}/burst/items"
        with ThreadPoolExecutor(max_workers=16) as pool:
            replies = list(pool.map(lambda i: http_request(url, source=f"127.0.{i // 200}.{i % 200 + 2}"), range(60)))
        statuses = [s for s, _, _ in replies]
        assert statuses.count(200) == 10 and statuses.count(429) == 50, statuses
        refused = next(h for s, h, _ in replies if s == 429)
        assert int(refused["retry-after"]) >= 1
        assert refused["ratelimit"].startswith('"burst";r=0;t=') and refused["ratelimit-policy"] == '"burst";q=10;w=3600'
        assert echo_upstream.count == 10  # the upstream saw none of the refused requests
        ids = [h["x-authz-decision-id"] for s, h, _ in replies if s == 429]
        per_worker = {i.split("-")[0] for i in ids}
        assert len(per_worker) == 2, "one worker got no calls"
    finally:
        if envoy is not None:
            envoy.stop()
        proc.stop(timeout=15)
