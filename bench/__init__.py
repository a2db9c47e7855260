"""Benchmarks for authz (not tests): load through a real Envoy with wrk, direct gRPC load, micro benchmarks.

``python -m bench`` (``make bench``) runs every scenario in one go and prints
one table, so that every ratio compares numbers of the same run on the same
machine. See docs/benchmarks.md for what each scenario measures.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH_POLICY = HERE / "policies" / "bench.yaml"
