"""Web Bot Auth agents through the real engine and memory store, keys from local directory files.

The RFC 9421 B.1.4 example key signs as the agent https://crawler.example; a
second agent has a key made per session. The clock is pinned. (Fetched
directories are in tests/integration/test_web_bot_auth_remote.py.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from authz.clock import FixedClock
from authz.decision import Decision
from authz.errors import ConfigError
from authz.pipeline import Engine
from authz.policy.compile import load_policy
from authz.request import Request
from authz.stages.authenticate.agent_directory import TEST_KEY_THUMBPRINTS, cache_seconds, parse_origin
from authz.stages.context import Ctx
from authz.store import MemoryStore
from tests.support.agents import rfc9421_ed25519, signed, thumbprint, to_request, write_directory

T0 = 1_700_000_000_000
NOW = T0 // 1000
CRAWLER = "https://crawler.example"
OTHER = "https://other-agent.example"
URL = "https://api.example.com/v1/items?page=2"

POLICY = """
version: 1
ip_lists:
  googlebot: {cidrs: ["66.249.64.0/19 googlebot"]}
quotas:
  anon-q: {limit: 1, window: 1h, burst: 1, by: client}
  bot-q: {limit: 5, window: 1h, burst: 5, by: client}
  listed-q: {limit: 2, window: 1h, burst: 2, by: client}
web_bot_auth:
  agents:
    trust: [https://crawler.example]
    directories:
      https://crawler.example: crawler.json
      https://other-agent.example: other.json
    insecure_test_keys: true
    max_age: 5m
    max_validity: 1h
    clock_skew: 5s
  strict:
    directories: {https://crawler.example: crawler.json}
    insecure_test_keys: true
    nonce: required
    on_failure: refuse
listed_bots:
  crawlers: {lists: [googlebot], user_agent: [Googlebot]}
routes:
  - name: open
    match: {path: {prefix: /v1/}}
    auth: [web_bot_auth:agents, listed_bot:crawlers, anonymous]
    quota: [anon-q]
    tiers: {verified-bot: [bot-q], listed-bot: [listed-q]}
  - name: agents-only
    match: {path: {prefix: /agents/}}
    auth: [web_bot_auth:agents]
  - name: strict
    match: {path: {prefix: /strict/}}
    auth: [web_bot_auth:strict, anonymous]
"""


@pytest.fixture(scope="session")
def other_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


class Harness:
    def __init__(self, directory: Path, other_key: ed25519.Ed25519PrivateKey, text: str = POLICY) -> None:
        self.key = rfc9421_ed25519()
        self.other = other_key
        write_directory(directory / "crawler.json", self.key)
        write_directory(directory / "other.json", other_key)
        (directory / "policy.yaml").write_text(text)
        self.clock = FixedClock(T0)
        self.engine = Engine(load_policy(str(directory / "policy.yaml")), MemoryStore(epoch_ms=T0 - 600_000), clock=self.clock)

    def sign(self, url: str = URL, agent: str | None = CRAWLER, key: ed25519.Ed25519PrivateKey | None = None, **kw: Any) -> list[tuple[str, str]]:
        kw.setdefault("created", NOW)
        return signed(url, key or self.key, agent, **kw)

    async def decide(self, headers: list[tuple[str, str]], url: str = URL, **kw: Any) -> Decision:
        return await self.engine.decide(to_request(url, headers, **kw))

    async def run(self, headers: list[tuple[str, str]], url: str = URL, **kw: Any) -> Ctx:
        """The request's context after the pipeline (its evidence is not part of the Decision)."""
        ctx = Ctx(to_request(url, headers, **kw), self.clock.now_ms(), "test")
        await self.engine._run(ctx, self.engine.policy)
        return ctx


@pytest.fixture
def h(tmp_path: Path, other_key: ed25519.Ed25519PrivateKey) -> Harness:
    return Harness(tmp_path, other_key)


def test_the_rfc_test_key_is_the_one_the_drafts_say_to_refuse() -> None:
    assert thumbprint(rfc9421_ed25519()) in TEST_KEY_THUMBPRINTS


async def test_a_verified_agent_is_the_agent_with_its_tier(h: Harness) -> None:
    d = await h.decide(h.sign())
    assert (d.reason, d.status) == ("ok", 200), d.signals
    ident = d.identity
    assert (ident.subject, ident.bot, ident.tier) == (CRAWLER, CRAWLER, "verified-bot")
    assert ident.key_id == thumbprint(h.key)
    assert ident.method == "web_bot_auth:agents"
    assert ("x-authz-bot", CRAWLER) in d.upstream_headers
    assert ("x-authz-subject", CRAWLER) in d.upstream_headers
    assert ("agent.verified", CRAWLER) in d.signals


@pytest.mark.parametrize("form", ["dictionary", "string"])
async def test_both_signature_agent_forms_verify(h: Harness, form: str) -> None:
    headers = h.sign(form=form, label="agent1")
    agent = dict(headers)["Signature-Agent"]
    assert agent == (f'agent1="{CRAWLER}"' if form == "dictionary" else f'"{CRAWLER}"')
    d = await h.decide(headers)
    assert (d.reason, d.identity.bot) == ("ok", CRAWLER), d.signals


async def test_a_dictionary_member_named_by_the_covered_key_is_used(h: Harness) -> None:
    headers = h.sign(label="sig2")
    # another signer's member first; the signature covers its own member only
    headers = [(n, f'sig1="{OTHER}", {v}' if n == "Signature-Agent" else v) for n, v in headers]
    d = await h.decide(headers)
    assert (d.reason, d.identity.bot) == ("ok", CRAWLER), d.signals


async def test_a_second_agent_with_its_own_key(h: Harness) -> None:
    d = await h.decide(h.sign(agent=OTHER, key=h.other))
    assert (d.reason, d.identity.bot, d.identity.key_id) == ("ok", OTHER, thumbprint(h.other)), d.signals


def _tamper(headers: list[tuple[str, str]], name: str, old: str, new: str) -> list[tuple[str, str]]:
    return [(n, v.replace(old, new) if n == name else v) for n, v in headers]


def _failures(h: Harness) -> dict[str, Any]:
    key = h.key
    other = ed25519.Ed25519PrivateKey.generate()
    return {
        # signed for another host, sent to this one
        "agent.forged": h.sign(url="https://elsewhere.example/v1/items"),
        "agent.expired": h.sign(created=NOW - 120, expires_in=60),
        "agent.wrong_tag": h.sign(tag="my-app"),
        "agent.unknown_key": h.sign(key=other),
        "agent.forged_keyid": h.sign(key=other, key_id=thumbprint(key)),
        "agent.untrusted": h.sign(agent="https://stranger.example"),
        "agent.validity_too_long": h.sign(expires_in=7200),
    }


@pytest.mark.parametrize("code", ["agent.forged", "agent.expired", "agent.wrong_tag", "agent.unknown_key", "agent.untrusted", "agent.validity_too_long"])
async def test_a_bad_agent_signature_is_not_verified_and_falls_back_with_evidence(h: Harness, code: str) -> None:
    headers = _failures(h)[code]
    ctx = await h.run(headers)
    assert ctx.reason is None, ctx.signals
    assert ctx.identity.method == "anonymous"
    assert (ctx.identity.tier, ctx.identity.bot, ctx.identity.subject) == ("", "", "")
    assert ("agent.unverified", code) in ctx.signals
    assert [e for e, _ in ctx.evidence] == [code]
    strength = dict(ctx.evidence)[code]
    assert 0 < strength <= 1
    if code == "agent.forged":
        assert strength == 1.0
    d = await h.decide(headers, peer="198.51.100.8")  # another address: the first one used its anon-q
    assert d.allowed and not any(n == "x-authz-bot" for n, _ in d.upstream_headers)


@pytest.mark.parametrize("code", ["agent.forged", "agent.expired", "agent.wrong_tag", "agent.unknown_key", "agent.untrusted", "agent.validity_too_long"])
async def test_without_anonymous_a_bad_agent_signature_is_refused_with_its_reason(h: Harness, code: str) -> None:
    url = "https://api.example.com/agents/x"
    headers = _failures(h)[code]  # only @authority is covered: the same signatures fit this path
    d = await h.decide(headers, url=url)
    assert (d.reason, d.status) == (code, 401), d.signals
    assert any(n == "accept-signature" and 'tag="web-bot-auth"' in v for n, v in d.client_headers)


async def test_a_tampered_signature_agent_is_forged_or_untrusted(h: Harness) -> None:
    # the covered member changed to another trusted agent: the signature no longer verifies
    headers = _tamper(h.sign(), "Signature-Agent", CRAWLER, OTHER)
    ctx = await h.run(headers)
    assert dict(ctx.evidence) == {"agent.unknown_key": 0.7}  # OTHER's directory lacks the key
    headers = _tamper(h.sign(agent=OTHER, key=h.other), "Signature", "=:", "=:AAAA")
    assert (await h.decide(headers, url="https://api.example.com/agents/x")).reason == "agent.malformed"
    sig = dict(h.sign())["Signature"]
    flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
    headers = [(n, flipped if n == "Signature" else v) for n, v in h.sign()]
    assert (await h.decide(headers, url="https://api.example.com/agents/x")).reason == "agent.forged"
    # another key claiming the crawler's keyid
    headers = _failures(h)["agent.forged_keyid"]
    assert (await h.decide(headers, url="https://api.example.com/agents/x")).reason == "agent.forged"


async def test_a_signature_that_does_not_cover_signature_agent_is_refused(h: Harness) -> None:
    from authz.httpsig import sign_request

    agent = [("Signature-Agent", f'sig1="{CRAWLER}"')]
    added = sign_request("GET", URL, agent, key_id=thumbprint(h.key), algorithm="ed25519", key=h.key, components=["@authority"], created=NOW, expires=NOW + 60, tag="web-bot-auth")
    d = await h.decide([*agent, *added], url="https://api.example.com/agents/x")
    assert d.reason == "agent.component_missing"
    assert ("agent.problem", '"signature-agent";key="sig1" not covered') in d.signals


async def test_a_replayed_agent_signature_is_refused_and_counts_against_it(h: Harness) -> None:
    headers = h.sign()
    assert (await h.decide(headers)).reason == "ok"
    ctx = await h.run(headers)
    assert ctx.reason == "agent.replayed"
    assert ("agent.replayed", 1.0) in ctx.late_evidence  # found after planning: recorded with the outcome
    assert (ctx.identity.tier, ctx.identity.bot) == ("", "")
    d = await h.decide(headers)
    assert (d.reason, d.status, d.allowed) == ("agent.replayed", 401, False)
    # a fresh signature of the same agent passes
    assert (await h.decide(h.sign())).reason == "ok"


async def test_without_a_nonce_the_signature_itself_is_single_use(h: Harness) -> None:
    headers = h.sign(nonce=False)
    assert "nonce=" not in dict(headers)["Signature-Input"]
    assert (await h.decide(headers)).reason == "ok"
    assert (await h.decide(headers)).reason == "agent.replayed"


async def test_a_store_that_lost_its_memory_cannot_vouch_for_older_signatures(h: Harness) -> None:
    headers = h.sign()
    h.engine.store = MemoryStore(epoch_ms=T0 + 10_000)
    h.clock.advance(10_000)
    d = await h.decide(headers)
    assert d.reason == "agent.replay_unverifiable"
    assert "sign the request again" in json.loads(d.body)["hint"]


async def test_a_required_nonce_and_on_failure_refuse(h: Harness) -> None:
    url = "https://api.example.com/strict/x"
    d = await h.decide(h.sign(url=url, nonce=False), url=url)
    assert (d.reason, d.status) == ("agent.nonce_missing", 401)  # refused although the route accepts anonymous
    assert (await h.decide(h.sign(url=url), url=url)).reason == "ok"
    assert (await h.decide([], url=url)).identity.method == "anonymous"


async def test_a_verified_agent_gets_its_tiers_quota(h: Harness) -> None:
    anonymous = [(await h.decide([])).reason for _ in range(2)]
    assert anonymous == ["ok", "quota.exhausted"]
    bots = [(await h.decide(h.sign())).reason for _ in range(6)]
    assert bots == ["ok"] * 5 + ["quota.exhausted"]  # bot-q (5), counted by the agent, not anon-q


async def test_a_forged_agent_is_counted_as_anonymous(h: Harness) -> None:
    forged = h.sign(url="https://elsewhere.example/v1/items")
    results = [(await h.decide(forged)).reason for _ in range(2)]
    assert results == ["ok", "quota.exhausted"]  # anon-q: the forged claim bought nothing


async def test_a_client_sent_bot_header_never_reaches_the_upstream(h: Harness) -> None:
    d = await h.decide([("x-authz-bot", CRAWLER), ("x-authz-listed-bot", "googlebot")])
    assert d.allowed and d.identity.method == "anonymous"
    assert "x-authz-bot" in d.remove_headers and "x-authz-listed-bot" in d.remove_headers
    assert {"x-authz-bot", "x-authz-listed-bot"} <= h.engine.policy.upstream_headers


async def test_a_listed_crawler_gets_the_weaker_tier(h: Harness) -> None:
    ua = [("user-agent", "Mozilla/5.0 (compatible; Googlebot/2.1)")]
    d = await h.decide(ua, peer="66.249.66.1")
    assert (d.reason, d.identity.tier, d.identity.bot, d.identity.method) == ("ok", "listed-bot", "googlebot", "listed_bot:crawlers")
    assert ("x-authz-listed-bot", "googlebot") in d.upstream_headers
    assert not any(n == "x-authz-bot" for n, _ in d.upstream_headers)
    assert [(await h.decide(ua, peer="66.249.66.2")).reason for _ in range(2)] == ["ok", "quota.exhausted"]  # listed-q (2), shared
    # the same address without the crawler's User-Agent, or another address with it: anonymous
    assert (await h.decide([], peer="66.249.66.1")).identity.method == "anonymous"
    assert (await h.decide(ua, peer="203.0.113.9")).identity.method == "anonymous"


async def test_a_signed_agent_from_a_listed_address_is_verified_not_listed(h: Harness) -> None:
    d = await h.decide([("user-agent", "Googlebot"), *h.sign()], peer="66.249.66.1")
    assert (d.identity.tier, d.identity.method) == ("verified-bot", "web_bot_auth:agents")


def test_origins_are_normalized_or_refused() -> None:
    assert parse_origin("https://Crawler.Example:443/") == "https://crawler.example"
    assert parse_origin("https://crawler.example:8443") == "https://crawler.example:8443"
    assert parse_origin("https://[2001:DB8::1]:8443") == "https://[2001:db8::1]:8443"
    for bad in ["http://crawler.example", "https://crawler.example/path", "https://a@crawler.example", "https://crawler.example?x", "https://", "https://crawler.example:0", "https://cra wler.example", "https://crawler.example:99999"]:
        assert parse_origin(bad) is None, bad


def test_cache_lifetimes_honour_max_age_within_bounds() -> None:
    bounds = {"default_s": 3600.0, "min_s": 60.0, "max_s": 86400.0}
    assert cache_seconds("max-age=600", **bounds) == 600
    assert cache_seconds("public, max-age=10", **bounds) == 60
    assert cache_seconds("max-age=999999999", **bounds) == 86400
    assert cache_seconds("no-store", **bounds) == 60
    assert cache_seconds(None, **bounds) == 3600
    assert cache_seconds("s-maxage=5", **bounds) == 3600


def test_the_rfc_test_key_needs_the_insecure_option(tmp_path: Path, other_key: ed25519.Ed25519PrivateKey) -> None:
    with pytest.raises(ConfigError) as info:
        Harness(tmp_path, other_key, POLICY.replace("    insecure_test_keys: true\n", "", 1))
    assert "is the RFC 9421 example key (test-key-ed25519)" in str(info.value)
    assert "web_bot_auth.agents.directories.https://crawler.example" in str(info.value)


def _req(headers: list[tuple[str, str]]) -> Request:
    return to_request(URL, headers)


async def test_authz_sign_web_bot_auth_prints_headers_an_agent_route_accepts(h: Harness, tmp_path: Path) -> None:
    from click.testing import CliRunner
    from cryptography.hazmat.primitives import serialization

    from authz.cli import cli

    pem = h.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "agent.pem").write_bytes(pem)
    out = CliRunner().invoke(cli, ["sign", "--web-bot-auth", CRAWLER, "--key-file", str(tmp_path / "agent.pem"), URL])
    assert out.exit_code == 0, out.output
    printed = [tuple(line.split(": ", 1)) for line in out.output.splitlines()]
    assert [n for n, _ in printed] == ["Signature-Agent", "Signature-Input", "Signature"]
    assert f'keyid="{thumbprint(h.key)}"' in printed[1][1] and 'tag="web-bot-auth"' in printed[1][1]
    created = int(printed[1][1].split("created=")[1].split(";")[0])
    h.clock.advance(created * 1000 - h.clock.now_ms())
    d = await h.decide(printed, url="https://api.example.com/agents/x")  # type: ignore[arg-type]
    assert (d.reason, d.identity.bot) == ("ok", CRAWLER), d.signals
    bad = CliRunner().invoke(cli, ["sign", "--web-bot-auth", "https://crawler.example/path", "--key-file", str(tmp_path / "agent.pem"), URL])
    assert bad.exit_code == 1 and "not an agent origin" in bad.output
    missing = CliRunner().invoke(cli, ["sign", "--key-file", str(tmp_path / "agent.pem"), URL])
    assert missing.exit_code == 2 and "--key-id and --algorithm are required" in missing.output


@pytest.mark.parametrize(
    "agent",
    [
        'sig1="http://crawler.example"',  # not https
        'sig1="https://crawler.example/bot"',  # not an origin
        'sig1="https://crawler.example";type=jwks_uri',  # a discovery type not supported
        'sig1=("https://crawler.example")',  # an inner list
        "sig1=?1",  # not a string
        'other="https://crawler.example"',  # no member for the label, none covered
        '"https://crawler.example", x',  # not an item
        "s\u00e9g1=1",  # not ASCII
        'sig1="https://crawler.example", sig1="https://other-agent.example"',  # duplicate member
        "",
    ],
)
async def test_hostile_signature_agent_values_are_malformed_never_a_crash(h: Harness, agent: str) -> None:
    headers = [(n, agent if n == "Signature-Agent" else v) for n, v in h.sign()]
    d = await h.decide(headers, url="https://api.example.com/agents/x")
    assert (d.reason, d.status) in {("agent.malformed", 401), ("agent.component_missing", 401)}, d.signals
    ctx = await h.run(headers, peer="198.51.100.99")
    assert ctx.reason is None and ctx.identity.method == "anonymous"


@pytest.mark.parametrize(
    "signature_input",
    ['sig1=("@authority");tag="web-bot-auth"', 'sig1=("@authority");created=1;expires=0;tag="web-bot-auth"', 'sig1=("@status");tag="web-bot-auth"', "x" * 9000 + 'tag="web-bot-auth"', 'sig1=("@authority";req);tag="web-bot-auth"'],
)
async def test_hostile_signature_inputs_are_refused_never_a_crash(h: Harness, signature_input: str) -> None:
    headers = [(n, signature_input if n == "Signature-Input" else v) for n, v in h.sign()]
    d = await h.decide(headers, url="https://api.example.com/agents/x")
    assert d.reason in {"agent.malformed", "agent.component_missing"} and d.status == 401, d.signals


async def test_without_signature_agent_a_key_of_exactly_one_local_directory_is_that_agent(h: Harness) -> None:
    d = await h.decide(h.sign(agent=None), url="https://api.example.com/agents/x")
    assert (d.reason, d.identity.bot) == ("ok", CRAWLER), d.signals
    stranger = ed25519.Ed25519PrivateKey.generate()
    d = await h.decide(h.sign(agent=None, key=stranger), url="https://api.example.com/agents/x")
    assert d.reason == "agent.malformed"


def test_directory_entries_are_checked() -> None:
    from authz.stages.authenticate.agent_directory import DirectoryError, parse_directory

    key = ed25519.Ed25519PrivateKey.generate()
    from authz.httpsig.agent import ed25519_jwk

    jwk = ed25519_jwk(key)
    rsa = {"kty": "RSA", "n": "AQAB", "e": "AQAB"}
    keys, problems = parse_directory({"keys": [rsa, jwk, {**jwk, "d": "secret"}, {**jwk, "use": "enc"}]}, max_keys=8, accept_test_keys=False, strict=False)
    assert list(keys) == [jwk["kid"]]  # the RSA and encryption keys are not for us; the private one is refused
    assert problems == ["keys[2]: holds private key material"]
    bounded, _ = parse_directory({"keys": [{**jwk, "nbf": NOW - 10, "exp": NOW + 10}]}, max_keys=8, accept_test_keys=False, strict=True)
    entry = bounded[jwk["kid"]]
    assert entry.usable(T0) and not entry.usable(T0 + 11_000) and not entry.usable(T0 - 11_000)
    with pytest.raises(DirectoryError, match="3 keys"):
        parse_directory({"keys": [jwk, jwk, jwk]}, max_keys=2, accept_test_keys=False, strict=False)
    for bad in [{**jwk, "x": jwk["x"][:-2]}, {**jwk, "alg": "ES256"}, {**jwk, "exp": "soon"}, {**jwk, "x": jwk["x"] + "="}]:
        with pytest.raises(DirectoryError):
            parse_directory({"keys": [bad]}, max_keys=8, accept_test_keys=False, strict=True)
    for not_a_directory in [[], {"keys": {}}, {"jwks": []}]:
        with pytest.raises(DirectoryError, match="a directory is"):
            parse_directory(not_a_directory, max_keys=8, accept_test_keys=False, strict=False)


def test_the_shipped_nginx_and_caddy_configs_forward_the_bot_headers() -> None:
    from tests.unit.test_example_configs import caddy_forwarded, nginx_forwarded

    names = {"x-authz-bot", "x-authz-listed-bot"}
    assert names <= nginx_forwarded()  # nginx sets each name, so a client's copy never passes
    assert names <= caddy_forwarded()
