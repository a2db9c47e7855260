"""Hypothesis settings for the fuzz tests (a profile, and the number of examples).

``make test`` runs a few hundred examples per test, derandomized (the same
examples every run, so CI is deterministic) and with no example database.
``make fuzz`` sets ``AUTHZ_FUZZ_EXAMPLES`` (default 20000) and a random
``--hypothesis-seed`` that it prints; a failure prints the falsifying example
and a ``@reproduce_failure`` blob. Every example must finish within
``deadline`` (1 s): no input may cost the doors more than that.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, settings

#: examples per test when AUTHZ_FUZZ_EXAMPLES is not set (``make test``)
DEFAULT_EXAMPLES = 300
FUZZ_EXAMPLES = int(os.environ.get("AUTHZ_FUZZ_EXAMPLES", "0") or 0)

settings.register_profile(
    "authz-fuzz",
    deadline=timedelta(seconds=1),
    derandomize=not FUZZ_EXAMPLES,  # make fuzz: a fresh seed (from --hypothesis-seed) per run
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def fuzz_settings(share: float = 1.0, **over: Any) -> settings:
    """The profile with a number of examples: ``share`` of AUTHZ_FUZZ_EXAMPLES, or of the default."""
    total = FUZZ_EXAMPLES or DEFAULT_EXAMPLES
    return settings(settings.get_profile("authz-fuzz"), max_examples=max(10, int(total * share)), **over)
