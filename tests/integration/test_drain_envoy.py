"""SIGTERM with the default ``--drain``: Envoy moves checks to the other authz before the listener closes.

Two ``authz serve`` processes are the endpoints of envoy/envoy.yaml's authz
cluster. One gets SIGTERM while requests flow; with the default drain, Envoy's
health check (the shipped one: every 1 s, 0.25 s timeout) marks it unhealthy
while it still answers, and not one request fails closed on the way.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request

import click
import pytest
import yaml

from authz.cli import serve
from authz.settings import DEFAULT_DRAIN, Settings
from tests.integration.conftest import POLICIES
from tests.support.procs import (
    ENVOY_YAML,
    LOOPBACK,
    EchoUpstream,
    free_port,
    http_request,
    render_envoy_config,
    running,
    start_authz,
    start_envoy,
)

POLICY = POLICIES / "through_envoy.yaml"


def _seconds(text: str) -> float:
    assert text.endswith("s"), text
    return float(text[:-1])


def _authz_cluster(conf: dict[str, object]) -> dict[str, object]:
    resources = conf["static_resources"]
    assert isinstance(resources, dict)
    (cluster,) = [c for c in resources["clusters"] if c["name"] == "authz"]
    assert isinstance(cluster, dict)
    return cluster


def test_the_default_drain_outlasts_the_shipped_health_check() -> None:
    (check,) = _authz_cluster(yaml.safe_load(ENVOY_YAML.read_text()))["health_checks"]  # type: ignore[misc]
    # one NOT_SERVING answer marks the endpoint unhealthy (unhealthy_threshold counts
    # checks that get no answer); the next check comes within interval + timeout
    detect = _seconds(check["interval"]) + _seconds(check["timeout"])
    assert 2 * detect <= DEFAULT_DRAIN
    assert Settings(config="x").drain == DEFAULT_DRAIN
    (option,) = [p for p in serve.params if p.name == "drain"]
    assert isinstance(option, click.Option) and option.default == DEFAULT_DRAIN


def _health(admin_port: int, authz_port: int) -> dict[str, object]:
    url = f"http://{LOOPBACK}:{admin_port}/clusters?format=json"
    with urllib.request.urlopen(url, timeout=2) as reply:
        data = json.loads(reply.read())
    (cluster,) = [c for c in data["cluster_statuses"] if c["name"] == "authz"]
    for host in cluster["host_statuses"]:
        if host["address"]["socket_address"]["port_value"] == authz_port:
            status = host["health_status"]
            assert isinstance(status, dict)
            return status
    raise AssertionError(f"no authz endpoint on port {authz_port}")


@pytest.mark.envoy
def test_sigterm_moves_traffic_away_before_the_listener_closes() -> None:
    with EchoUpstream() as upstream:
        leaving, leaving_port = start_authz(POLICY, "--no-http", drain=None)  # the server's default drain
        staying, staying_port = start_authz(POLICY, "--no-http")
        ports = {"admin": free_port(), "ingress": free_port(), "upstream": upstream.port, "authz": leaving_port}
        conf = yaml.safe_load(render_envoy_config(ENVOY_YAML, ports))
        cluster = _authz_cluster(conf)
        endpoints = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]  # type: ignore[index]
        endpoints.append({"endpoint": {"address": {"socket_address": {"address": LOOPBACK, "port_value": staying_port}}}})
        # Only the interval used before the cluster carried any traffic is shortened
        # (from 5 s), so the checks reach their 1 s cadence without a wait; interval,
        # timeout and thresholds are the shipped ones.
        cluster["health_checks"][0]["no_traffic_interval"] = "0.2s"  # type: ignore[index]
        envoy, _ = start_envoy(yaml.safe_dump(conf, sort_keys=False))
        with running(leaving, staying, envoy):
            url = f"http://{LOOPBACK}:{ports['ingress']}/api/x"
            warm_until = time.monotonic() + 1.5  # past one check scheduled at the 1 s interval
            while time.monotonic() < warm_until:
                assert http_request(url)[0] == 200
            assert _health(ports["admin"], leaving_port).get("failed_active_health_check") is not True

            leaving.signal(signal.SIGTERM)
            sent_at = time.monotonic()
            statuses: list[int] = []
            marked_after = None
            while leaving.alive:
                assert time.monotonic() < sent_at + DEFAULT_DRAIN + 5, "authz did not exit after its drain"
                statuses.append(http_request(url)[0])
                if marked_after is None and _health(ports["admin"], leaving_port).get("failed_active_health_check"):
                    marked_after = time.monotonic() - sent_at
            exited_after = time.monotonic() - sent_at

            assert leaving.returncode == 0
            assert marked_after is not None, "Envoy never marked the draining authz unhealthy before it exited"
            assert marked_after < DEFAULT_DRAIN <= exited_after
            # not one request met a closed listener (503 ext_authz_error, failing closed)
            assert len(statuses) > 20 and set(statuses) == {200}, statuses
            assert "draining for 3.0s" in leaving.log_text()
            assert http_request(url)[0] == 200  # the other endpoint carries on


def test_a_second_sigterm_ends_the_drain_at_once() -> None:
    proc, _ = start_authz(POLICY, "--no-http", drain=30)
    with proc:
        proc.signal(signal.SIGTERM)
        proc.wait_for_log("draining for 30.0s")
        proc.signal(signal.SIGTERM)
        assert proc.popen is not None
        assert proc.popen.wait(timeout=10) == 0
    assert "second stop signal: ending the drain" in proc.log_text()
    assert "authz stopped" in proc.log_text()
