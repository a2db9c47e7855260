"""make simulate: the targets hold on several seeds, and they are not met without the reputation stage."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from sim.__main__ import misses, run
from sim.world import World

SCALE = 0.2


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_the_targets_hold_for_several_seeds(seed: int) -> None:
    t = run(seed, SCALE, 60)
    assert t.legit_requests > 5000 and sum(n for n, _ in t.after_grace.values()) > 1000
    assert set(t.after_grace) >= {"scraper", "credential-stuffer", "token-sharer", "ipv6-rotator", "fake-agent"}
    assert t.agent_requests > 0
    assert misses(t) == []


def test_without_reputation_the_attackers_get_through() -> None:
    world = World(11, scale=SCALE)
    try:
        policy = world.engine.policy
        world.engine.policy = dataclasses.replace(policy, routes=tuple(dataclasses.replace(r, reputation=None) for r in policy.routes))
        world.populate()
        t = asyncio.run(world.run())
    finally:
        world.close()
    missed = misses(t)
    assert any(m.startswith("scraper:") for m in missed) and any(m.startswith("credential-stuffer:") for m in missed)
