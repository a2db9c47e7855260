"""Prometheus metrics on a listener of their own (``--metrics-listen``, loopback by default).

Nothing here runs per request but ``DecisionMetrics.record`` (a dict entry
plus one, a bucket plus one): every other number is read from the objects
that keep it (the engine's stage histograms, the store's latency, errors and
breaker, the decision log's counters, the access log service's, the
certificate sets, the policy's JWT providers) when ``/metrics`` is scraped.

Label values come from the policy and the code only: route names of the
running policy, reason codes of the registry, outcomes, stages, error type
names, provider names. A request cannot create a series: a decision whose
route or reason is not one of those is counted under ``other`` (and at most
``MAX_SERIES`` series exist per metric).

Workers (``--workers N``): each worker writes its numbers every
``SNAPSHOT_INTERVAL_S`` to ``<dir>/worker-<i>.json`` in a temporary
directory the supervisor made; the supervisor serves ``/metrics`` with every
worker's numbers summed (a gauge then counts processes: ``authz_store_up``
is the number of workers that reach the store). A worker that dies leaves
its counters to the supervisor, which keeps adding them, so totals never go
backwards when a worker is restarted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from authz import __version__
from authz.decision import REASONS, Decision, Outcome
from authz.stats import LATENCY_BOUNDS_NS, STAGES, Histogram

if TYPE_CHECKING:
    from authz.server.app import App

log = logging.getLogger("authz.metrics")

#: how often a worker hands its numbers to the supervisor
SNAPSHOT_INTERVAL_S = 0.5
#: series one metric may have at most (decisions: outcome x reason x route)
MAX_SERIES = 5000
#: buckets of the reputation score (0-100)
SCORE_BOUNDS = (10, 20, 30, 40, 50, 60, 70, 80, 90, 100)
#: reputation actions (stages/reputation.py ACTIONS)
ACTIONS = frozenset({"tag", "throttle", "tarpit", "challenge", "decoy", "deny"})
OTHER = "other"
_OUTCOMES = frozenset(o.value for o in Outcome)
_DOORS = frozenset({"grpc", "http"})
_BREAKER_STATES = ("closed", "open", "half_open")

# A family: {"name", "type": counter|gauge|histogram, "help", "labels": [...], "samples": [[values, v]]}
# where v is a number, or for a histogram {"bounds": [...], "scale": s, "counts": [...], "sum": x}.
Family = dict[str, Any]


class DecisionMetrics:
    """The per-decision numbers: decisions by outcome, reason and route; durations; scores; actions.

    :param routes: the route names of the running policy (read when a new series would start)
    """

    def __init__(self, routes: Callable[[], frozenset[str]]) -> None:
        self._routes = routes
        self.decisions: dict[tuple[str, str, str], int] = {}
        self.duration = {door: Histogram(LATENCY_BOUNDS_NS, 1e-9) for door in sorted(_DOORS)}
        self.scores = Histogram(SCORE_BOUNDS, 1.0)
        self.actions: dict[str, int] = {}

    def record(self, d: Decision) -> None:
        # Outcome and Reason are str subclasses: they key the dict as their codes, without a lookup
        key: tuple[str, str, str] = (d.outcome, d.reason, d.route)
        decisions = self.decisions
        n = decisions.get(key)
        if n is None:
            key = self._admit(key)
            n = decisions.get(key, 0)
        decisions[key] = n + 1
        hist = self.duration.get(d.door)
        if hist is not None:
            hist.observe(d.duration_us * 1000)
        if d.score is not None:
            self.scores.observe(d.score)
            for name, value in d.signals:
                if name == "reputation.action":
                    action = value if value in ACTIONS else OTHER
                    self.actions[action] = self.actions.get(action, 0) + 1

    def _admit(self, key: tuple[str, str, str]) -> tuple[str, str, str]:
        outcome, reason, route = str.__str__(key[0]), str.__str__(key[1]), key[2]
        if outcome not in _OUTCOMES:
            outcome = OTHER
        if reason not in REASONS:
            reason = OTHER
        if route and route not in self._routes():
            route = OTHER
        key = (outcome, reason, route)
        if key not in self.decisions and len(self.decisions) >= MAX_SERIES:
            return (OTHER, OTHER, OTHER)
        return key


def _counter(name: str, help_: str, labels: list[str], samples: Iterable[tuple[list[str], float]]) -> Family:
    return {"name": name, "type": "counter", "help": help_, "labels": labels, "samples": [[list(v), n] for v, n in samples]}


def _gauge(name: str, help_: str, labels: list[str], samples: Iterable[tuple[list[str], float]]) -> Family:
    return {"name": name, "type": "gauge", "help": help_, "labels": labels, "samples": [[list(v), n] for v, n in samples]}


def _hist(h: Histogram) -> dict[str, Any]:
    return {"bounds": list(h.bounds), "scale": h.scale, "counts": list(h.counts), "sum": h.sum}


def _histogram(name: str, help_: str, labels: list[str], samples: Iterable[tuple[list[str], Histogram]]) -> Family:
    return {"name": name, "type": "histogram", "help": help_, "labels": labels, "samples": [[list(v), _hist(h)] for v, h in samples]}


def collect(app: App) -> list[Family]:
    """Every metric of one process, as plain data (JSON-able)."""
    from authz.server import tls

    m = app.metrics
    engine = app.engine
    policy = engine.policy
    store = app.store
    health = store.health()
    out: list[Family] = [
        _gauge("authz_build_info", "authz's version (the value is 1).", ["version"], [([__version__], 1)]),
        _counter("authz_decisions", "Decisions by outcome, reason code and route.", ["outcome", "reason", "route"],
                 ((list(k), n) for k, n in m.decisions.items())),
        _histogram("authz_decision_duration_seconds", "Time to decide one request, by door.", ["door"],
                   (([door], h) for door, h in m.duration.items())),
        _histogram("authz_stage_duration_seconds", "Time spent in each stage of a decision (stages a decision reached).",
                   ["stage"], (([name], engine.stage_stats.histogram(i)) for i, name in enumerate(STAGES, 1))),
        _histogram("authz_store_duration_seconds", "Round trip of one answered store batch.", ["store"], [([store.kind], store.latency)]),
        _counter("authz_store_errors", "Store batches that failed, by kind (error type, timeout, circuit_open).", ["store", "error"],
                 (([store.kind, kind], n) for kind, n in store.errors.items())),
        _gauge("authz_store_up", "1 when the store is serving (circuit not open, last probe answered).", ["store"],
               [([store.kind], 1 if health.serving else 0)]),
        _gauge("authz_store_breaker_state", "The store's circuit breaker: 1 for its current state.", ["store", "state"],
               (([store.kind, s], 1 if health.breaker == s else 0) for s in _BREAKER_STATES)),
        _counter("authz_store_breaker_opened", "Times the store's circuit opened.", ["store"], [([store.kind], store.breaker.opened)]),
        _histogram("authz_reputation_score", "Reputation scores of scored decisions (0-100).", [], [([], m.scores)]),
        _counter("authz_reputation_actions", "Reputation actions taken (not in monitor mode), by action.", ["action"],
                 (([a], n) for a, n in m.actions.items())),
        _counter("authz_decision_log_written", "Decision log lines written.", [], [([], app.decisions.written)]),
        _counter("authz_decision_log_dropped", "Decision log lines dropped because the writer fell behind.", [], [([], app.decisions.dropped)]),
        _counter("authz_decision_log_rotations", "Decision log files started anew (reopened or rotated).", [], [([], app.decisions.rotations)]),
        _counter("authz_access_log_entries", "Envoy access log entries received (backend answers).", [], [([], app.access_log.entries)]),
        _counter("authz_access_log_recorded", "Access log entries recorded as reputation evidence.", [], [([], app.access_log.recorded)]),
        _counter("authz_evidence_dropped", "Background evidence batches dropped (too many pending, or the store failed).", [],
                 [([], engine.records_dropped)]),
        _counter("authz_tarpits_skipped", "Tarpit delays not held because too many were held at once.", [], [([], engine.tarpits_skipped)]),
        _gauge("authz_policy_info", "The running policy's version (the value is 1).", ["version"], [([policy.version], 1)]),
        _gauge("authz_policy_loaded_timestamp_seconds", "When the running policy was loaded (Unix time).", [], [([], app.reloader.loaded_at)]),
        _counter("authz_policy_reloads", "Policy reloads, by result (loaded, unchanged, refused).", ["result"],
                 (([r], n) for r, n in app.reloader.counts.items())),
    ]
    hits, misses, fetches, failures = [], [], [], []
    for name, auth in policy.authenticators.items():
        if hasattr(auth, "hits") and hasattr(auth, "misses"):
            hits.append(([name], auth.hits))
            misses.append(([name], auth.misses))
        remote = getattr(getattr(auth, "p", None), "remote", None)
        if remote is not None and hasattr(remote, "fetches"):
            fetches.append(([name], remote.fetches))
            failures.append(([name], remote.failures))
    out += [
        _counter("authz_jwt_cache_hits", "Tokens found verified in a JWT provider's cache.", ["provider"], hits),
        _counter("authz_jwt_cache_misses", "Tokens a JWT provider had to verify.", ["provider"], misses),
        _counter("authz_jwks_fetches", "Remote JWKS fetches started.", ["provider"], fetches),
        _counter("authz_jwks_fetch_failures", "Remote JWKS fetches that failed.", ["provider"], failures),
    ]
    certs = tls.certificates()
    out += [
        _gauge("authz_tls_certificate_expiry_timestamp_seconds", "When the certificate in use expires (Unix time).", ["listener"],
               (([c.name], c.material.not_after) for c in certs)),
        _counter("authz_tls_reloads", "Certificates adopted from changed files.", ["listener"], (([c.name], c.reloads) for c in certs)),
        _counter("authz_tls_reload_failures", "Changed certificate files that were refused.", ["listener"],
                 (([c.name], c.failures) for c in certs)),
    ]  # fmt: skip
    return out


# -- merging (workers) and exposition -------------------------------------------------


def merge(snapshots: Iterable[list[Family]], *, gauges: bool = True) -> list[Family]:
    """Sum families with the same name, sample by sample (histograms bucket by bucket)."""
    merged: dict[str, Family] = {}
    index: dict[str, dict[tuple[str, ...], Any]] = {}
    for families in snapshots:
        for fam in families:
            if fam["type"] == "gauge" and not gauges:
                continue
            name = fam["name"]
            if name not in merged:
                merged[name] = {**fam, "samples": []}
                index[name] = {}
            samples = index[name]
            for values, v in fam["samples"]:
                key = tuple(values)
                have = samples.get(key)
                if have is None:
                    samples[key] = json.loads(json.dumps(v)) if isinstance(v, dict) else v
                elif isinstance(v, dict):
                    if have["bounds"] == v["bounds"]:
                        have["counts"] = [a + b for a, b in zip(have["counts"], v["counts"], strict=True)]
                        have["sum"] += v["sum"]
                else:
                    samples[key] = have + v
    for name, fam in merged.items():
        fam["samples"] = [[list(k), v] for k, v in index[name].items()]
    return list(merged.values())


def to_prometheus(families: list[Family]) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    for fam in families:
        kind, name, help_, labels = fam["type"], fam["name"], fam["help"], fam["labels"]
        if kind == "counter":
            c = CounterMetricFamily(name, help_, labels=labels)
            for values, v in fam["samples"]:
                c.add_metric(values, v)
            yield c
        elif kind == "gauge":
            g = GaugeMetricFamily(name, help_, labels=labels)
            for values, v in fam["samples"]:
                g.add_metric(values, v)
            yield g
        else:
            h = HistogramMetricFamily(name, help_, labels=labels)
            for values, v in fam["samples"]:
                scale = v["scale"]
                running, buckets = 0, []
                for bound, n in zip([*v["bounds"], None], v["counts"], strict=True):
                    running += n
                    buckets.append((_le(bound, scale), running))
                h.add_metric(values, buckets, sum_value=v["sum"] * scale)
            yield h


def _le(bound: float | None, scale: float) -> str:
    if bound is None:
        return "+Inf"
    return f"{bound * scale:.9g}"


class _Collector:
    def __init__(self, families: Callable[[], list[Family]]) -> None:
        self._families = families

    def collect(self) -> Iterator[Any]:
        yield from to_prometheus(self._families())


def registry(families: Callable[[], list[Family]]) -> Any:
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Collector(families))
    return reg


# -- one process: the listener in the event loop ---------------------------------------


class MetricsServer:
    """``GET /metrics`` (Prometheus text format) on its own listener, in authz's event loop."""

    def __init__(self, app: App, listen: str) -> None:
        from prometheus_client import make_asgi_app

        self.listen = listen
        self.asgi = make_asgi_app(registry(lambda: collect(app)))
        self.port = 0
        self._server: Any = None
        self._sock: Any = None

    async def start(self) -> None:
        import uvicorn

        from authz.server.http import _bind
        from authz.settings import split_hostport

        host, port = split_hostport(self.listen, "metrics_listen")
        self._sock = _bind(host, port, field="metrics_listen")
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(
            self.asgi, loop="none", lifespan="off", ws="none", interface="asgi3", access_log=False, log_config=None,
            server_header=False, proxy_headers=False, timeout_keep_alive=30, timeout_graceful_shutdown=1,
        )  # fmt: skip
        config.load()
        self._server = uvicorn.Server(config)
        self._server.lifespan = config.lifespan_class(config)
        await self._server.startup(sockets=[self._sock])
        log.info("authz serving metrics on http://%s:%d/metrics", host, self.port)

    async def stop(self) -> None:
        if self._server is not None and self._server.started:
            await self._server.shutdown(sockets=[self._sock])
            self._server.started = False


# -- workers: snapshots for the supervisor ----------------------------------------------


async def write_snapshots(app: App, directory: str, index: int, interval: float = SNAPSHOT_INTERVAL_S) -> None:
    """Write this worker's numbers to ``directory`` every ``interval`` s (until cancelled, then once more)."""
    path = Path(directory) / f"worker-{index}.json"
    try:
        while True:
            await _write_snapshot(app, path)
            await asyncio.sleep(interval)
    finally:
        try:
            _write_file(path, json.dumps({"pid": os.getpid(), "families": collect(app)}))
        except OSError:
            pass


async def _write_snapshot(app: App, path: Path) -> None:
    text = json.dumps({"pid": os.getpid(), "families": collect(app)})  # collected on the loop: a consistent view
    try:
        await asyncio.to_thread(_write_file, path, text)
    except OSError as exc:
        log.warning("cannot write metrics for the supervisor: %s", exc.strerror or exc)


def _write_file(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class Aggregator:
    """The supervisor's view: every live worker's snapshot, plus the counters of workers that died."""

    def __init__(self, directory: str) -> None:
        self.dir = Path(directory)
        self._lock = threading.Lock()
        self._carried: list[Family] = []

    def _read(self, path: Path) -> list[Family]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        families = data.get("families", []) if isinstance(data, dict) else []
        return families if isinstance(families, list) else []

    def worker_exited(self, index: int) -> None:
        """Keep what worker ``index`` counted (not its gauges) and forget its file."""
        path = self.dir / f"worker-{index}.json"
        families = self._read(path)
        with self._lock:
            self._carried = merge([self._carried, families], gauges=False)
        try:
            path.unlink()
        except OSError:
            pass

    def families(self) -> list[Family]:
        snapshots = [self._read(p) for p in sorted(self.dir.glob("worker-*.json"))]
        with self._lock:
            carried = self._carried
        families = merge([*snapshots, carried])
        families.append(_gauge("authz_workers", "Worker processes whose metrics this answer sums.", [], [([], len(snapshots))]))
        return families


def serve_aggregate(aggregator: Aggregator, listen: str) -> Any:
    """Start the supervisor's ``/metrics`` listener (a thread); returns the HTTP server."""
    from prometheus_client import start_http_server

    from authz.errors import ConfigError
    from authz.settings import split_hostport

    host, port = split_hostport(listen, "metrics_listen")
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry(aggregator.families))
    except OSError as exc:
        raise ConfigError("settings", 0, "metrics_listen", f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    log.info("authz serving the metrics of every worker on http://%s:%d/metrics", host, server.server_address[1])
    return server


__all__ = ["MAX_SERIES", "Aggregator", "DecisionMetrics", "MetricsServer", "collect", "merge", "registry", "serve_aggregate", "to_prometheus", "write_snapshots"]
