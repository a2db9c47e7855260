"""The engine, stage by stage, on the memory store with a pinned clock.

Authentication methods here are small test authenticators (the real JWT and
signature methods have their own tests); everything else is the real code.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import pytest

from authz.clock import FixedClock
from authz.config.context import CompileContext
from authz.config.source import load
from authz.decision import AUTH_MISSING, REASONS, Decision, DecisionIds, Outcome
from authz.keys import EMPTY_KEYRING
from authz.pipeline import Engine
from authz.policy.compile import compile_policy
from authz.policy.model import Route
from authz.request import Request
from authz.stages.authenticate import Authenticator, AuthResult
from authz.stages.context import Ctx
from authz.store import MemoryStore
from authz.store.base import Op, Result, Store

T0 = 1_700_000_000_000

POLICY = """
version: 1
trusted_proxies: [10.0.0.0/8]
ip_lists:
  blocked: {cidrs: ["192.0.2.0/24 doc-net"]}
  partners: {cidrs: ["198.51.100.7 partner-a"]}
  office: {cidrs: ["203.0.113.0/24 office"]}
ip: {deny: [blocked], allow: [partners]}
quotas:
  two: {limit: 2, window: 10s, by: client}
  shared: {limit: 100, window: 1s, by: global}
routes:
  - name: health
    match: {path: {exact: /healthz}}
    action: allow
  - name: admin
    match: {path: {prefix: /admin/}}
    action: deny
  - name: internal
    match: {hosts: [internal.example.com]}
    auth: [anonymous]
    ip: {only: [office]}
  - name: private
    match: {path: {prefix: /private/}}
    auth: [anonymous]
    quota: [two]
    on_store_error: {quota: closed}
  - name: api
    match: {hosts: [api.example.com, "*.example.org"], methods: [GET, POST], path: {regex: "/v[0-9]+/.*"}}
    auth: [anonymous]
    quota: [shared, two]
"""


def engine(text: str = POLICY, store: Store | None = None) -> Engine:
    policy = compile_policy(load("policy.yaml", text), CompileContext(file="policy.yaml", base_dir=".", keyring=EMPTY_KEYRING))
    return Engine(policy, store or MemoryStore(epoch_ms=T0), clock=FixedClock(T0), ids=DecisionIds("test"))


def req(path: str = "/v1/items", *, host: str = "api.example.com", method: str = "GET", peer: str = "172.16.0.9", headers: dict[str, str] | None = None) -> Request:
    return Request(method=method, path=path, host=host, headers=headers or {}, peer_ip=peer)


async def test_allowed_request_carries_upstream_headers_and_ratelimit() -> None:
    d = await engine().decide(req(headers={"x-authz-subject": "forged", "x-authz-anything": "x", "accept": "*/*"}))
    assert (d.outcome, d.status, d.reason, d.route) == (Outcome.ALLOW, 200, "ok", "api")
    up = dict(d.upstream_headers)
    assert up["x-authz-decision-id"] == d.id == "test-000000000001"
    assert up["x-authz-client-ip"] == "172.16.0.9"
    assert up["x-authz-auth"] == "anonymous"
    assert "x-authz-subject" not in up
    assert sorted(d.remove_headers) == ["x-authz-anything", "x-authz-subject"]
    client = dict(d.client_headers)
    assert client["ratelimit"] == '"two";r=1;t=5'  # the most constrained of the two quotas
    assert client["ratelimit-policy"] == '"two";q=2;w=10'


async def test_route_no_match_denies() -> None:
    d = await engine().decide(req("/v1/x", host="other.example.net"))
    assert (d.outcome, d.status, d.reason, d.route) == (Outcome.DENY, 403, "route.no_match", "")
    assert d.body == b'{"error":"route.no_match","decision_id":"test-000000000001"}'
    assert ("x-authz-decision-id", d.id) in d.client_headers


@pytest.mark.parametrize(
    ("request_", "route"),
    [
        (req("/v1/x", method="DELETE"), None),
        (req("/v1", host="api.example.com"), None),
        (req("/v2/x", host="eu.example.org"), "api"),
        (req("/v2/x", host="eu.example.org:8443"), "api"),
        (req("/v2/x", host="example.org"), None),
        (req("/healthz"), "health"),
        (req("/healthz/more"), None),
    ],
)
async def test_route_matching(request_: Request, route: str | None) -> None:
    d = await engine().decide(request_)
    assert d.route == (route or "")


async def test_allow_route_skips_checks_and_deny_route_refuses() -> None:
    e = engine()
    assert (await e.decide(req("/healthz"))).reason == "ok"
    d = await e.decide(req("/admin/users"))
    assert (d.outcome, d.status, d.reason) == (Outcome.DENY, 403, "route.deny")


async def test_deny_list_wins_even_on_allow_routes() -> None:
    d = await engine().decide(req("/healthz", peer="192.0.2.50"))
    assert (d.status, d.reason) == (403, "ip.denied")
    assert ("ip.list", "blocked:doc-net") in d.signals


async def test_allow_list_admits_without_further_checks() -> None:
    e = engine()
    for _ in range(5):  # quota "two" would refuse the third
        d = await e.decide(req(peer="198.51.100.7"))
        assert (d.outcome, d.reason) == (Outcome.ALLOW, "ok.ip_allowlisted")


async def test_only_list_refuses_everyone_else() -> None:
    e = engine()
    assert (await e.decide(req("/", host="internal.example.com", peer="203.0.113.5"))).reason == "ok"
    d = await e.decide(req("/", host="internal.example.com", peer="172.16.0.1"))
    assert (d.status, d.reason) == (403, "ip.not_allowed")


async def test_forwarded_for_believed_only_through_trusted_proxies() -> None:
    e = engine()
    # from a trusted proxy: the first untrusted hop from the right is the client
    d = await e.decide(req(peer="10.0.0.2", headers={"x-forwarded-for": "192.0.2.9, 172.16.5.5, 10.0.0.1"}))
    assert d.identity.client_ip == "172.16.5.5"
    # the client wrote a blocked address itself; the trusted proxy appended the real one
    assert d.reason == "ok"
    d = await e.decide(req(peer="10.0.0.2", headers={"x-forwarded-for": "192.0.2.9"}))
    assert d.reason == "ip.denied"
    # from an untrusted peer the header is ignored
    d = await e.decide(req(peer="172.16.0.3", headers={"x-forwarded-for": "198.51.100.7"}))
    assert (d.identity.client_ip, d.reason) == ("172.16.0.3", "ok")


async def test_quota_exhausted_gives_429_with_retry_after() -> None:
    e = engine()
    assert [(await e.decide(req())).reason for _ in range(3)] == ["ok", "ok", "quota.exhausted"]
    d = await e.decide(req())
    assert (d.outcome, d.status) == (Outcome.LIMIT, 429)
    headers = dict(d.client_headers)
    assert headers["retry-after"] == "5"
    assert headers["ratelimit"] == '"two";r=0;t=5'
    assert ("quota.two", "exhausted") in d.signals
    # another client has its own bucket
    assert (await e.decide(req(peer="172.16.0.10"))).reason == "ok"


async def test_quota_refills_with_time() -> None:
    e = engine()
    for _ in range(2):
        await e.decide(req())
    assert (await e.decide(req())).reason == "quota.exhausted"
    assert isinstance(e.clock, FixedClock)
    e.clock.advance(5000)
    assert (await e.decide(req())).reason == "ok"


async def test_request_too_large() -> None:
    text = POLICY.replace("version: 1\n", "version: 1\nlimits: {max_headers: 3, max_target_bytes: 64}\n")
    e = engine(text)
    many = {f"h{i}": "v" for i in range(4)}
    assert (await e.decide(req(headers=many))).reason == "request.too_large"
    assert (await e.decide(req("/v1/" + "a" * 80))).reason == "request.too_large"
    assert (await e.decide(req("/v1/ok"))).reason == "ok"


class FailingStore(Store):
    """A store whose backend is down: every batch fails as a Redis outage would."""

    kind = "failing"

    async def _apply(self, ops: Sequence[Op], now_ms: int, dry_run: bool) -> list[Result]:
        raise ConnectionRefusedError("connection refused")  # Store.apply wraps it as a StoreError

    async def ping(self) -> bool:
        return False


async def test_store_failure_fails_open_for_quota_by_default() -> None:
    d = await engine(store=FailingStore()).decide(req())
    assert (d.outcome, d.status, d.reason) == (Outcome.ALLOW, 200, "ok.store_unavailable")
    assert ("store.error", "ConnectionRefusedError") in d.signals


async def test_store_failure_fails_closed_where_the_route_says() -> None:
    d = await engine(store=FailingStore()).decide(req("/private/x"))
    assert (d.outcome, d.status, d.reason) == (Outcome.ERROR, 503, "store.unavailable")
    assert ("store.fail_closed", "quota") in d.signals


class _Stub(Authenticator):
    """A test authenticator: accepts the header value "good", refuses anything else."""

    kind = "stub"
    name = "t"

    def present(self, req: Request) -> bool:
        return "x-stub" in req.headers

    async def authenticate(self, req: Request, ctx: Ctx) -> AuthResult:
        if req.headers["x-stub"] == "good":
            return AuthResult(ok=True, subject="alice", key_id="k1", upstream_headers=[("x-authz-scope", "read")])
        if req.headers["x-stub"] == "boom":
            raise RuntimeError("bug in a stage")
        return AuthResult(ok=False, reason=AUTH_MISSING, challenge='Stub realm="t"')

    def challenge(self) -> str:
        return 'Stub realm="t"'


def with_stub(anonymous: bool) -> Engine:
    e = engine()
    route = Route(name="stubbed", match=e.policy.routes[-1].match, auth=(_Stub(),), anonymous=anonymous, quotas=e.policy.routes[-1].quotas)
    e.policy = type(e.policy)(file="p", routes=(route,))
    return e


async def test_route_requiring_authentication_without_credentials() -> None:
    d = await with_stub(anonymous=False).decide(req())
    assert (d.status, d.reason) == (401, "auth.missing")
    assert ("www-authenticate", 'Stub realm="t"') in d.client_headers


async def test_authenticated_identity_reaches_upstream_and_counts_quota_by_subject() -> None:
    e = with_stub(anonymous=True)
    d = await e.decide(req(headers={"x-stub": "good"}))
    up = dict(d.upstream_headers)
    assert (d.reason, up["x-authz-subject"], up["x-authz-key-id"], up["x-authz-auth"]) == ("ok", "alice", "k1", "stub:t")
    assert up["x-authz-scope"] == "read"
    # the same subject from another address shares the bucket ("two" allows 2)
    assert (await e.decide(req(peer="172.16.9.9", headers={"x-stub": "good"}))).reason == "ok"
    assert (await e.decide(req(peer="172.16.9.10", headers={"x-stub": "good"}))).reason == "quota.exhausted"


async def test_bad_credentials_are_never_downgraded_to_anonymous() -> None:
    d = await with_stub(anonymous=True).decide(req(headers={"x-stub": "forged"}))
    assert (d.status, d.reason) == (401, "auth.missing")


async def test_an_exception_in_a_stage_fails_closed_with_503() -> None:
    seen: list[Decision] = []
    e = with_stub(anonymous=True)
    e.on_decision = seen.append
    d = await e.decide(req(headers={"x-stub": "boom"}))
    assert (d.outcome, d.status, d.reason) == (Outcome.ERROR, 503, "internal.error")
    assert seen == [d]


def test_reason_vocabulary_is_documented() -> None:
    from authz.stages.authenticate import registered_kinds

    registered_kinds()  # registers the codes of every method kind
    doc = (pathlib.Path(__file__).parent.parent.parent / "docs" / "reasons.md").read_text()
    for code, reason in REASONS.items():
        row = f"| `{code}` | {reason.outcome.value} | {reason.status} | {reason.description} |"
        assert row in doc, f"{code} missing or out of date in docs/reasons.md (regenerate with `authz reasons`)"
