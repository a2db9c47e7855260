"""Evidence for the reputation stage, through the engine: each signal's hits and misses, the ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz.clock import FixedClock
from authz.decision import DecisionIds
from authz.pipeline import Engine
from authz.policy.compile import load_policy
from authz.request import Request
from authz.stages.context import Ctx
from authz.stages.evidence import bounded_id, cookie_value, digest
from authz.store import MemoryStore
from tests.support.geo import write_asn_db

T0 = 1_700_000_000_000
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
CHROME_JA4 = "t13d1516h2_8daaf6152771_02713d6af862"
PYTHON_JA4 = "t13d181100_85036bcba153_d41ae481755e"  # what Envoy saw from Python's ssl module
BROWSER_HEADERS = {"user-agent": CHROME, "accept": "text/html", "accept-language": "en-GB"}

POLICY = """
version: 1
ip_lists:
  tor: {file: tor.txt, signal: tor, strength: 0.6}
  feed: {cidrs: ["192.0.2.0/24 feed-a"], signal: abuse-feed}
  blocked: {cidrs: ["198.51.100.66 bad"]}
ip: {deny: [blocked]}
geo:
  asn_database: asn.mmdb
  hosting_asns: {file: hosting.txt}
identify:
  fingerprint: {header: x-ja4-fingerprint}
  session: {cookie: sid}
  device: {header: x-device-id}
evidence:
  probes: {scanner_path: 0.5, max_query_bytes: 256}
  user_agent: {}
  missing_headers: {strength: 0.3}
  fingerprint_mismatch: {library: [t13d1715h2_aaaaaaaaaaaa]}
routes:
  - name: health
    match: {path: {exact: /healthz}}
    action: allow
  - name: api
    auth: [anonymous]
"""


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return make_engine(tmp_path, POLICY)


def make_engine(directory: Path, text: str) -> Engine:
    write_asn_db(directory / "asn.mmdb")
    (directory / "tor.txt").write_text("# exits\n203.0.113.0/24 exit-1\n")
    (directory / "hosting.txt").write_text("64501 example-cloud\n")
    (directory / "policy.yaml").write_text(text)
    policy = load_policy(str(directory / "policy.yaml"))
    return Engine(policy, MemoryStore(epoch_ms=T0), clock=FixedClock(T0), ids=DecisionIds("test"))


async def run(engine: Engine, path: str = "/v1/items", *, query: str = "", peer: str = "172.16.0.9", headers: dict[str, str] | None = None) -> Ctx:
    """The engine's stages on one request; the context shows the evidence (a Decision does not carry it)."""
    request = Request(
        method="GET", path=path, query=query, has_query=bool(query), host="api.example.com", peer_ip=peer,
        headers=BROWSER_HEADERS if headers is None else headers,
    )  # fmt: skip
    ctx = Ctx(request, T0, "test")
    await engine._run(ctx, engine.policy)
    return ctx


async def test_an_ordinary_browser_request_shows_nothing(engine: Engine) -> None:
    ctx = await run(engine)
    assert ctx.evidence == [] and ctx.signals == [] and ctx.reason is None


async def test_list_signals_carry_the_lists_strength_and_never_refuse(engine: Engine) -> None:
    ctx = await run(engine, peer="203.0.113.9")  # a tor exit and a hosting network
    assert ("list.tor", 0.6) in ctx.evidence
    assert ("list.tor", "exit-1") in ctx.signals
    assert ctx.reason is None
    ctx = await run(engine, peer="192.0.2.4")
    assert ctx.evidence == [("list.abuse-feed", 0.5)]  # the default strength
    assert ctx.signals == [("list.abuse-feed", "feed-a")]


async def test_a_list_without_signal_is_no_evidence(engine: Engine) -> None:
    ctx = await run(engine, peer="198.51.100.66")
    assert ctx.reason == "ip.denied" and ctx.evidence == []


async def test_hosting_networks(engine: Engine) -> None:
    ctx = await run(engine, peer="203.0.113.9")
    assert ("network.hosting", 1.0) in ctx.evidence
    assert ("network.hosting", "AS64501 example-cloud") in ctx.signals
    ctx = await run(engine, peer="198.51.100.7")  # AS64502: not a hosting provider
    assert not [e for e in ctx.evidence if e[0] == "network.hosting"]


@pytest.mark.parametrize(
    ("path", "query", "evidence", "signal"),
    [
        ("/v1/items", "id=1%20union%20select%201", ("probe.injection", 1.0), "sql_union"),
        ("/v1/files", "name=..%2F..%2Fetc%2Fpasswd", ("probe.traversal", 1.0), "dot_dot"),
        ("/.env", "", ("probe.scanner_path", 0.5), "dotfile"),  # strength from the policy
        ("/wp-login.php", "", ("probe.scanner_path", 0.5), "wordpress"),
    ],
)
async def test_probes(engine: Engine, path: str, query: str, evidence: tuple[str, float], signal: str) -> None:
    ctx = await run(engine, path, query=query)
    assert ctx.evidence == [evidence]
    assert ctx.signals == [(evidence[0], signal)]


async def test_probes_read_only_the_first_bytes_of_the_query(engine: Engine) -> None:
    ctx = await run(engine, query="a=" + "b" * 300 + "&id=1%20union%20select%201")  # max_query_bytes: 256
    assert ctx.evidence == []


@pytest.mark.parametrize(
    ("ua", "evidence", "signal"),
    [
        ("curl/8.5.0", ("ua.automation", 0.3), ("ua.automation", "curl")),
        ("python-requests/2.31.0", ("ua.automation", 0.3), ("ua.automation", "python-requests")),
        ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0 Safari/537.36", ("ua.automation", 0.3), ("ua.automation", "headlesschrome")),
        ("sqlmap/1.8#stable (https://sqlmap.org)", ("ua.scanner", 1.0), ("ua.scanner", "sqlmap")),
    ],
)
async def test_user_agents(engine: Engine, ua: str, evidence: tuple[str, float], signal: tuple[str, str]) -> None:
    ctx = await run(engine, headers={**BROWSER_HEADERS, "user-agent": ua})
    assert ctx.evidence == [evidence]
    assert ctx.signals == [signal]


@pytest.mark.parametrize(
    ("headers", "strength", "names"),
    [
        ({"user-agent": "MyApp/1.0", "accept": "*/*"}, 0.1, "accept-language"),
        ({"user-agent": "MyApp/1.0"}, 0.2, "accept,accept-language"),
        ({}, 0.3, "user-agent,accept,accept-language"),
        ({"user-agent": "MyApp/1.0", "accept": "", "accept-language": "en"}, 0.1, "accept"),
    ],
)
async def test_missing_headers_strength_is_proportional(engine: Engine, headers: dict[str, str], strength: float, names: str) -> None:
    ctx = await run(engine, headers=headers)
    assert ctx.evidence == [("headers.missing", strength)]
    assert ctx.signals == [("headers.missing", names)]


async def test_a_browser_user_agent_with_a_library_fingerprint(engine: Engine) -> None:
    ctx = await run(engine, headers={**BROWSER_HEADERS, "x-ja4-fingerprint": PYTHON_JA4})
    assert ctx.identity.fingerprint == PYTHON_JA4
    assert ctx.evidence == [("ua.fingerprint_mismatch", 1.0)]
    assert ctx.signals == [("ua.fingerprint_mismatch", "browser user agent, python TLS")]


@pytest.mark.parametrize(
    ("ua", "ja4"),
    [
        (CHROME, CHROME_JA4),  # a browser that is one
        ("python-requests/2.31.0", PYTHON_JA4),  # a library that says so (ua.automation only)
        (CHROME, "t13d1715h2_5b57614c22b0_3d5424432f57"),  # an unknown stack: no verdict
    ],
)
async def test_no_mismatch(engine: Engine, ua: str, ja4: str) -> None:
    ctx = await run(engine, headers={**BROWSER_HEADERS, "user-agent": ua, "x-ja4-fingerprint": ja4})
    assert not [e for e in ctx.evidence if e[0] == "ua.fingerprint_mismatch"]


async def test_the_policy_adds_fingerprint_prefixes(engine: Engine) -> None:
    ctx = await run(engine, headers={**BROWSER_HEADERS, "x-ja4-fingerprint": "t13d1715h2_aaaaaaaaaaaa_0123456789ab"})
    assert ctx.evidence == [("ua.fingerprint_mismatch", 1.0)]
    assert ctx.signals == [("ua.fingerprint_mismatch", "browser user agent, policy:t13d1715h2_aaaaaaaaaaaa TLS")]


async def test_a_malformed_fingerprint_is_ignored(engine: Engine) -> None:
    ctx = await run(engine, headers={**BROWSER_HEADERS, "x-ja4-fingerprint": "-"})
    assert ctx.identity.fingerprint == ""
    assert ctx.signals == [("tls.fingerprint", "invalid")] and ctx.evidence == []


async def test_session_and_device_ids(engine: Engine) -> None:
    ctx = await run(engine, headers={**BROWSER_HEADERS, "cookie": "theme=dark; sid=abc123; other=1", "x-device-id": "dev-42"})
    assert ctx.identity.session == digest("abc123")  # a session cookie is a credential: never kept as sent
    assert ctx.identity.session.startswith("sha256:") and len(ctx.identity.session) == 39
    assert ctx.identity.device == "dev-42"
    long_id = "d" * 65
    ctx = await run(engine, headers={**BROWSER_HEADERS, "x-device-id": long_id})
    assert ctx.identity.device == digest(long_id)
    ctx = await run(engine)
    assert (ctx.identity.session, ctx.identity.device) == ("", "")


async def test_session_from_a_header(tmp_path: Path) -> None:
    e = make_engine(tmp_path, POLICY.replace("session: {cookie: sid}", "session: {header: x-session-id}"))
    ctx = await run(e, headers={**BROWSER_HEADERS, "x-session-id": "s-1", "cookie": "sid=other"})
    assert ctx.identity.session == digest("s-1")


async def test_ids_never_reach_the_decision_record(engine: Engine) -> None:
    d = await engine.decide(
        Request(method="GET", path="/v1/x", host="api.example.com", peer_ip="172.16.0.9", headers={**BROWSER_HEADERS, "cookie": "sid=secret-session-token"})
    )
    assert "secret-session-token" not in repr(d) and "secret-session-token" not in str(d.to_record())


async def test_no_evidence_on_allow_routes_and_for_refused_requests(engine: Engine) -> None:
    ctx = await run(engine, "/healthz", peer="203.0.113.9", headers={})
    assert ctx.evidence == []


async def test_without_sections_nothing_is_gathered(tmp_path: Path) -> None:
    e = make_engine(tmp_path, "version: 1\nroutes:\n  - {name: api, auth: [anonymous]}\n")
    assert not e.policy.evidence and not e.policy.client_ids
    ctx = await run(e, "/.env", query="id=1%20union%20select%201", headers={"user-agent": "sqlmap/1.8"})
    assert ctx.evidence == [] and ctx.signals == []


async def test_a_strength_of_zero_turns_a_family_off(tmp_path: Path) -> None:
    e = make_engine(tmp_path, POLICY.replace("user_agent: {}", "user_agent: {automation: 0}"))
    ctx = await run(e, headers={**BROWSER_HEADERS, "user-agent": "curl/8.5.0"})
    assert ctx.evidence == []
    ctx = await run(e, headers={**BROWSER_HEADERS, "user-agent": "nikto/2.5"})
    assert ctx.evidence == [("ua.scanner", 1.0)]


@pytest.mark.parametrize(
    ("header", "name", "value"),
    [
        ("sid=abc", "sid", "abc"),
        ("a=1; sid=abc; sid=def", "sid", "abc"),
        ('sid="quoted"', "sid", "quoted"),
        ("xsid=abc; sidx=def", "sid", ""),
        ("", "sid", ""),
        ("sid", "sid", ""),
    ],
)
def test_cookie_value(header: str, name: str, value: str) -> None:
    assert cookie_value(header, name) == value


@pytest.mark.parametrize(("value", "kept"), [("dev-42", True), ("a" * 64, True), ("a" * 65, False), ("has space", False), ("ünï", False)])
def test_bounded_id(value: str, kept: bool) -> None:
    assert (bounded_id(value) == value) is kept
    assert len(bounded_id(value)) <= 64


def test_docs_signals_lists_every_signal_with_its_default_strength() -> None:
    """docs/signals.md: one table row per evidence signal, showing the default the code uses."""
    from authz.stages import evidence as ev

    doc = (Path(__file__).resolve().parents[2] / "docs" / "signals.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in doc.splitlines() if line.startswith("| `")}
    expected = {
        "`list.<name>`": ev.DEFAULT_LIST_STRENGTH,
        "`network.hosting`": 1.0,
        "`probe.injection`": ev.DEFAULT_PROBES["injection"],
        "`probe.traversal`": ev.DEFAULT_PROBES["traversal"],
        "`probe.scanner_path`": ev.DEFAULT_PROBES["scanner_path"],
        "`ua.scanner`": ev.DEFAULT_SCANNER,
        "`ua.automation`": ev.DEFAULT_AUTOMATION,
        "`headers.missing`": ev.DEFAULT_MISSING_HEADERS,
        "`ua.fingerprint_mismatch`": ev.DEFAULT_MISMATCH,
    }
    for name, default in expected.items():
        assert name in rows, f"{name} has no row in docs/signals.md"
        assert f"({default})" in rows[name] or f"({default} for all three)" in rows[name], (name, rows[name])
    assert f"max_query_bytes: {ev.DEFAULT_MAX_QUERY_BYTES}" in doc
