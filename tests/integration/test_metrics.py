"""Prometheus metrics of a real ``authz serve``, scraped over HTTP: exact counts, bounded labels, workers summed."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from authz.decision import REASONS, Outcome
from tests.support.procs import (
    ENVOY_YAML,
    LOOPBACK,
    ROOT,
    EchoUpstream,
    free_port,
    http_request,
    render_envoy_config,
    start_authz,
    start_envoy,
)
from tests.support.redis import RedisServer

POLICY = Path(__file__).parent / "policies" / "through_envoy.yaml"
ROUTES = {"health", "admin", "limited", "api"}
DASHBOARD = ROOT / "examples" / "grafana-dashboard.json"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=5) as reply:
        assert reply.status == 200
        return str(reply.read().decode())


def scrape(port: int) -> Samples:
    out: Samples = {}
    for fam in text_string_to_metric_families(scrape_text(port)):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def decisions(samples: Samples) -> dict[tuple[str, str, str], float]:
    return {
        (d["outcome"], d["reason"], d["route"]): v
        for (name, labels), v in samples.items()
        if name == "authz_decisions_total"
        for d in [dict(labels)]
    }


@pytest.mark.envoy
def test_a_load_through_envoy_shows_exactly_its_counts(echo_upstream: EchoUpstream) -> None:
    echo_upstream.reset()
    authz, grpc_port = start_authz(POLICY, "--no-http")
    ports = {"admin": free_port(), "ingress": free_port(), "upstream": echo_upstream.port, "authz": grpc_port}
    envoy, _ = start_envoy(render_envoy_config(ENVOY_YAML, ports))
    metrics = authz.ports["metrics"]
    with authz, envoy:
        url = f"http://{LOOPBACK}:{ports['ingress']}"
        plan = (
            [("/v1/items", "127.0.0.1")] * 150
            + [("/admin/users", "127.0.0.2")] * 40
            + [("/limited/x", "127.0.0.3")] * 5
            + [("/v1/items", "127.0.0.66")] * 10  # on the deny list
        )
        seen: list[float] = []
        done = threading.Event()

        def watch() -> None:  # scrapes while the load runs: the count only grows
            while not done.is_set():
                seen.append(sum(decisions(scrape(metrics)).values()))
                time.sleep(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            with ThreadPoolExecutor(4) as pool:
                statuses = Counter(pool.map(lambda p: http_request(url + p[0], source=p[1])[0], plan))
        finally:
            done.set()
            watcher.join(timeout=10)
        assert statuses == {200: 153, 403: 50, 429: 2}
        assert seen == sorted(seen) and all(n <= len(plan) for n in seen)
        got = scrape(metrics)
        assert decisions(got) == {
            ("allow", "ok", "api"): 150,
            ("deny", "route.deny", "admin"): 40,
            ("allow", "ok", "limited"): 3,
            ("limit", "quota.exhausted", "limited"): 2,
            ("deny", "ip.denied", "api"): 10,
        }
        assert value(got, "authz_stage_duration_seconds_count", stage="route") == len(plan)
        assert value(got, "authz_stage_duration_seconds_count", stage="respond") == len(plan)
        assert value(got, "authz_stage_duration_seconds_count", stage="apply") == 155  # the checks with quotas
        assert value(got, "authz_store_duration_seconds_count", store="memory") == 155
        assert value(got, "authz_decision_duration_seconds_count", door="grpc") == len(plan)
        assert value(got, "authz_store_up", store="memory") == 1
        assert value(got, "authz_store_breaker_state", store="memory", state="closed") == 1
        (info,) = [dict(labels) for (name, labels), v in got.items() if name == "authz_policy_info"]
        assert re.fullmatch(r"[0-9a-f]{12}", info["version"])


HOSTILE = [
    "/{{7*7}}", "/%0d%0aX-Evil:%201", "/" + "A" * 3000, "/v1/%E2%80%AE", "/admin/../etc/passwd", "/;jsessionid=1",
]


def test_hostile_requests_create_no_label_value(tmp_path: Path) -> None:
    authz, _ = start_authz(POLICY)
    with authz:
        base = f"http://{LOOPBACK}:{authz.ports['http']}"
        for mode in ("/envoy", "/forward-auth", "/nginx", "/nowhere"):
            for i, path in enumerate(HOSTILE):
                headers = [
                    ("x-forwarded-uri", path), ("x-forwarded-method", "EVIL" + str(i)), ("x-original-uri", path),
                    ("x-original-method", "GET"), ("x-forwarded-host", f"evil-{i}.example"), ("user-agent", f"label-{i}"),
                    ("x-route", f"route-{i}"), ("x-authz-route", "api-evil"),
                ]  # fmt: skip
                http_request(base + mode + (path if mode == "/envoy" else "/"), headers=headers)
            http_request(base + mode + "/v1/x", headers=[("host", "a b")])  # malformed
        text = scrape_text(authz.ports["metrics"])
        for needle in ("evil", "EVIL", "label-", "route-", "7*7", "passwd", "jsessionid", "AAAA", "%E2%80%AE"):
            assert needle not in text, needle
        got = decisions(scrape(authz.ports["metrics"]))
        assert got  # the hostile requests were decisions
        for outcome, reason, route in got:
            assert outcome in {o.value for o in Outcome}
            assert reason in REASONS
            assert route in ROUTES | {""}


def test_the_dashboard_asks_only_for_metrics_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert len(exprs) >= 10
    authz, _ = start_authz(POLICY, "--no-http")
    with authz:
        text = scrape_text(authz.ports["metrics"])
    exposed: set[str] = set()
    for fam in text_string_to_metric_families(text):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}[fam.type]
        exposed |= {fam.name + s for s in suffixes}
    asked = {name for expr in exprs for name in re.findall(r"\bauthz_[a-z_]+", expr)}
    assert asked, exprs
    assert asked <= exposed, sorted(asked - exposed)
    for var in dashboard.get("templating", {}).get("list", []):
        for name in re.findall(r"\bauthz_[a-z_]+", str(var.get("query", ""))):
            assert name in exposed, name


def test_two_workers_are_one_scrape_and_a_restarted_worker_loses_no_count(tmp_path: Path) -> None:
    from tests.integration.test_shared_state import free_pair

    with RedisServer() as redis:
        base = free_pair()
        proc, _ = start_authz(POLICY, "--store", redis.url, "--workers", "2", "--store-deadline", "200", port=base)
        with proc:
            http = f"http://{LOOPBACK}:{proc.ports['http']}/envoy"
            metrics = proc.ports["metrics"]
            from tests.integration.test_shared_state import wait_serving

            wait_serving(base + 1)

            def total(expected: int) -> dict[tuple[str, str, str], float]:
                deadline = time.monotonic() + 10
                while True:
                    got = decisions(scrape(metrics))
                    if sum(got.values()) >= expected or time.monotonic() > deadline:
                        return got
                    time.sleep(0.1)

            with ThreadPoolExecutor(4) as pool:
                statuses = list(pool.map(lambda i: http_request(f"{http}/v1/items/{i}")[0], range(80)))
            assert statuses == [200] * 80
            assert total(80) == {("allow", "ok", "api"): 80}
            samples = scrape(metrics)
            assert value(samples, "authz_workers") == 2
            assert value(samples, "authz_store_up", store="redis") == 2  # a gauge counts the workers
            time.sleep(0.8)  # every worker has written its numbers since
            pids = [int(m) for m in re.findall(r"worker 0 started \(pid (\d+)\)", proc.log_text())]
            import os

            os.kill(pids[-1], signal.SIGKILL)
            proc.wait_for_log("worker 0 exited", timeout=10)
            deadline = time.monotonic() + 15
            while len(re.findall(r"worker 0 started", proc.log_text())) < 2:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            wait_serving(base)
            assert sum(decisions(scrape(metrics)).values()) == 80  # the dead worker's counts stay
            for i in range(20):
                assert http_request(f"{http}/v1/more/{i}")[0] == 200
            assert total(100) == {("allow", "ok", "api"): 100}
            time.sleep(0.7)
            assert sum(decisions(scrape(metrics)).values()) == 100  # and nothing is counted twice
