"""A circuit breaker for the store, so that a dead store costs microseconds, not timeouts.

    closed --(threshold consecutive failures)--> open --(open_ms passed)--> half-open
    half-open --(the probe succeeds)--> closed
    half-open --(the probe fails)--> open again, for twice as long (capped at max_open_ms)

While open, ``allow()`` says no and the caller fails the batch at once (the
route's ``on_store_error`` decides what that means). In half-open one call
at a time is let through as a probe; the others are refused until it ends.
Time is the monotonic clock: a breaker measures waiting, not dates.
"""

from __future__ import annotations

import time
from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class Breaker:
    """:param threshold: consecutive failures that open the circuit
    :param open_ms: how long it stays open before the first probe
    :param max_open_ms: the longest it stays open after repeated failed probes
    """

    __slots__ = ("threshold", "open_ms", "max_open_ms", "_clock", "state", "failures", "_until", "_wait_ms", "_probing", "opened")

    def __init__(
        self,
        threshold: int = 5,
        open_ms: int = 500,
        max_open_ms: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.open_ms = open_ms
        self.max_open_ms = max_open_ms
        self._clock = clock
        self.state = CLOSED
        self.failures = 0
        self._until = 0.0
        self._wait_ms = open_ms
        self._probing = False
        #: how many times the circuit opened (metrics, tests)
        self.opened = 0

    def allow(self) -> bool:
        """May a call go to the backend now?"""
        state = self.state
        if state == CLOSED:
            return True
        if state == OPEN:
            if self._clock() < self._until:
                return False
            self.state = HALF_OPEN
            self._probing = False
        if self._probing:  # one probe at a time
            return False
        self._probing = True
        return True

    def success(self) -> None:
        if self.state != CLOSED:
            self.state = CLOSED
            self._wait_ms = self.open_ms
        self.failures = 0
        self._probing = False

    def failure(self) -> None:
        self._probing = False
        if self.state == HALF_OPEN:
            self._wait_ms = min(self._wait_ms * 2, self.max_open_ms)
            self._open()
            return
        self.failures += 1
        if self.state == CLOSED and self.failures >= self.threshold:
            self._open()

    def abandon(self) -> None:
        """A call ended without an answer either way (cancelled): a later call may probe."""
        self._probing = False

    def _open(self) -> None:
        self.state = OPEN
        self.opened += 1
        self._until = self._clock() + self._wait_ms / 1000
