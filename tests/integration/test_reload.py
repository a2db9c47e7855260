"""Hot reload of a real ``authz serve``: the policy and the files it reads, under load, good and bad.

The server watches its files (``--watch``, the default); the tests replace
them the way a deployment does (a new file renamed over the old one) while a
bounded loop of checks runs against the HTTP door, and read the decision log
to see which policy version decided each check.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

from authz.policy.compile import load_policy
from tests.support.certs import replace
from tests.support.procs import LOOPBACK, Proc, http_request, start_authz

POLICY = """\
version: 1
ip_lists:
  blocked: {{file: blocked.txt}}
ip: {{deny: [blocked]}}
routes:
  - name: gate
    match: {{path: {{prefix: /gate/}}}}
    action: {gate}
  - name: api
    match: {{path: {{prefix: /}}}}
    auth: [anonymous]
"""


def write_policy(directory: Path, gate: str) -> Path:
    path = directory / "policy.yaml"
    replace(path, POLICY.format(gate=gate).encode())
    return path


def decisions(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_decisions(path: Path, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        got = decisions(path) if path.exists() else []
        if len(got) >= count or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def start(directory: Path, *extra: str) -> tuple[Proc, Path, str]:
    (directory / "blocked.txt").write_text("# nobody yet\n")
    policy = write_policy(directory, "allow")
    log = directory / "decisions.jsonl"
    proc, _ = start_authz(policy, "--decision-log", str(log), *extra)
    return proc, log, f"http://{LOOPBACK}:{proc.ports['http']}/envoy"


def health(proc: Proc) -> dict[str, Any]:
    body = http_request(f"http://{LOOPBACK}:{proc.ports['http']}/healthz")[2]
    value = json.loads(body)
    assert isinstance(value, dict)
    return value


def test_policy_and_list_changes_under_load_fail_no_check_and_switch_per_decision(tmp_path: Path) -> None:
    proc, log, base = start(tmp_path)
    with proc:
        first = health(proc)["components"]["policy"]["version"]
        results: list[tuple[str, int]] = []
        failures: list[str] = []
        stop = threading.Event()

        def load() -> None:
            deadline = time.monotonic() + 30
            i = 0
            while not stop.is_set() and time.monotonic() < deadline:
                path = "/gate/x" if i % 2 else "/v1/items"
                i += 1
                try:
                    results.append((path, http_request(base + path, timeout=5)[0]))
                except OSError as exc:
                    failures.append(type(exc).__name__)

        threads = [threading.Thread(target=load) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.7)
            written_deny = time.monotonic()
            write_policy(tmp_path, "deny")  # the policy file changes
            deadline = time.monotonic() + 5
            while health(proc)["components"]["policy"]["version"] == first:
                assert time.monotonic() < deadline, "the new policy was not loaded"
                time.sleep(0.02)
            switched_in = time.monotonic() - written_deny
            second = health(proc)["components"]["policy"]["version"]
            time.sleep(0.7)
            replace(tmp_path / "blocked.txt", b"127.0.0.1/32 everyone-here\n")  # a file the policy reads
            deadline = time.monotonic() + 5
            while health(proc)["components"]["policy"]["version"] == second:
                assert time.monotonic() < deadline, "the list change was not loaded"
                time.sleep(0.02)
            third = health(proc)["components"]["policy"]["version"]
            time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=10)
        assert not failures
        assert len(results) >= 100
        assert {status for _, status in results} <= {200, 403}  # never an error, never a dropped check
        got = wait_decisions(log, len(results))
        assert len(got) == len(results)
        versions = [d["policy_version"] for d in got]
        # three versions, each a contiguous run in the log: no check after the switch on the old one
        runs = [v for i, v in enumerate(versions) if i == 0 or versions[i - 1] != v]
        assert runs == [first, second, third]
        for d in got:
            expected = {
                first: "ok",
                second: "route.deny" if d["route"] == "gate" else "ok",
                third: "ip.denied",
            }[d["policy_version"]]
            assert d["reason"] == expected, d
        text = proc.log_text()
        assert text.count("policy reloaded (file changed)") == 2
        ms = [float(line.rsplit(", ", 1)[1].split(" ms")[0]) for line in text.splitlines() if "policy reloaded (file changed)" in line]
        print(f"reload: {len(results)} checks, 3 versions, 0 failures; loads took {ms} ms; switch seen {switched_in:.2f} s after the write")


def test_a_bad_file_changes_nothing_and_is_named_exactly(tmp_path: Path) -> None:
    proc, log, base = start(tmp_path)
    with proc:
        good = health(proc)["components"]["policy"]["version"]
        policy = tmp_path / "policy.yaml"
        replace(policy, POLICY.format(gate="nope").encode())
        message = f"{policy}:8: routes[0].action: must be one of allow, check, deny; got 'nope'"
        line = proc.wait_for_log(message, timeout=5)
        assert "policy reload (file changed) refused, version " + good + " stays in force" in line
        status, _, _ = http_request(base + "/gate/x")
        assert status == 200  # still the old policy: the gate allows
        state = health(proc)["components"]["policy"]
        assert state["version"] == good
        assert state["last_reload"]["result"] == "refused" and state["last_reload"]["error"] == message
        # a bad address list: refused with its own file and line
        replace(tmp_path / "blocked.txt", b"127.0.0.1/32 fine\nnot-an-address\n")
        proc.wait_for_log(f"{tmp_path / 'blocked.txt'}:2", timeout=5)
        time.sleep(1.5)  # the same bad files are not tried again every second
        assert proc.log_text().count("refused, version") == 2
        assert http_request(base + "/v1/items")[0] == 200
        got = wait_decisions(log, 2)
        assert [d["policy_version"] for d in got] == [good, good]


def test_sighup_reloads_when_watching_is_off(tmp_path: Path) -> None:
    proc, log, base = start(tmp_path, "--no-watch")
    with proc:
        write_policy(tmp_path, "deny")
        time.sleep(1.3)
        assert http_request(base + "/gate/x")[0] == 200  # not watched: nothing changed
        proc.signal(signal.SIGHUP)
        proc.wait_for_log("policy reloaded (SIGHUP)", timeout=5)
        assert http_request(base + "/gate/x")[0] == 403
        proc.signal(signal.SIGHUP)
        proc.wait_for_log("policy reload (SIGHUP): version", timeout=5)  # the same content: unchanged


def test_the_version_covers_every_file_the_policy_reads(tmp_path: Path) -> None:
    (tmp_path / "blocked.txt").write_text("192.0.2.0/24 doc\n")
    path = write_policy(tmp_path, "allow")
    one = load_policy(str(path))
    assert one.files == (str(path), str(tmp_path / "blocked.txt"))
    assert load_policy(str(path)).version == one.version  # the same files, the same version
    (tmp_path / "blocked.txt").write_text("192.0.2.0/24 doc\n198.51.100.0/24 doc\n")
    two = load_policy(str(path))
    assert two.version != one.version and len(two.version) == 12
