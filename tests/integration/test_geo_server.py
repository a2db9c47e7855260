"""A real ``authz serve`` with GeoIP databases built here: both doors, and files changed under it.

The databases are written with mmdb-writer and read by the server with
maxminddb; list files and databases are changed while the server runs, and
the server's reloader (every ``--watch-interval``, 0.2 s here) must pick up a
good version, refuse a bad one with its file:line in the log, and keep the
running version.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from envoy.config.core.v3 import address_pb2
from envoy.service.auth.v3 import attribute_context_pb2 as ac
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from tests.support.geo import write_asn_db, write_country_db
from tests.support.procs import LOOPBACK, Proc, start_authz
from tests.support.proxies import fetch

POLICY = """
version: 1
trusted_proxies: [127.0.0.1/32]
ip_lists:
  blocked: {file: blocked.txt}
ip: {deny: [blocked]}
geo:
  country_database: country.mmdb
  asn_database: asn.mmdb
  countries: {deny: [KP]}
routes:
  - name: eu
    match: {path: {prefix: /eu/}}
    auth: [anonymous]
    geo: {countries: {allow: [DE, FR]}}
  - name: api
    auth: [anonymous]
"""
WATCH_INTERVAL_S = 0.2
#: how long a change may take to be in force: a few watch intervals, a loaded machine's margin
RELOAD_WITHIN_S = 10.0


class Server:
    def __init__(self, directory: Path, proc: Proc, grpc_port: int) -> None:
        self.dir = directory
        self.proc = proc
        self.grpc_port = grpc_port
        self.http_port = proc.ports["http"]
        self.channel = grpc.insecure_channel(f"{LOOPBACK}:{grpc_port}")
        self.stub = external_auth_pb2_grpc.AuthorizationStub(self.channel)

    def http(self, path: str, client: str) -> tuple[int, str]:
        """A check through the HTTP door (Envoy convention), the client in X-Forwarded-For."""
        reply = fetch(self.http_port, path=f"/envoy{path}", headers={"host": "api.example.com", "x-forwarded-for": client})
        reason = "ok" if reply.status == 200 else json.loads(reply.body)["error"]
        return reply.status, reason

    def grpc(self, path: str, peer: str) -> tuple[int, str]:
        """A check through the gRPC door, the client as Envoy's downstream peer."""
        req = external_auth_pb2.CheckRequest(
            attributes=ac.AttributeContext(
                source=ac.AttributeContext.Peer(address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address=peer, port_value=1))),
                request=ac.AttributeContext.Request(http=ac.AttributeContext.HttpRequest(method="GET", path=path, host="api.example.com", scheme="https")),
            )
        )
        resp = self.stub.Check(req, timeout=5)
        status = resp.denied_response.status.code if resp.status.code else 200
        return status, resp.dynamic_metadata["reason"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    d = tmp_path_factory.mktemp("geo-server")
    write_country_db(d / "country.mmdb")
    write_asn_db(d / "asn.mmdb")
    (d / "blocked.txt").write_text("192.0.2.0/26 first\n")
    (d / "policy.yaml").write_text(POLICY)
    proc, grpc_port = start_authz(d / "policy.yaml", "--watch-interval", str(WATCH_INTERVAL_S))
    srv = Server(d, proc, grpc_port)
    with proc:
        yield srv
    srv.channel.close()


def eventually(probe: Callable[[], object], expected: object, within: float = RELOAD_WITHIN_S) -> None:
    """Ask ``probe`` until it answers ``expected`` (bounded in time)."""
    deadline = time.monotonic() + within
    last: object = None
    while time.monotonic() < deadline:
        last = probe()
        if last == expected:
            return
        time.sleep(0.1)
    raise AssertionError(f"still {last!r} after {within}s, expected {expected!r}")


def replace_file(path: Path, text: str) -> None:
    """Write a new version and rename it into place, as list updaters do."""
    tmp = path.with_suffix(".new")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.mark.parametrize("door", ["http", "grpc"])
@pytest.mark.parametrize(
    ("path", "client", "status", "reason"),
    [
        ("/v1/items", "198.51.100.7", 200, "ok"),  # DE
        ("/v1/items", "203.0.113.9", 403, "geo.country_denied"),  # KP, globally denied
        ("/v1/items", "2001:db8:ee::1", 403, "geo.country_denied"),  # KP over IPv6
        ("/eu/items", "192.0.2.100", 200, "ok"),  # FR, on the route's allow list
        ("/eu/items", "81.2.69.160", 403, "geo.country_not_allowed"),  # GB
        ("/eu/items", "172.16.0.9", 403, "geo.country_not_allowed"),  # unknown: not on an allow list
        ("/v1/items", "172.16.0.9", 200, "ok"),  # unknown: on no deny list
    ],
)
def test_country_rules_through_both_doors(server: Server, door: str, path: str, client: str, status: int, reason: str) -> None:
    ask = server.http if door == "http" else server.grpc
    assert ask(path, client) == (status, reason)


def test_a_list_file_changed_under_the_server(server: Server) -> None:
    lst = server.dir / "blocked.txt"
    assert server.http("/v1/x", "192.0.2.1") == (403, "ip.denied")
    assert server.grpc("/v1/x", "198.51.100.200") == (200, "ok")

    replace_file(lst, "# moved\n198.51.100.192/26 second\n")
    eventually(lambda: server.grpc("/v1/x", "198.51.100.200"), (403, "ip.denied"))
    assert server.http("/v1/x", "192.0.2.1") == (200, "ok")
    server.proc.wait_for_log("policy reloaded (file changed)", timeout=5)

    # a broken version: refused with its file and line, the running list stays in force
    replace_file(lst, "198.51.100.192/26 second\n192.0.2.0/26 back\n192.0.2.300 typo\n")
    line = server.proc.wait_for_log(f"{lst}:3: cidr: not an IP address or CIDR block: '192.0.2.300'", timeout=RELOAD_WITHIN_S)
    assert "policy reload (file changed) refused" in line and "stays in force" in line
    assert server.http("/v1/x", "192.0.2.1") == (200, "ok")  # nothing of the bad version
    assert server.grpc("/v1/x", "198.51.100.200") == (403, "ip.denied")

    replace_file(lst, "192.0.2.0/26 back\n")
    eventually(lambda: server.http("/v1/x", "192.0.2.1"), (403, "ip.denied"))
    assert server.grpc("/v1/x", "198.51.100.200") == (200, "ok")


def test_a_database_replaced_under_the_server(server: Server) -> None:
    db = server.dir / "country.mmdb"
    assert server.http("/v1/x", "198.51.100.7") == (200, "ok")
    write_country_db(db, {"198.51.100.0/24": "KP", "203.0.113.0/24": "DE"})  # renamed into place
    eventually(lambda: server.http("/v1/x", "198.51.100.7"), (403, "geo.country_denied"))
    assert server.grpc("/v1/x", "203.0.113.9") == (200, "ok")

    # a truncated copy is refused; the database in force keeps answering
    good = db.read_bytes()
    tmp = db.with_suffix(".part")
    tmp.write_bytes(good[: len(good) // 2])
    os.replace(tmp, db)
    line = server.proc.wait_for_log("'country.mmdb': not a MaxMind database", timeout=RELOAD_WITHIN_S)
    assert "policy reload (file changed) refused" in line
    assert server.http("/v1/x", "198.51.100.7") == (403, "geo.country_denied")
    assert server.grpc("/v1/x", "203.0.113.9") == (200, "ok")
    assert server.proc.alive

    write_country_db(db)  # back to the original
    eventually(lambda: server.http("/v1/x", "198.51.100.7"), (200, "ok"))
