"""Operational logs as JSON lines, the decision log in ECS field names, its rotation and reopening."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from authz.clock import FixedClock
from authz.decision import DecisionIds
from authz.decisionlog import DecisionLog
from authz.pipeline import Engine
from authz.policy.compile import load_policy
from authz.request import Request
from authz.server.ecs import to_ecs
from authz.server.logs import JsonFormatter, _QueueHandler
from authz.store import MemoryStore

T0 = 1_764_547_200_000  # 2025-12-01T00:00:00Z
POLICY = """\
version: 1
quotas:
  q: {limit: 100, window: 1m, by: client}
routes:
  - name: admin
    match: {path: {prefix: /admin/}}
    action: deny
  - name: api
    match: {path: {prefix: /}}
    auth: [anonymous]
    quota: [q]
"""


def engine(tmp_path: Path) -> Engine:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return Engine(load_policy(str(path)), MemoryStore(epoch_ms=T0), clock=FixedClock(T0), ids=DecisionIds("feedc0ffee00"))


def request(path: str, **kw: object) -> Request:
    headers = {"host": "api.example.com:8443", "user-agent": "curl/8.5"}
    return Request(
        method="GET", path=path, host="api.example.com:8443", headers=headers, peer_ip="198.51.100.7", door="grpc", request_id="rq-1", **kw,  # type: ignore[arg-type]
    )


async def test_the_ecs_view_maps_each_field(tmp_path: Path) -> None:
    e = engine(tmp_path)
    allowed = await e.decide(request("/v1/items"))
    denied = await e.decide(request("/admin/x"))
    doc = to_ecs(allowed)
    assert doc["@timestamp"] == "2025-12-01T00:00:00.000Z"
    assert doc["event"]["id"] == allowed.id
    assert (doc["event"]["action"], doc["event"]["outcome"], doc["event"]["reason"]) == ("allow", "success", "ok")
    assert doc["event"]["type"] == ["allowed"] and doc["event"]["duration"] == allowed.duration_us * 1000
    assert doc["http"] == {"request": {"method": "GET", "id": "rq-1"}, "response": {"status_code": 200}}
    assert doc["url"] == {"path": "/v1/items", "domain": "api.example.com", "port": 8443}
    assert doc["source"] == {"ip": "198.51.100.7"}
    assert doc["user_agent"] == {"original": "curl/8.5"}
    assert doc["rule"] == {"name": "api", "version": e.policy.version}
    assert doc["authz"]["door"] == "grpc" and doc["authz"]["auth_method"] == "anonymous"
    no = to_ecs(denied)
    assert (no["event"]["action"], no["event"]["outcome"], no["event"]["reason"], no["event"]["type"]) == ("deny", "failure", "route.deny", ["denied"])
    assert no["http"]["response"]["status_code"] == 403 and no["rule"]["name"] == "admin"
    assert "user" not in no
    json.dumps(doc)  # JSON-able as it is


async def test_every_decision_names_its_policy_version(tmp_path: Path) -> None:
    e = engine(tmp_path)
    d = await e.decide(request("/v1/items"))
    assert d.policy_version == e.policy.version and len(d.policy_version) == 12
    assert d.to_record()["policy_version"] == e.policy.version
    from authz.decision import REQUEST_MALFORMED

    bad = e.malformed(request("/"), REQUEST_MALFORMED, "test")
    assert bad.policy_version == e.policy.version


async def test_the_decision_log_rotates_at_its_size_and_reopens_on_request(tmp_path: Path) -> None:
    e = engine(tmp_path)
    path = tmp_path / "decisions.jsonl"
    dlog = DecisionLog(str(path), serialize=to_ecs, max_bytes=4096, flush_interval=60)
    await dlog.start()
    try:
        for _ in range(3):
            for _ in range(15):
                dlog.record(await e.decide(request("/v1/items")))
            await dlog.flush()
        # each batch of 15 ECS lines is over 4 KiB: each later batch starts a new file, the last one kept as .1
        assert len((tmp_path / "decisions.jsonl.1").read_text().splitlines()) == 15
        assert len(path.read_text().splitlines()) == 15
        assert dlog.rotations == 2
        for line in (tmp_path / "decisions.jsonl.1").read_text().splitlines():
            assert json.loads(line)["event"]["dataset"] == "authz.decision"
        assert path.stat().st_size < 4096 + 15 * 2000
        # logrotate moves the file away, then SIGUSR1: the next batch goes to a new file at the path
        path.rename(tmp_path / "moved.jsonl")
        dlog.reopen()
        dlog.record(await e.decide(request("/v1/items")))
        await dlog.flush()
        assert len(path.read_text().splitlines()) == 1
    finally:
        await dlog.stop()
    assert dlog.written == 46


async def test_a_failed_reopen_is_tried_again_and_loses_only_its_batch(tmp_path: Path) -> None:
    e = engine(tmp_path)
    path = tmp_path / "decisions.jsonl"
    dlog = DecisionLog(str(path), flush_interval=60)
    await dlog.start()
    try:
        path.rename(tmp_path / "away.jsonl")
        path.mkdir()  # something in the way: the reopen fails
        dlog.reopen()
        dlog.record(await e.decide(request("/v1/items")))
        with pytest.raises(IsADirectoryError):
            await dlog.flush()
        path.rmdir()
        dlog.record(await e.decide(request("/v1/items")))
        await dlog.flush()  # the file is opened again at the next batch
        assert len(path.read_text().splitlines()) == 1
    finally:
        await dlog.stop()


def test_json_log_lines_are_one_object_each_with_extra_fields() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("authz.test-json")
    logger.propagate = False
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.info("policy reloaded: %s", "v2", extra={"event": "policy.reloaded", "version": "abc123abc123"})
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("it failed\non two lines")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "policy reloaded: v2" and first["log.level"] == "info" and first["log.logger"] == "authz.test-json"
    assert first["event.action"] == "policy.reloaded" and first["policy.version"] == "abc123abc123"
    assert first["@timestamp"].endswith("Z")
    assert second["message"] == "it failed\non two lines" and "ValueError: boom" in second["error.stack_trace"]


def test_the_queue_keeps_the_traceback_apart_from_the_message() -> None:
    import queue

    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    handler = _QueueHandler(q)
    try:
        raise KeyError("k")
    except KeyError:
        record = logging.LogRecord("authz.x", logging.ERROR, __file__, 1, "failed %s", ("now",), __import__("sys").exc_info())
    handler.emit(record)
    got = q.get_nowait()
    assert got.getMessage() == "failed now"
    assert got.exc_info is None and got.exc_text and "KeyError" in got.exc_text
    line = json.loads(JsonFormatter().format(got))
    assert line["message"] == "failed now" and "KeyError" in line["error.stack_trace"]
