"""Fixtures for tests that run real processes: authz, Envoy, an echo upstream.

The expensive parts (Envoy, authz) are module-scoped: a test file starts them
once. A failing test's report carries the log tail of every process that was
running (or stopped) during it.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import EchoUpstream, Proc, failure_sections, start_authz

POLICIES = Path(__file__).parent / "policies"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        since = getattr(item, "_procs_since", 0.0)
        for title, text in failure_sections(since):
            report.sections.append((title, text))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item._procs_since = time.monotonic()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def echo_upstream() -> Iterator[EchoUpstream]:
    """A real HTTP server on loopback that echoes what it received and counts requests."""
    with EchoUpstream() as upstream:
        yield upstream


@pytest.fixture
def upstream(echo_upstream: EchoUpstream) -> EchoUpstream:
    """The module's echo upstream, with its request count reset for this test."""
    echo_upstream.reset()
    return echo_upstream


@pytest.fixture(scope="module")
def authz_factory() -> Iterator[Any]:
    """Start ``authz serve`` processes (policy, extra args, optional port); all stopped at the end."""
    started: list[Proc] = []

    def start(policy: str | Path, *extra: str, port: int | None = None) -> tuple[Proc, int]:
        proc, grpc_port = start_authz(policy, *extra, port=port)
        started.append(proc)
        return proc, grpc_port

    yield start
    for proc in reversed(started):
        proc.stop()
