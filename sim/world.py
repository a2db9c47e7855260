"""The simulated world: a shop API behind authz, its backend, and a seeded crowd of senders.

Every request goes through the real pipeline (``authz.pipeline.Engine``) with
the policy in ``sim/policy.yaml``, on a memory store, at simulated time
(``clock: request``): a simulated hour takes seconds. The backend answers
what the actor asked for (a missing catalogue id is 404, a wrong password
401); its 4xx answers come back to the reputation stage about 0.7 s later,
as Envoy's access log service brings them. Nothing leaves the process.
"""

from __future__ import annotations

import base64
import heapq
import json
import os
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import ed25519

from authz.clock import FixedClock
from authz.decision import Decision, DecisionIds, Outcome
from authz.httpsig.agent import ed25519_jwk, sign_agent_request
from authz.pipeline import Engine
from authz.policy import load_policy
from authz.request import Request
from authz.store import MemoryStore
from sim import actors as a

HERE = Path(__file__).parent
#: simulated start: 2026-06-01 08:00 UTC
T0 = 1_780_300_800_000
ISSUER = "https://id.shop.example/"
AUDIENCE = "shop.example"
AGENT_ORIGIN = "https://agent.example"
#: the backend's 4xx answers reach authz this much later (Envoy's access log buffer)
FEEDBACK_DELAY_MS = 700
COLUMNS = ("allowed", "throttled", "challenged", "denied")
CLASS = {Outcome.ALLOW: "allowed", Outcome.LIMIT: "throttled", Outcome.CHALLENGE: "challenged", Outcome.DENY: "denied", Outcome.ERROR: "denied"}
#: an attacker's first requests are its free sample: the targets count what comes after
GRACE = 50
#: enumerators start somewhere in the catalogue's last ids, and run past its end into 404s
ITEMS_START = a.ITEMS - 600


@dataclass
class Tally:
    """What happened to each traffic class, and to each attacker after its first ``GRACE`` requests."""

    by_class: dict[str, Counter[str]] = field(default_factory=dict)
    legit_requests: int = 0
    legit_affected: int = 0
    agent_requests: int = 0
    agent_affected: int = 0
    #: attacker label -> [requests after the grace, mitigated among them]
    after_grace: dict[str, list[int]] = field(default_factory=dict)
    #: per attacker: [label, requests after grace, mitigated among them]
    attackers: dict[int, list[Any]] = field(default_factory=dict)
    reasons: dict[str, Counter[str]] = field(default_factory=dict)
    decisions: int = 0
    wall_s: float = 0.0

    def add(self, actor: a.Actor, d: Decision, held: bool) -> None:
        cls = CLASS[d.outcome]
        self.by_class.setdefault(actor.label, Counter())[cls] += 1
        self.reasons.setdefault(actor.label, Counter())[d.reason.code] += 1
        self.decisions += 1
        if actor.attack:
            if actor.sent > GRACE:
                counts = self.after_grace.setdefault(actor.label, [0, 0])
                counts[0] += 1
                counts[1] += not d.allowed
                mine = self.attackers.setdefault(id(actor), [actor.label, 0, 0])
                mine[1] += 1
                mine[2] += not d.allowed
            return
        self.legit_requests += 1
        affected = not d.allowed or held
        self.legit_affected += affected
        if actor.verified_agent:
            self.agent_requests += 1
            self.agent_affected += affected

    @property
    def mitigated_share(self) -> float:
        total = sum(n for n, _ in self.after_grace.values())
        return sum(m for _, m in self.after_grace.values()) / total if total else 1.0

    @property
    def affected_share(self) -> float:
        return self.legit_affected / self.legit_requests if self.legit_requests else 0.0

    def worst_attacker(self) -> tuple[str, float]:
        """The attacker (class) with the lowest mitigated share after its grace."""
        worst = ("", 1.0)
        for label, n, m in self.attackers.values():
            if n and m / n < worst[1]:
                worst = (label, m / n)
        return worst

    def to_dict(self) -> dict[str, Any]:
        return {
            "decisions": self.decisions,
            "classes": {label: {c: counts[c] for c in COLUMNS} for label, counts in self.by_class.items()},
            "attack_mitigated_after_grace": round(self.mitigated_share, 5),
            "worst_attacker": self.worst_attacker(),
            "legit_affected": round(self.affected_share, 6),
            "legit_affected_requests": self.legit_affected,
            "verified_agent_affected": self.agent_affected,
            "reasons": {label: dict(r.most_common(6)) for label, r in self.reasons.items()},
        }


class World:
    """One seeded run: the policy's files in a temporary directory, the crowd, the event loop."""

    def __init__(self, seed: int, scale: float = 1.0, minutes: int = 60) -> None:
        self.seed = seed
        self.rng = random.Random(seed)  # noqa: S311 (a simulation: reproducible, not secret)
        self.scale = scale
        self.end_ms = T0 + minutes * 60_000
        self._tmp = tempfile.TemporaryDirectory(prefix="authz-sim-")
        base = Path(self._tmp.name)
        # the secrets change nothing the simulation decides: fresh ones each run
        secret = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
        self.jwt_secret = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
        self.agent_key = ed25519.Ed25519PrivateKey.generate()
        self.forger_key = ed25519.Ed25519PrivateKey.generate()
        (base / "keys.yaml").write_text(f"keys:\n  - {{id: shop-hs, algorithm: HS256, secret: {secret}}}\n")
        (base / "agent.json").write_text(json.dumps({"keys": [ed25519_jwk(self.agent_key)]}))
        (base / "challenge.key").write_text(base64.b64encode(os.urandom(48)).decode() + "\n")  # as `openssl rand -base64 48` writes it
        (base / "policy.yaml").write_text((HERE / "policy.yaml").read_text())
        try:
            self.policy = load_policy(str(base / "policy.yaml"))
        except BaseException:
            self._tmp.cleanup()  # the caller gets no World to close
            raise
        self.clock = FixedClock(T0)
        self.engine = Engine(self.policy, MemoryStore(epoch_ms=T0 - 60_000), clock=self.clock, ids=DecisionIds("sim"))
        self.engine.trust_request_time = True
        self.engine.hold_tarpits = False
        self.tally = Tally()
        self.actors: list[a.Actor] = []
        self._nonce = 0

    def close(self) -> None:
        self._tmp.cleanup()

    def token(self, subject: str) -> str:
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "iat": T0 // 1000 - 60, "exp": T0 // 1000 + 86_400}
        return pyjwt.encode(claims, self.jwt_secret, algorithm="HS256", headers={"kid": "shop-hs"})

    # -- the crowd -------------------------------------------------------------------

    def populate(self) -> None:
        """The brief's traffic classes, their numbers scaled by ``scale``."""
        rng, span = self.rng, self.end_ms - T0

        def n(count: int) -> int:
            return max(1, round(count * self.scale))

        def at() -> int:
            return T0 + rng.randrange(span * 9 // 10)

        add = self.actors.append
        for _ in range(n(300)):
            add(a.Human(at(), rng.randrange(15, 60), a.residential(rng)))
        for nat in range(n(2)):  # a carrier NAT address with hundreds of people behind it
            peer = f"100.64.{nat}.1"
            for _ in range(n(250)):
                add(a.Human(at(), rng.randrange(15, 60), peer, label="nat-human"))
        for i in range(n(30)):
            add(a.PowerUser(at(), rng.randrange(200, 600), a.residential(rng), self.token(f"power-{i}")))
        for i in range(n(6)):
            add(a.Integration(T0 + rng.randrange(60_000), 10_000, a.datacenter(rng), self.token(f"svc-{i}"), period_ms=rng.choice((2000, 5000, 10_000))))
        for _ in range(n(60)):
            add(a.TypoLogin(at(), rng.randrange(10, 40), a.residential(rng), typos=rng.choice((1, 1, 2))))
        for _ in range(n(3)):
            add(a.SignedAgent(at(), rng.randrange(300, 1500), a.datacenter(rng), AGENT_ORIGIN))
        # attackers
        for _ in range(n(6)):
            add(a.Scraper(at(), rng.randrange(300, 1500), a.datacenter(rng), headless=rng.random() < 0.5, first_id=rng.randrange(1, ITEMS_START)))
        for _ in range(n(2)):
            add(a.Stuffer(at(), rng.randrange(800, 2000)))
        for i in range(n(4)):
            add(a.TokenSharer(at(), rng.randrange(300, 900), self.token(f"shared-{i}"), [a.residential(rng) for _ in range(40)]))
        for i in range(n(3)):
            add(a.V6Rotator(at(), rng.randrange(300, 1000), f"2001:db8:{i:x}:{rng.randrange(65536):x}::/64"))
        for _ in range(n(4)):
            add(a.LowAndSlow(T0 + rng.randrange(60_000), 150, a.residential(rng), first_id=rng.randrange(1, ITEMS_START)))
        for i in range(n(4)):
            add(a.FakeAgent(at(), rng.randrange(200, 800), a.datacenter(rng), forge=i % 2 == 1, origin=AGENT_ORIGIN))

    # -- the loop --------------------------------------------------------------------

    def request(self, actor: a.Actor, send: a.Send, now: int) -> Request:
        headers: dict[str, str] = {}
        pairs = list(send.headers)
        if send.sign_as:
            self._nonce += 1
            key = self.forger_key if send.forge else self.agent_key
            kid = ed25519_jwk(self.agent_key)["kid"]  # a forger names the real agent's key
            url = f"https://shop.example{send.path}"
            pairs += sign_agent_request(send.method, url, pairs, key=key, key_id=kid, agent=send.sign_as, created=now // 1000, nonce=f"n{self.seed}-{self._nonce}")
        for name, value in pairs:
            name = name.lower()
            headers[name] = value if name not in headers else f"{headers[name]}, {value}"
        path, _, query = send.path.partition("?")
        return Request(
            method=send.method, path=path, query=query, has_query=bool(query), host="shop.example", scheme="https",
            headers=headers, peer_ip=send.peer, time_ms=now, door="sim",
        )  # fmt: skip

    async def run(self) -> Tally:
        started = time.perf_counter()
        events: list[tuple[int, int, int, Any]] = []  # (time, order, kind, payload); kind 0 feedback, 1 request
        order = 0
        for actor in self.actors:
            heapq.heappush(events, (actor.first(), order, 1, actor))
            order += 1
        engine = self.engine
        while events:
            now, _, kind, payload = heapq.heappop(events)
            if now > self.end_ms:
                break
            self.clock.ms = now
            if kind == 0:
                engine.backend_answered(*payload)
                await engine.settle()
                continue
            actor: a.Actor = payload
            send = actor.request(now, self.rng)
            if send is None:
                continue
            d = await engine.decide(self.request(actor, send, now))
            await engine.settle()  # what this request revealed is recorded before the next one
            held = any(name == "reputation.action" and value == "tarpit" for name, value in d.signals)
            self.tally.add(actor, d, held)
            status = send.backend if d.allowed else 0
            if 400 <= status < 500 and d.feedback:
                heapq.heappush(events, (now + FEEDBACK_DELAY_MS, order, 0, (d.feedback, status)))
                order += 1
            actor.answered(d, status)
            heapq.heappush(events, (now + actor.gap(self.rng), order, 1, actor))
            order += 1
        self.tally.wall_s = time.perf_counter() - started
        return self.tally

