"""The admin commands end to end: ``authz decisions | client | policy | keys | apikeys`` against a real
``authz serve`` process, with tables for people and --json for scripts, over plaintext and mTLS.

The token travels in AUTHZ_ADMIN_TOKEN or --token-file, never on a command
line; it appears in no output, no log line and no line of the decision log.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import address_pb2
from envoy.service.auth.v3 import attribute_context_pb2 as ac
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from tests.support.admin import new_token, write_tokens
from tests.support.certs import Authority
from tests.support.procs import LOOPBACK, Proc, free_pair, free_port, start_authz, venv_bin

POLICY = """
version: 1
quotas:
  per-ip: {limit: 3, window: 1m, by: ip}
reputation: {half_life: 10m}
routes:
  - {name: api, match: {path: {prefix: /v1/}}, auth: [anonymous], quota: [per-ip], reputation: {}}
"""


@dataclass
class Server:
    proc: Proc
    token: str
    dir: Path
    log: Path

    @property
    def addr(self) -> str:
        return f"{LOOPBACK}:{self.proc.ports['admin']}"


def serve(work: Path, *extra: str) -> Iterator[Server]:
    (work / "policy.yaml").write_text(POLICY)
    token = new_token()
    write_tokens(work / "tokens", {"ops": token})
    log = work / "decisions.jsonl"
    proc, _ = start_authz(work / "policy.yaml", "--no-http", "--admin-tokens-file", str(work / "tokens"), "--decision-log", str(log), *extra)
    with proc:
        yield Server(proc, token, work, log)
    for text in (proc.log_text(), log.read_text() if log.exists() else ""):
        assert token not in text


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serve(tmp_path_factory.mktemp("admin-cli"))


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with a keystore (a file, its master key in another)."""
    work = tmp_path_factory.mktemp("admin-cli-keys")
    (work / "master.key").write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    yield from serve(work, "--keystore", str(work / "keystore.json"), "--master-key-file", str(work / "master.key"))


def audit_records(log: Path, want: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The decision log's audit records, once at least ``want`` are there (its writer flushes every 0.2 s)."""
    deadline = time.monotonic() + timeout
    while True:
        records = [json.loads(line) for line in log.read_text().splitlines() if '"event":"audit"' in line] if log.exists() else []
        if len(records) >= want or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def authz(server: Server, *args: str, token: bool = True, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHZ_")}
    env["AUTHZ_ADMIN_ADDR"] = server.addr
    if token:
        env["AUTHZ_ADMIN_TOKEN"] = server.token
    done = subprocess.run([str(venv_bin("authz")), *args], capture_output=True, text=True, env=env, timeout=30, check=False, input=stdin)
    assert server.token not in done.stdout + done.stderr
    if check:
        assert done.returncode == 0, f"authz {' '.join(args)}: {done.stderr}"
    return done


def ext_check(server: Server, path: str, peer: str) -> str:
    with grpc.insecure_channel(f"{LOOPBACK}:{server.proc.ports['grpc']}") as ch:
        request = external_auth_pb2.CheckRequest(
            attributes=ac.AttributeContext(
                source=ac.AttributeContext.Peer(address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address=peer, port_value=1))),
                request=ac.AttributeContext.Request(http=ac.AttributeContext.HttpRequest(method="GET", path=path, host="api.example.com", scheme="https")),
            )
        )
        reply: Any = external_auth_pb2_grpc.AuthorizationStub(ch).Check(request, timeout=5)
        return str(reply.dynamic_metadata.fields["decision_id"].string_value)


def test_without_a_token_the_commands_are_refused(server: Server) -> None:
    done = authz(server, "policy", "show", token=False, check=False)
    assert done.returncode == 1 and "UNAUTHENTICATED" in done.stderr


def test_a_token_file_instead_of_the_environment(server: Server, tmp_path: Path) -> None:
    (tmp_path / "token").write_text(server.token + "\n")
    done = authz(server, "policy", "show", "--json", "--token-file", str(tmp_path / "token"), token=False)
    assert json.loads(done.stdout)["routes"] == ["api"]


def test_policy_show_validate_reload(server: Server, tmp_path: Path) -> None:
    shown = json.loads(authz(server, "policy", "show", "--json").stdout)
    assert (shown["file"], shown["routes"]) == (str(server.dir / "policy.yaml"), ["api"])
    table = authz(server, "policy", "show", "--text").stdout
    assert f"version: {shown['version']}" in table and "routes: api" in table and "per-ip: {limit: 3" in table
    (tmp_path / "good.yaml").write_text(POLICY.replace("limit: 3", "limit: 4"))
    assert "good.yaml: OK, version " in authz(server, "policy", "validate", str(tmp_path / "good.yaml")).stdout
    (tmp_path / "bad.yaml").write_text(POLICY.replace("limit: 3", "limit: -1"))
    bad = authz(server, "policy", "validate", str(tmp_path / "bad.yaml"), check=False)
    assert bad.returncode == 1 and "bad.yaml:4: quotas.per-ip.limit: " in bad.stderr
    from_stdin = json.loads(authz(server, "policy", "validate", "-", "--json", stdin=POLICY).stdout)
    assert from_stdin["ok"] is True and from_stdin["version"] == shown["version"]
    assert authz(server, "policy", "reload").stdout.strip() == f"unchanged: version {shown['version']}"


def test_decisions_list_get_and_watch(server: Server) -> None:
    decision_id = ext_check(server, "/v1/cli", "172.16.30.1")
    listed = json.loads(authz(server, "decisions", "list", "--json", "--identity", "172.16.30.1").stdout)
    assert [d["id"] for d in listed["decisions"]] == [decision_id]
    table = authz(server, "decisions", "list", "--client-ip", "172.16.30.1").stdout.splitlines()
    assert table[0].split()[:5] == ["TIME", "ID", "OUTCOME", "STATUS", "REASON"]
    assert decision_id in table[1] and " allow " in table[1]
    got = authz(server, "decisions", "get", decision_id).stdout
    assert f"id: {decision_id}" in got and "reason: ok: Every check of the route passed." in got
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHZ_")}
    env.update(AUTHZ_ADMIN_ADDR=server.addr, AUTHZ_ADMIN_TOKEN=server.token)
    watch = subprocess.Popen(
        [str(venv_bin("authz")), "decisions", "watch", "--json", "--count", "2", "--identity", "ip:172.16.30.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while watch.poll() is None and time.monotonic() < deadline:
            ext_check(server, "/v1/watched", "172.16.30.2")
            time.sleep(0.1)
        out, err = watch.communicate(timeout=10)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert watch.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 2 and all(line["decision"]["client_ip"] == "172.16.30.2" for line in lines)


def test_decisions_explain_stage_by_stage(server: Server) -> None:
    table = authz(server, "decisions", "explain", "--host", "api.example.com", "--path", "/v1/explained", "--source", "172.16.31.1").stdout
    assert table.splitlines()[0].startswith("allow 200 ok (route api, dry run explain-")
    assert any(line.split()[:2] == ["route", "matched"] for line in table.splitlines())
    as_json = json.loads(authz(server, "decisions", "explain", "--json", "--host", "api.example.com", "--path", "/nowhere").stdout)
    assert as_json["decision"]["reason"] == "route.no_match"
    check = {"attributes": {"source": {"address": {"socket_address": {"address": "172.16.31.2", "port_value": 1}}}, "request": {"http": {"method": "GET", "host": "api.example.com", "path": "/v1/x"}}}}
    from_envoy = json.loads(authz(server, "decisions", "explain", "--json", "--check-request", "-", stdin=json.dumps(check)).stdout)
    assert (from_envoy["decision"]["route"], from_envoy["decision"]["client_ip"]) == ("api", "172.16.31.2")
    # nothing was spent: three real checks still pass on that address's quota of 3
    assert authz(server, "client", "show", "ip:172.16.31.1", "--json").stdout.count('"remaining": "3"') == 1


def test_client_show_and_reset(server: Server) -> None:
    for _ in range(2):
        ext_check(server, "/v1/c", "172.16.32.1")
    shown = json.loads(authz(server, "client", "show", "ip:172.16.32.1", "--json").stdout)
    assert shown["quotas"] == [{"quota": "per-ip", "key": "per-ip:ip:172.16.32.1", "remaining": "1", "capacity": "3", "reset_ms": shown["quotas"][0]["reset_ms"]}]
    assert shown["requests"] >= 1.9
    table = authz(server, "client", "show", "ip:172.16.32.1").stdout
    assert "identity: ip:172.16.32.1" in table and "per-ip:ip:172.16.32.1" in table
    assert "pieces of state removed" in authz(server, "client", "reset", "ip:172.16.32.1").stdout
    after = json.loads(authz(server, "client", "show", "ip:172.16.32.1", "--json").stdout)
    assert after["quotas"][0]["remaining"] == "3" and "requests" not in after
    bad = authz(server, "client", "show", "planet:mars", check=False)
    assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr and "ip, subnet, subnet6, sub, key, session, device" in bad.stderr
    assert ("ops", "client.reset", "ip:172.16.32.1") in [(r["who"], r["action"], r["target"]) for r in audit_records(server.log)]


def test_keys_create_list_rotate_revoke_export(keyed: Server) -> None:
    server = keyed
    created = authz(server, "keys", "create", "partner", "--algorithm", "hmac-sha256")
    secret_lines = [line for line in created.stdout.splitlines() if line.startswith("secret: ")]
    assert len(secret_lines) == 1 and len(secret_lines[0]) > len("secret: ") + 20
    assert created.stderr.strip()  # the notice: shown once
    secret = secret_lines[0].removeprefix("secret: ")
    listed = authz(server, "keys", "list").stdout
    assert "partner.v1" in listed and secret not in listed
    as_json = json.loads(authz(server, "keys", "list", "--json").stdout)
    assert "partner" in [k["name"] for k in as_json["keys"]] and secret not in json.dumps(as_json)
    rotated = json.loads(authz(server, "keys", "rotate", "partner", "--json").stdout)
    assert rotated["key_id"] == "partner.v2" and rotated["secret"] and rotated["secret"] != secret
    revoked = json.loads(authz(server, "keys", "revoke", "partner", "--version", "1", "--json").stdout)
    assert {v["key_id"]: v["status"] for v in revoked["versions"]}["partner.v1"] == "revoked"
    signer = json.loads(authz(server, "keys", "create", "signer", "--algorithm", "ed25519", "--json").stdout)
    assert "PRIVATE KEY" in signer["secret"]
    jwks = json.loads(authz(server, "keys", "export").stdout)
    assert [k["kid"] for k in jwks["keys"]] == ["signer.v1"]
    for text in (server.proc.log_text(), server.log.read_text()):
        assert secret not in text and rotated["secret"] not in text
    assert {r["target"] for r in audit_records(server.log, 5) if r["action"].startswith("key")} >= {"partner", "signer"}


def test_apikeys_create_list_rotate_revoke(keyed: Server) -> None:
    server = keyed
    created = authz(server, "apikeys", "create", "--name", "billing-export", "--owner", "alice", "--tier", "gold")
    key_line = next(line for line in created.stdout.splitlines() if line.startswith("key: "))
    key = key_line.removeprefix("key: ")
    listed = json.loads(authz(server, "apikeys", "list", "--owner", "alice", "--json").stdout)
    key_id = listed["api_keys"][0]["id"]
    assert key.startswith(f"azk_{key_id}_")
    assert [(k["id"], k["owner"], k["tier"], k["status"]) for k in listed["api_keys"]] == [(key_id, "alice", "gold", "active")]
    assert key not in json.dumps(listed)
    rotated = json.loads(authz(server, "apikeys", "rotate", key_id, "--json").stdout)
    assert rotated["key"].startswith("azk_") and rotated["key"] != key
    revoked = json.loads(authz(server, "apikeys", "revoke", key_id, "--json").stdout)
    assert revoked["status"] == "revoked"
    table = authz(server, "apikeys", "list").stdout
    assert key_id in table and "revoked" in table
    for text in (server.proc.log_text(), server.log.read_text()):
        assert key not in text and rotated["key"] not in text


def test_the_cli_over_mtls(tmp_path: Path) -> None:
    ca = Authority(tmp_path, "admin-ca")
    cert = ca.issue("admin-server", ips=("127.0.0.1",))
    ops = ca.issue("oncall", client=True)
    (tmp_path / "policy.yaml").write_text(POLICY)
    log = tmp_path / "decisions.jsonl"
    proc, _ = start_authz(
        tmp_path / "policy.yaml", "--no-http", "--decision-log", str(log),
        "--admin-tls-cert", str(cert.cert), "--admin-tls-key", str(cert.key), "--admin-client-ca", str(ca.path),
    )  # fmt: skip
    with proc:
        server = Server(proc, "unused-token-value", tmp_path, log)
        tls = ("--ca", str(ca.path), "--server-name", "authz.internal")
        refused = authz(server, "policy", "show", *tls, token=False, check=False)
        assert refused.returncode == 1 and "cannot reach the admin API" in refused.stderr
        reply = json.loads(authz(server, "policy", "reload", "--json", *tls, "--cert", str(ops.cert), "--key", str(ops.key), token=False).stdout)
        assert reply["result"] == "unchanged"
        assert [(r["who"], r["auth"], r["action"]) for r in audit_records(log)] == [("oncall", "certificate", "policy.reload")]


def test_with_a_keystore_the_keys_services_are_listed_by_reflection(keyed: Server) -> None:
    done = subprocess.run(
        [str(venv_bin("grpcurl")), "-plaintext", "-max-time", "5", "-H", f"authorization: Bearer {keyed.token}", keyed.addr, "list"],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert {"authz.admin.v1.Keys", "authz.admin.v1.ApiKeys", "authz.admin.v1.Decisions"} <= set(done.stdout.split())


def test_with_workers_worker_0_alone_serves_the_admin_api(tmp_path: Path) -> None:
    from tests.support.redis import RedisServer

    (tmp_path / "policy.yaml").write_text(POLICY)
    token = new_token()
    base = free_pair()  # worker i serves gRPC on the base port + i
    admin_port = free_port()
    while admin_port in (base, base + 1):
        admin_port = free_port()
    with RedisServer() as redis:
        proc, grpc_port = start_authz(
            tmp_path / "policy.yaml", "--no-http", "--workers", "2", "--store", redis.url, "--admin-listen", f"{LOOPBACK}:{admin_port}",
            port=base, env={"AUTHZ_ADMIN_TOKENS": f"ops:{token}"},
        )  # fmt: skip
        proc.ports["admin"] = admin_port
        with proc:
            from tests.support.procs import wait_grpc_serving

            wait_grpc_serving(f"{LOOPBACK}:{grpc_port + 1}", proc=proc)  # worker 1 started: it did not fight for the admin port
            server = Server(proc, token, tmp_path, tmp_path / "none")
            assert json.loads(authz(server, "policy", "show", "--json").stdout)["routes"] == ["api"]
            log = proc.log_text()
            assert log.count("admin API on 127.0.0.1:") == 1 and "exited with" not in log
            assert token not in log
