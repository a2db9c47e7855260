"""Where decisions go after they are made, off the hot path.

``DecisionLog.record(decision)`` costs an append to two deques. A background
task drains the pending ones every ``flush_interval`` seconds, serializes them
to JSON lines and writes them from a worker thread, so a slow disk never
stalls a check. The ring keeps the most recent decisions for the admin API.

When the writer falls behind by more than ``max_pending`` decisions, the
oldest pending lines are dropped and counted (``dropped``) rather than letting
memory grow: losing log lines under overload is better than losing the
process.

Rotation: ``reopen()`` (SIGUSR1, after logrotate moved the file) makes the
writer close and open the path again before its next write; with
``max_bytes`` the writer itself moves a file that reached the size to
``<path>.1`` (replacing an older ``.1``) and starts a new one. Both happen in
the writer thread, between two batches. ``serialize`` turns a decision into
the JSON object of its line (``Decision.to_record``, or the Elastic Common
Schema view).

The admin API's audit records (who changed what: a key, an API key, a
client's state, the policy) go into the same file, one JSON line each with
``"event": "audit"`` (``audit(record)``), queued and written by the same
background writer; ``serialize_audit`` may reshape them (ECS). They are
never dropped for overload: changes are rare and each one must be traceable.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable
from typing import IO, Any

from authz.decision import Decision

log = logging.getLogger("authz.decisionlog")


class DecisionLog:
    def __init__(
        self,
        path: str | None = None,
        *,
        ring_size: int = 10_000,
        max_pending: int = 100_000,
        flush_interval: float = 0.2,
        serialize: Callable[[Decision], dict[str, Any]] = Decision.to_record,
        max_bytes: int = 0,
        serialize_audit: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        """:param path: JSON lines file, ``-`` for standard output, None for no file.
        :param serialize: a decision's line, as a JSON-able dict
        :param max_bytes: move the file to ``<path>.1`` when it reaches this size (0: never)
        """
        self.path = path
        self._serialize = serialize
        self.max_bytes = max_bytes
        self._reopen = False
        #: files started anew (reopened or rotated)
        self.rotations = 0
        self.ring: deque[Decision] = deque(maxlen=ring_size)
        self._by_id: dict[str, Decision] = {}
        self._pending: deque[Decision] = deque()
        self._audits: deque[dict[str, Any]] = deque()
        self._serialize_audit = serialize_audit
        self._max_pending = max_pending
        self._flush_interval = flush_interval
        self._task: asyncio.Task[None] | None = None
        self._file: IO[str] | None = None
        self.dropped = 0
        self.written = 0
        self.audits_written = 0

    def record(self, decision: Decision) -> None:
        ring = self.ring
        if len(ring) == ring.maxlen:
            self._by_id.pop(ring[0].id, None)
        ring.append(decision)
        self._by_id[decision.id] = decision
        if self.path is not None:
            if len(self._pending) >= self._max_pending:
                self._pending.popleft()
                self.dropped += 1
            self._pending.append(decision)

    def audit(self, record: dict[str, Any]) -> None:
        """Queue an audit record (a JSON-able dict with ``"event": "audit"``) for the file, if there is one."""
        if self.path is not None:
            self._audits.append(record)

    def get(self, decision_id: str) -> Decision | None:
        return self._by_id.get(decision_id)

    def recent(self) -> Iterable[Decision]:
        """Newest first."""
        return reversed(self.ring)

    async def start(self) -> None:
        if self.path is None or self._task is not None:
            return
        if self.path == "-":
            self._file = sys.stdout
        else:
            # opened off the event loop, closed in stop()
            self._file = await asyncio.to_thread(open, self.path, "a", encoding="utf-8")
        self._task = asyncio.create_task(self._run(), name="decision-log")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self.flush()
        if self._file is not None and self._file is not sys.stdout:
            self._file.close()
        self._file = None

    async def flush(self) -> None:
        if (not self._pending and not self._audits) or self._file is None:
            return
        batch = list(self._pending)
        self._pending.clear()
        audits = list(self._audits)
        self._audits.clear()
        serialize = self._serialize
        text = "".join(json.dumps(serialize(d), separators=(",", ":")) + "\n" for d in batch)
        shape = self._serialize_audit
        text += "".join(json.dumps(shape(a) if shape else a, separators=(",", ":"), default=str) + "\n" for a in audits)
        await asyncio.to_thread(self._write, text)
        self.written += len(batch)
        self.audits_written += len(audits)

    def reopen(self) -> None:
        """Close and open the file again before the next write (SIGUSR1, after logrotate moved it)."""
        self._reopen = True

    def _write(self, text: str) -> None:
        assert self._file is not None
        if self._file is not sys.stdout and self.path not in (None, "-"):
            if self._reopen or self._file.closed:  # asked to, or the last open failed
                self._reopen = False
                self._start_file()
            elif self.max_bytes and self._file.tell() >= self.max_bytes:
                self._file.close()
                os.replace(self.path, f"{self.path}.1")
                self._start_file()
        self._file.write(text)
        self._file.flush()

    def _start_file(self) -> None:
        assert self.path is not None and self._file is not None
        self._file.close()
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open until stop(); an OSError leaves it closed, tried again next batch
        self.rotations += 1

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._flush_interval)
            try:
                await self.flush()
            except OSError as exc:
                log.error("cannot write the decision log %s: %s", self.path, exc)
