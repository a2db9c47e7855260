"""bench/results.py, bench/k6.py and the envoy-workers.yaml rendering: the pure parts of the bench's reporting."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bench import k6, results
from bench.__main__ import latency_table
from bench.meter import WorkerCount
from bench.scenarios import SCENARIOS, Row, workers_envoy_config
from tests.support.procs import ROOT

REFS = {k: ref for k, (_, ref) in SCENARIOS.items()}


def _run(*, h_rps: float, i_rps: float, i_server_us: float, i_rt: float, p99: float = 2.0, extra: list[Row] | None = None) -> dict:
    lat = k6.Latency(rate=int(i_rps / 2), requests=int(i_rps / 2) * 5, dropped=0, failed=0, p50_ms=1.0, p99_ms=p99, p999_ms=4.0)
    rows = [
        Row("h", "Envoy -> authz gRPC, two quotas, memory store", rps=h_rps, decisions=8000, cpu_us={"server": 460.0, "envoy": 335.0}),
        Row(
            "i", "Envoy -> authz gRPC, two quotas, Redis", rps=i_rps, decisions=7000,
            cpu_us={"server": i_server_us, "envoy": 368.0, "redis": 77.0}, rt_per_decision=i_rt, latency=lat,
            workers=[WorkerCount(0, "abc", 7000, i_server_us)],
        ),
        *(extra or []),
    ]  # fmt: skip
    return results.document(started="2026-12-01T00:00:00Z", header=["h"], settings={"duration_s": 8}, rows=rows, refs=REFS)


def _line(text: str, key: str) -> str:
    (line,) = [ln for ln in text.splitlines() if ln.startswith(f"({key})")]
    return line


def test_a_document_survives_json(tmp_path: Path) -> None:
    doc = _run(h_rps=1000, i_rps=800, i_server_us=700, i_rt=1.0)
    path = tmp_path / "r" / "run.json"
    results.save(doc, path)
    back = results.load(path)
    assert back["rows"][1]["ref"] == "h"
    assert back["rows"][1]["latency"]["p99_ms"] == 2.0
    assert back["rows"][1]["workers"][0] == {"index": 0, "endpoint": "abc", "decisions": 7000, "cpu_us_per_decision": 700}
    path.write_text('{"version": 99}')
    with pytest.raises(ValueError):
        results.load(path)


def test_compare_flags_more_cpu_per_decision_and_a_lost_share() -> None:
    a = _run(h_rps=1000, i_rps=800, i_server_us=700, i_rt=1.0)
    b = _run(h_rps=1000, i_rps=600, i_server_us=840, i_rt=2.0, p99=2.1)
    text = results.compare(a, b)
    i = _line(text, "i")
    assert "0.75!" in i  # throughput B/A
    assert "0.80 -> 0.60 (-25%)! of (h)" in i  # the within-run share of the memory-store twin
    assert "700 -> 840 (+20%)!" in i  # CPU µs per decision of authz
    assert "368 -> 368 (+0%)" in i and "368 -> 368 (+0%)!" not in i
    assert "1.00 -> 2.00 (+100%)!" in i  # a second round trip per decision is always flagged
    assert "2.00 -> 2.10 (+5%)" in i and "(+5%)!" not in i  # p99 within the threshold
    h = _line(text, "h")
    assert "1.00" in h and "!" not in h


def test_compare_names_rows_present_in_one_run_only() -> None:
    a = _run(h_rps=1000, i_rps=800, i_server_us=700, i_rt=1.0)
    b = _run(h_rps=1000, i_rps=800, i_server_us=700, i_rt=1.0, extra=[Row("m", "workers", rps=900)])
    text = results.compare(a, b)
    assert "only in B" in _line(text, "m")
    assert "!" not in _line(text, "i")


def test_compare_ignores_p99_when_k6_could_not_offer_the_rate() -> None:
    a = _run(h_rps=1000, i_rps=800, i_server_us=700, i_rt=1.0)
    b = _run(h_rps=1000, i_rps=800, i_server_us=700, i_rt=1.0, p99=500.0)
    b["rows"][1]["latency"]["dropped"] = 10_000
    assert "500" not in _line(results.compare(a, b), "i")


def test_compare_memory_and_micro() -> None:
    a = _run(h_rps=1000, i_rps=800, i_server_us=700, i_rt=1.0)
    b = _run(h_rps=1000, i_rps=800, i_server_us=700, i_rt=1.0)
    a["memory"] = {"identities": 100, "rss_before_bytes": 0, "rss_after_bytes": 30000, "redis": {"memory_usage_bytes": 228, "used_memory_delta_bytes": 340}}
    b["memory"] = {"identities": 100, "rss_before_bytes": 0, "rss_after_bytes": 40000, "redis": {"memory_usage_bytes": 228, "used_memory_delta_bytes": 340}}
    a["micro"] = [{"module": "micro_engine", "measurement": "decide", "value": 10.0, "unit": "µs/op"}]
    b["micro"] = [{"module": "micro_engine", "measurement": "decide", "value": 8.0, "unit": "µs/op"}]
    text = results.compare(a, b)
    assert "300 -> 400 (+33%)!" in text
    assert "228 -> 228 (+0%)" in text
    assert "10.00 -> 8.00 (-20%) µs/op" in text  # faster: not flagged


def test_k6_summary_parsing_and_the_dropped_rule() -> None:
    summary = {
        "metrics": {
            "http_req_duration": {"p(50)": 0.85, "p(99)": 10.3, "p(99.9)": 25.0, "max": 30.0, "count": 3280},
            "http_reqs": {"count": 3280, "rate": 656.0},
            "http_req_failed": {"passes": 2, "fails": 3278, "value": 0.0006},
            "dropped_iterations": {"count": 3, "rate": 0.6},
        }
    }
    lat = k6.parse_summary(summary, rate=656)
    assert (lat.requests, lat.dropped, lat.failed) == (3280, 3, 2)
    assert (lat.p50_ms, lat.p99_ms, lat.p999_ms) == (0.85, 10.3, 25.0)
    assert lat.offered_fully
    summary["metrics"]["dropped_iterations"]["count"] = 79_003
    assert not k6.parse_summary(summary, rate=34_632).offered_fully
    del summary["metrics"]["dropped_iterations"]
    assert k6.parse_summary(summary, rate=656).dropped == 0


def test_latency_table_leaves_out_percentiles_k6_could_not_measure() -> None:
    fine = k6.Latency(656, 3280, 0, 0, 0.85, 10.3, 25.0)
    bound = k6.Latency(34_632, 24_884, 79_003, 0, 177.0, 586.0, 596.0)
    text = latency_table([Row("c", "gRPC", rps=1312, latency=fine), Row("a", "Envoy alone", rps=69_263, latency=bound), Row("g", "direct", rps=2800)])
    assert "25.00" in _line(text, "c")
    assert "k6-bound" in _line(text, "a") and "586" not in text
    assert "no Envoy" in _line(text, "g")


def test_workers_config_is_the_shipped_file_with_ports_and_a_direct_response() -> None:
    shipped = yaml.safe_load((ROOT / "envoy" / "envoy-workers.yaml").read_text())
    two = yaml.safe_load(workers_envoy_config(20000, 20001, [30000, 30001]))
    one = yaml.safe_load(workers_envoy_config(20000, 20001, [30000]))

    def endpoints(conf: dict) -> list[int]:
        (authz,) = [c for c in conf["static_resources"]["clusters"] if c["name"] == "authz"]
        return [e["endpoint"]["address"]["socket_address"]["port_value"] for e in authz["load_assignment"]["endpoints"][0]["lb_endpoints"]]

    assert endpoints(two) == [30000, 30001] and endpoints(one) == [30000]
    assert two["admin"]["address"]["socket_address"]["port_value"] == 20001
    hcm = two["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    (route,) = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert "route" not in route and route["direct_response"]["status"] == 200
    # the filters, the access log and the authz cluster's settings are the shipped file's
    shipped_hcm = shipped["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["http_filters"] == shipped_hcm["http_filters"]
    assert hcm["access_log"] == shipped_hcm["access_log"]
    (authz,) = [c for c in two["static_resources"]["clusters"] if c["name"] == "authz"]
    (shipped_authz,) = [c for c in shipped["static_resources"]["clusters"] if c["name"] == "authz"]
    assert {k: v for k, v in authz.items() if k != "load_assignment"} == {k: v for k, v in shipped_authz.items() if k != "load_assignment"}


def test_a_tiny_change_reads_as_plus_zero() -> None:
    a = _run(h_rps=1000, i_rps=800, i_server_us=700.0, i_rt=1.0)
    b = _run(h_rps=1000, i_rps=800, i_server_us=699.9, i_rt=1.0)
    line = _line(results.compare(a, b), "i")
    assert "700 -> 700 (+0%)" in line and "-0%" not in line
