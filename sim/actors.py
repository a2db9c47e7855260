"""The traffic classes of the simulation: who sends what, how often, and what they do with the answers.

Every actor is driven by the world's event loop: ``first()`` is when it
starts, ``request(now, rng)`` what it sends next (None: it is done), and
``answered(decision, status)`` what it learns from the answer (a session
cookie, a refusal). The world's random generator is the only source of
randomness, so a seed fixes the whole run.

Legitimate classes (``attack = False``) and attackers (``attack = True``)
are the ones of the brief: people at human pace, many people behind one
carrier-NAT address, power users with high honest rates, server-to-server
integrations with valid keys and a perfectly regular cadence, people who
mistype their password, signed AI agents; scrapers with jitter and
enumeration, credential stuffers rotating residential addresses, token
sharers, IPv6 /64 rotators, low-and-slow bots, fake agents with copied user
agents or forged signatures.
"""

from __future__ import annotations

import ipaddress
import math
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

#: the catalogue the backend knows (ids 1..ITEMS); other ids are 404
ITEMS = 5000

CHROME_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
CHROME_JA4 = "t13d1516h2_8daaf6152771_02713d6af862"
PYTHON_UA = "python-requests/2.32.3"
PYTHON_JA4 = "t13d181100_85036bcba153_d41ae481755e"
GO_JA4 = "t13d190900_9dc949149365_97f8aa674fd9"
APP_UA = "ShopApp/4.2 (Android 14; okhttp/4.12.0)"
GPTBOT_UA = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)"
AGENT_UA = "ExampleAgent/1.0 (+https://agent.example/bot)"

BROWSER_HEADERS = (("accept", "text/html,application/json;q=0.9,*/*;q=0.8"), ("accept-language", "en-GB,en;q=0.9"), ("accept-encoding", "gzip, br"))


@dataclass
class Send:
    """One request an actor sends."""

    method: str
    path: str
    peer: str
    headers: list[tuple[str, str]]
    #: what the backend would answer if the request reached it (the actor knows what it asks for)
    backend: int = 200
    #: sign it as this Web Bot Auth agent (the world holds the key), or forge its signature
    sign_as: str = ""
    forge: bool = False


def residential(rng: random.Random) -> str:
    """An address of a consumer network (a /24 of its own, mostly)."""
    return f"{rng.choice((24, 47, 50, 67, 68, 71, 73, 76, 81, 86, 90, 92, 98, 99))}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def datacenter(rng: random.Random) -> str:
    return f"{rng.choice((34, 35, 52, 54, 104, 138, 142, 159, 167, 178))}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def think(rng: random.Random, mean_s: float, sigma: float = 0.9) -> int:
    """A human pause: log-normal around ``mean_s`` seconds, in ms (at least 300 ms)."""
    mu = math.log(mean_s) - sigma * sigma / 2
    return max(300, int(rng.lognormvariate(mu, sigma) * 1000))


def item(rng: random.Random, missing: float = 0.01) -> tuple[str, int]:
    """A catalogue page as a person reaches it: a real item, now and then a dead link."""
    if rng.random() < missing:
        return f"/api/items/{rng.randrange(ITEMS + 1000, ITEMS + 90_000)}", 404
    return f"/api/items/{rng.randrange(1, ITEMS + 1)}", 200


@dataclass
class Actor(ABC):
    """One sender. ``label`` is its traffic class; ``sent`` counts its requests."""

    label: str
    attack: bool
    start_ms: int
    budget: int
    sent: int = 0
    state: dict[str, Any] = field(default_factory=dict)
    #: a verified agent: it must never be refused
    verified_agent: bool = False

    def first(self) -> int:
        return self.start_ms

    @abstractmethod
    def request(self, now: int, rng: random.Random) -> Send | None:
        """The actor's next request at ``now``, or None when it has nothing to send."""

    @abstractmethod
    def gap(self, rng: random.Random) -> int:
        """Milliseconds until the actor's next request."""

    def answered(self, decision: Any, status: int) -> None:
        """What the answer teaches the sender: by default, a session cookie on the first allow."""
        if decision.allowed and "session" not in self.state:
            self.state["session"] = f"s{id(self):x}{self.sent}"

    def browser(self) -> list[tuple[str, str]]:
        headers = [("user-agent", CHROME_UA), *BROWSER_HEADERS, ("x-ja4-fingerprint", CHROME_JA4)]
        if "session" in self.state:
            headers.append(("cookie", f"session={self.state['session']}; theme=dark"))
        return headers


class Human(Actor):
    """A person in a browser: home page, catalogue pages, now and then a checkout, human pauses."""

    def __init__(self, start_ms: int, budget: int, peer: str, label: str = "human") -> None:
        super().__init__(label, False, start_ms, budget)
        self.peer = peer

    def request(self, now: int, rng: random.Random) -> Send | None:
        if self.sent >= self.budget:
            return None
        self.sent += 1
        if self.sent == 1:
            return Send("GET", "/", self.peer, self.browser())
        roll = rng.random()
        if roll < 0.05 and self.sent > 3:
            return Send("POST", "/checkout", self.peer, self.browser())
        if roll < 0.15:
            return Send("GET", f"/api/search?q=w{rng.randrange(500)}", self.peer, self.browser())
        path, status = item(rng)
        return Send("GET", path, self.peer, self.browser(), backend=status)

    def gap(self, rng: random.Random) -> int:
        return think(rng, 7.0)


class TypoLogin(Human):
    """A person who mistypes their password once or twice, then logs in, then browses."""

    def __init__(self, start_ms: int, budget: int, peer: str, typos: int) -> None:
        super().__init__(start_ms, budget, peer, label="typo-login")
        self.typos = typos

    def request(self, now: int, rng: random.Random) -> Send | None:
        n = self.sent  # this request's index: the home page, the failed logins, the login, then browsing
        if n >= self.budget or n == 0 or n > self.typos + 1:
            return super().request(now, rng)
        self.sent += 1
        return Send("POST", "/login", self.peer, self.browser(), backend=401 if n <= self.typos else 200)

    def gap(self, rng: random.Random) -> int:
        return think(rng, 5.0) if self.sent <= self.typos + 1 else think(rng, 7.0)


class PowerUser(Actor):
    """A signed-in user of the app with a high honest rate: a token, about two requests a second."""

    def __init__(self, start_ms: int, budget: int, peer: str, token: str) -> None:
        super().__init__("power-user", False, start_ms, budget)
        self.peer, self.token = peer, token

    def request(self, now: int, rng: random.Random) -> Send | None:
        if self.sent >= self.budget:
            return None
        self.sent += 1
        headers = [("user-agent", APP_UA), ("accept", "application/json"), ("accept-language", "en"), ("authorization", f"Bearer {self.token}")]
        if rng.random() < 0.3:
            return Send("GET", "/api/account", self.peer, headers)
        path, status = item(rng, missing=0.02)
        return Send("GET", path, self.peer, headers, backend=status)

    def gap(self, rng: random.Random) -> int:
        return int(rng.expovariate(1 / 450)) + 20


class Integration(Actor):
    """A server-to-server integration: a valid token, a library, a metronome, paging through the catalogue."""

    def __init__(self, start_ms: int, budget: int, peer: str, token: str, period_ms: int) -> None:
        super().__init__("integration", False, start_ms, budget)
        self.peer, self.token, self.period_ms = peer, token, period_ms

    def request(self, now: int, rng: random.Random) -> Send | None:
        if self.sent >= self.budget:
            return None
        self.sent += 1
        headers = [("user-agent", PYTHON_UA), ("accept", "application/json"), ("authorization", f"Bearer {self.token}"), ("x-ja4-fingerprint", PYTHON_JA4)]
        return Send("GET", f"/api/items/{(self.sent % ITEMS) + 1}", self.peer, headers)

    def gap(self, rng: random.Random) -> int:
        return self.period_ms


class SignedAgent(Actor):
    """An AI agent that signs its requests (Web Bot Auth) and crawls the catalogue in order, briskly."""

    def __init__(self, start_ms: int, budget: int, peer: str, origin: str) -> None:
        super().__init__("signed-agent", False, start_ms, budget, verified_agent=True)
        self.peer, self.origin = peer, origin

    def request(self, now: int, rng: random.Random) -> Send | None:
        if self.sent >= self.budget:
            return None
        self.sent += 1
        headers = [("user-agent", AGENT_UA), ("accept", "application/json"), ("x-ja4-fingerprint", GO_JA4)]
        return Send("GET", f"/api/items/{self.sent}", self.peer, headers, sign_as=self.origin)

    def gap(self, rng: random.Random) -> int:
        return 400 + rng.randrange(200)


# -- attackers -------------------------------------------------------------------------


class Scraper(Actor):
    """Enumerates the catalogue by id with jittered pauses; a headless browser or a library behind a browser's user agent."""

    def __init__(self, start_ms: int, budget: int, peer: str, headless: bool, first_id: int) -> None:
        super().__init__("scraper", True, start_ms, budget)
        self.peer, self.headless, self.next_id = peer, headless, first_id

    def request(self, now: int, rng: random.Random) -> Send | None:
        if self.sent >= self.budget:
            return None
        self.sent += 1
        if self.headless:
            headers = [("user-agent", CHROME_UA), ("accept", "*/*"), ("x-ja4-fingerprint", CHROME_JA4)]
        else:
            headers = [("user-agent", CHROME_UA), *BROWSER_HEADERS, ("x-ja4-fingerprint", GO_JA4)]
        i = self.next_id
        self.next_id += 1 if rng.random() < 0.9 else rng.randrange(2, 5)  # mostly in order, now and then a skip
        return Send("GET", f"/api/items/{i}", self.peer, headers, backend=200 if i <= ITEMS else 404)

    def gap(self, rng: random.Random) -> int:
        return 300 + rng.randrange(1200)  # "random" pauses


class Stuffer(Actor):
    """A credential-stuffing campaign: login attempts, each from another residential address (a proxy network)."""

    def __init__(self, start_ms: int, budget: int) -> None:
        super().__init__("credential-stuffer", True, start_ms, budget)

    def request(self, now: int, rng: random.Random) -> Send | None:
        if self.sent >= self.budget:
            return None
        self.sent += 1
        headers = [("user-agent", CHROME_UA), ("accept", "*/*"), ("x-ja4-fingerprint", PYTHON_JA4)]
        return Send("POST", "/login", residential(rng), headers, backend=200 if rng.random() < 0.01 else 401)

    def gap(self, rng: random.Random) -> int:
        return 100 + rng.randrange(900)


class TokenSharer(Actor):
    """One account's token used from many addresses at once (a resold or leaked subscription)."""

    def __init__(self, start_ms: int, budget: int, token: str, addresses: list[str]) -> None:
        super().__init__("token-sharer", True, start_ms, budget)
        self.token, self.addresses = token, addresses

    def request(self, now: int, rng: random.Random) -> Send | None:
        if self.sent >= self.budget:
            return None
        self.sent += 1
        headers = [("user-agent", APP_UA), ("accept", "application/json"), ("accept-language", "en"), ("authorization", f"Bearer {self.token}")]
        path, status = item(rng)
        return Send("GET", path, rng.choice(self.addresses), headers, backend=status)

    def gap(self, rng: random.Random) -> int:
        return int(rng.expovariate(1 / 2000)) + 50


class V6Rotator(Actor):
    """Scrapes from a fresh address of one IPv6 /64 on every request, guessing ids."""

    def __init__(self, start_ms: int, budget: int, prefix: str) -> None:
        super().__init__("ipv6-rotator", True, start_ms, budget)
        self.net = ipaddress.IPv6Network(prefix)

    def request(self, now: int, rng: random.Random) -> Send | None:
        if self.sent >= self.budget:
            return None
        self.sent += 1
        addr = str(self.net[rng.randrange(1, 2**64)])
        headers = [("user-agent", CHROME_UA), ("accept", "*/*"), ("x-ja4-fingerprint", CHROME_JA4)]
        i = rng.randrange(1, ITEMS * 2)
        return Send("GET", f"/api/items/{i}", addr, headers, backend=200 if i <= ITEMS else 404)

    def gap(self, rng: random.Random) -> int:
        return 200 + rng.randrange(800)


class LowAndSlow(Actor):
    """A patient bot: one request every minute or so, in id order, from one address, as a browser would look."""

    def __init__(self, start_ms: int, budget: int, peer: str, first_id: int) -> None:
        super().__init__("low-and-slow", True, start_ms, budget)
        self.peer, self.next_id = peer, first_id

    def request(self, now: int, rng: random.Random) -> Send | None:
        if self.sent >= self.budget:
            return None
        self.sent += 1
        i = self.next_id
        self.next_id += 1
        headers = [("user-agent", CHROME_UA), *BROWSER_HEADERS, ("x-ja4-fingerprint", CHROME_JA4)]
        return Send("GET", f"/api/items/{i}", self.peer, headers)

    def gap(self, rng: random.Random) -> int:
        return 20_000 + rng.randrange(25_000)


class FakeAgent(Actor):
    """Claims to be a known AI crawler: its user agent copied, with no signature or a forged one."""

    def __init__(self, start_ms: int, budget: int, peer: str, forge: bool, origin: str) -> None:
        super().__init__("fake-agent", True, start_ms, budget)
        self.peer, self.forge, self.origin = peer, forge, origin

    def request(self, now: int, rng: random.Random) -> Send | None:
        if self.sent >= self.budget:
            return None
        self.sent += 1
        headers = [("user-agent", GPTBOT_UA if not self.forge else AGENT_UA), ("accept", "*/*"), ("x-ja4-fingerprint", GO_JA4)]
        path, status = item(rng, missing=0.05)
        return Send("GET", path, self.peer, headers, backend=status, sign_as=self.origin if self.forge else "", forge=self.forge)

    def gap(self, rng: random.Random) -> int:
        return 200 + rng.randrange(600)
