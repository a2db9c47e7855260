"""Agent key directories fetched from a real HTTPS server on loopback (a certificate made in the test).

Cold fetch and cache, max-age, stale-while-error, rotation, rate-limited
refetch for unknown keyids, redirects not followed, slow and oversized
directories refused without holding up other requests, the address check of
``trust: any``, and possession proofs on the directory response.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from authz.clock import SystemClock
from authz.decision import Decision
from authz.pipeline import Engine
from authz.policy.compile import load_policy
from authz.stages.authenticate.agent_directory import RemoteDirectory
from authz.stages.authenticate.webbotauth import WebBotAuth
from authz.store import MemoryStore
from tests.support.agents import (
    WELL_KNOWN,
    DirectoryServer,
    directory_server,
    make_cert,
    signed,
    thumbprint,
    to_request,
    write_directory,
)

URL = "https://api.example.com/v1/items"
LOCAL = "https://local-agent.example"

POLICY = """
version: 1
web_bot_auth:
  agents:
    trust: [{origin}, {named}]
    directories: {{{local}: local.json}}
    ca_file: {ca}
    fetch_timeout: 1s
    refetch_interval: {refetch}
    max_directory_bytes: 65536
    cache_ttl: {ttl}
    directory_proofs: {proofs}
  any:
    trust: any
    ca_file: {ca}
    fetch_timeout: 1s
    {insecure}
routes:
  - {{name: open, match: {{path: {{prefix: /v1/}}}}, auth: [web_bot_auth:agents, anonymous]}}
  - {{name: only, match: {{path: {{prefix: /only/}}}}, auth: [web_bot_auth:agents]}}
  - {{name: any, match: {{path: {{prefix: /any/}}}}, auth: [web_bot_auth:any]}}
"""


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    return make_cert(tmp_path)


@pytest.fixture
def agent_site(tls_files: tuple[Path, Path]) -> Iterator[DirectoryServer]:
    with directory_server(*tls_files) as server:
        yield server


@pytest.fixture
def key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


class Stack:
    def __init__(self, tmp_path: Path, site: DirectoryServer, ca: Path, local_key: ed25519.Ed25519PrivateKey, **kw: Any) -> None:
        opts = {"refetch": "0s", "ttl": "{min: 1s, default: 1h, max: 1d}", "proofs": "ignore", "insecure": ""}
        opts.update(kw)
        write_directory(tmp_path / "local.json", local_key)
        (tmp_path / "policy.yaml").write_text(POLICY.format(origin=site.origin, named=site.origin.replace("127.0.0.1", "localhost"), local=LOCAL, ca=ca, **opts))
        self.policy = load_policy(str(tmp_path / "policy.yaml"))
        self.engine = Engine(self.policy, MemoryStore(epoch_ms=0), clock=SystemClock())
        self.site = site
        self.local_key = local_key

    def method(self, name: str = "agents") -> WebBotAuth:
        method = self.policy.authenticators[f"web_bot_auth:{name}"]
        assert isinstance(method, WebBotAuth)
        return method

    def remote(self, name: str = "agents") -> RemoteDirectory:
        remote = self.method(name).directories.remote(self.site.origin)
        assert remote is not None
        return remote

    async def decide(self, key: ed25519.Ed25519PrivateKey, path: str = "/v1/items", agent: str | None = None, **kw: Any) -> Decision:
        url = "https://api.example.com" + path
        return await self.engine.decide(to_request(url, signed(url, key, agent or self.site.origin, **kw)))


@pytest.fixture
def make(tmp_path: Path, agent_site: DirectoryServer, tls_files: tuple[Path, Path]) -> Any:
    def build(**kw: Any) -> Stack:
        return Stack(tmp_path, agent_site, tls_files[0], ed25519.Ed25519PrivateKey.generate(), **kw)

    return build


async def test_a_fetched_directory_verifies_and_is_cached(make: Any, agent_site: DirectoryServer, key: ed25519.Ed25519PrivateKey) -> None:
    agent_site.keys = [key]
    s = make()
    d = await s.decide(key)
    assert (d.reason, d.identity.bot, d.identity.tier) == ("ok", agent_site.origin, "verified-bot"), d.signals
    assert d.identity.key_id == thumbprint(key)
    for _ in range(3):
        assert (await s.decide(key)).reason == "ok"
    assert agent_site.fetches == 1
    assert agent_site.paths == [WELL_KNOWN]


async def test_max_age_is_honoured_within_bounds(make: Any, agent_site: DirectoryServer, key: ed25519.Ed25519PrivateKey) -> None:
    agent_site.keys = [key]
    agent_site.cache_control = "max-age=1"
    s = make(ttl="{min: 1s, default: 1h, max: 1d}")
    assert (await s.decide(key)).reason == "ok"
    await asyncio.sleep(1.1)
    assert (await s.decide(key)).reason == "ok"  # served from the stale copy, a refresh starts
    await settle(s.remote(), 2)
    assert agent_site.fetches == 2
    # a long max-age keeps the copy (the default of 1 h would too, but max-age=3600 is what was said)
    agent_site.cache_control = "max-age=3600"
    await asyncio.sleep(1.1)
    assert (await s.decide(key)).reason == "ok"
    await settle(s.remote(), 3)
    await asyncio.sleep(1.1)
    assert (await s.decide(key)).reason == "ok"
    assert agent_site.fetches == 3


async def test_a_directory_that_goes_down_keeps_its_keys(make: Any, agent_site: DirectoryServer, key: ed25519.Ed25519PrivateKey) -> None:
    agent_site.keys = [key]
    agent_site.cache_control = "max-age=1"
    s = make(refetch="0s")
    assert (await s.decide(key)).reason == "ok"
    agent_site.mode = "fail"
    await asyncio.sleep(1.1)
    assert (await s.decide(key)).reason == "ok"
    await settle(s.remote(), 2)
    assert s.remote().failures == 1 and "503" in s.remote().last_error
    assert (await s.decide(key)).reason == "ok"  # stale-while-error


async def test_rotation_and_unknown_keyids(make: Any, agent_site: DirectoryServer, key: ed25519.Ed25519PrivateKey) -> None:
    new = ed25519.Ed25519PrivateKey.generate()
    agent_site.keys = [key]
    s = make(refetch="0s")
    assert (await s.decide(key)).reason == "ok"
    agent_site.keys = [new]  # the agent rotates
    assert (await s.decide(new)).reason == "ok"  # unknown keyid: refetched at once
    assert agent_site.fetches == 2
    d = await s.decide(key, path="/only/x")
    assert d.reason == "agent.unknown_key"  # the directory resolved without the old key: it stops verifying


async def test_a_flood_of_unknown_keyids_costs_the_agent_one_fetch(make: Any, agent_site: DirectoryServer, key: ed25519.Ed25519PrivateKey) -> None:
    agent_site.keys = [key]
    s = make(refetch="30s")
    assert (await s.decide(key)).reason == "ok"
    strangers = [ed25519.Ed25519PrivateKey.generate() for _ in range(20)]
    results = await asyncio.gather(*(s.decide(k, path="/only/x") for k in strangers))
    assert {d.reason for d in results} == {"agent.unknown_key"}
    assert agent_site.fetches <= 2


async def test_a_redirecting_directory_is_not_followed(make: Any, agent_site: DirectoryServer, key: ed25519.Ed25519PrivateKey) -> None:
    agent_site.keys = [key]
    agent_site.mode = "redirect"
    s = make()
    d = await s.decide(key, path="/only/x")
    assert (d.reason, d.status) == ("agent.keys_unavailable", 503)
    assert agent_site.paths == [WELL_KNOWN]  # /moved, where it points, was never asked for
    assert "302" in s.remote().last_error
    # on a route that accepts anonymous: not verified, no evidence against the agent (its outage is no proof)
    ctx_signals = (await s.decide(key)).signals
    assert ("agent.unverified", "agent.keys_unavailable") in ctx_signals


async def test_a_slow_directory_is_refused_without_holding_up_other_requests(make: Any, agent_site: DirectoryServer, key: ed25519.Ed25519PrivateKey) -> None:
    agent_site.keys = [key]
    agent_site.mode = "slow"
    agent_site.delay_s = 4.0
    s = make()

    async def timed(coro: Any) -> tuple[Decision, float]:
        start = time.monotonic()
        d = await coro
        return d, time.monotonic() - start

    slow, *others = await asyncio.gather(
        timed(s.decide(key, path="/only/x")),
        timed(s.decide(s.local_key, agent=LOCAL)),  # another agent, local directory
        timed(s.engine.decide(to_request(URL, []))),  # anonymous
    )
    assert slow[0].reason == "agent.keys_unavailable"
    assert 0.9 <= slow[1] < 2.5  # the 1 s fetch timeout, not the server's 4 s
    for d, elapsed in others:
        assert d.reason == "ok" and elapsed < 0.5, (d.reason, elapsed)
    assert "TimeoutError" in s.remote().last_error or s.remote()._task is not None


async def test_an_oversized_directory_is_refused(make: Any, agent_site: DirectoryServer, key: ed25519.Ed25519PrivateKey) -> None:
    agent_site.mode = "huge"
    s = make()
    d = await s.decide(key, path="/only/x")
    assert d.reason == "agent.keys_unavailable"
    assert "larger than 65536 bytes" in s.remote().last_error


async def test_a_directory_of_another_media_type_is_refused(make: Any, agent_site: DirectoryServer, key: ed25519.Ed25519PrivateKey) -> None:
    agent_site.keys = [key]
    agent_site.mode = "json-type"
    s = make()
    assert (await s.decide(key, path="/only/x")).reason == "agent.keys_unavailable"
    assert "application/json" in s.remote().last_error


async def test_trust_any_refuses_to_fetch_from_loopback(make: Any, agent_site: DirectoryServer, key: ed25519.Ed25519PrivateKey) -> None:
    agent_site.keys = [key]
    s = make()
    d = await s.decide(key, path="/any/x")
    assert d.reason == "agent.keys_unavailable"
    assert "not a public address" in s.remote("any").last_error
    assert agent_site.fetches == 0
    s = make(insecure="insecure_private_addresses: true")
    d = await s.decide(key, path="/any/x")
    assert (d.reason, d.identity.bot) == ("ok", agent_site.origin)


async def test_an_untrusted_origin_is_never_fetched(make: Any, agent_site: DirectoryServer, key: ed25519.Ed25519PrivateKey) -> None:
    s = make()
    d = await s.decide(key, path="/only/x", agent="https://127.0.0.1:1")
    assert d.reason == "agent.untrusted"
    assert agent_site.fetches == 0


@pytest.mark.parametrize(("sign", "bad", "want"), [(True, False, "ok"), (False, False, "agent.unknown_key"), (True, True, "agent.unknown_key")])
async def test_required_possession_proofs(make: Any, agent_site: DirectoryServer, key: ed25519.Ed25519PrivateKey, sign: bool, bad: bool, want: str) -> None:
    agent_site.keys = [key]
    agent_site.sign, agent_site.bad_proof = sign, bad
    s = make(proofs="require")
    assert (await s.decide(key, path="/only/x")).reason == want


@pytest.mark.parametrize(("sign", "bad", "want"), [(True, False, "ok"), (False, False, "ok"), (True, True, "agent.unknown_key")])
async def test_verified_possession_proofs(make: Any, agent_site: DirectoryServer, key: ed25519.Ed25519PrivateKey, sign: bool, bad: bool, want: str) -> None:
    agent_site.keys = [key]
    agent_site.sign, agent_site.bad_proof = sign, bad
    s = make(proofs="verify")
    assert (await s.decide(key, path="/only/x")).reason == want


async def settle(remote: RemoteDirectory, fetches: int) -> None:
    """Wait (bounded) until ``fetches`` fetches started and none is running."""
    for _ in range(300):
        if remote.fetches >= fetches and remote._task is None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"fetches={remote.fetches}, wanted {fetches}")


async def test_a_named_origin_is_fetched_from_the_checked_address_with_its_name(make: Any, agent_site: DirectoryServer, key: ed25519.Ed25519PrivateKey) -> None:
    agent_site.keys = [key]
    s = make()
    named = agent_site.origin.replace("127.0.0.1", "localhost")
    d = await s.decide(key, path="/only/x", agent=named)
    assert (d.reason, d.identity.bot) == ("ok", named), d.signals
    # connected to the resolved address; the certificate was checked for the name, Host is the origin's
    assert agent_site.hosts == [named.removeprefix("https://")]
    # trust: any resolves the name and refuses a loopback address
    d = await s.decide(key, path="/any/x", agent=named)
    assert d.reason == "agent.keys_unavailable"
    remote = s.method("any").directories.remote(named)
    assert remote is not None and "resolves to 127.0.0.1, which is not a public address" in remote.last_error
    assert len(agent_site.hosts) == 1
