"""Proof-of-work challenges: issue, verify, single use, rotation, through the real engine.

The engine and the memory store are the real ones, on a pinned clock; the
solutions come from the reference solver (``authz.challenge.solve``), so what
passes here is what a client using it gets.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import pathlib
from collections.abc import Sequence

import pytest
from http_sfv.dictionary import Dictionary
from hypothesis import given
from hypothesis import strategies as st

from authz.challenge import (
    ChallengeFormatError,
    SolveError,
    find_nonce,
    format_challenge,
    format_solution,
    leading_zero_bits,
    parse_challenge,
    parse_solution,
    solve,
    solved,
    target,
)
from authz.clock import FixedClock
from authz.decision import Decision, DecisionIds, Outcome
from authz.pipeline import Engine
from authz.policy.compile import load_policy
from authz.request import Request
from authz.stages.challenge import Challenger, ChallengeState
from authz.stages.context import Ctx
from authz.store import MemoryStore
from authz.store.base import Op, Result, Store

T0 = 1_800_000_000_000
SECRET = b"challenge-secret-0123456789abcdefghijklmnopqrstuvwxyz"
OLD_SECRET = b"the-previous-challenge-secret-0123456789abcdefghijkl"
OTHER_SECRET = b"some-other-servers-secret-0123456789abcdefghijklmnop"

POLICY = """
version: 1
challenges:
  default:
    secret_file: challenge.key
    accept: [{secret_file: challenge.old, until: "2027-01-15T09:00:00Z"}]
    ttl: 2m
    base_difficulty: 8
    max_difficulty: 12
quotas:
  one: {limit: 1, window: 1h, by: ip}
routes:
  - name: signup
    match: {path: {exact: /signup}}
    auth: [anonymous]
    challenge: default
  - name: login
    match: {path: {exact: /login}}
    auth: [anonymous]
    challenge: default
  - name: scarce
    match: {path: {exact: /scarce}}
    auth: [anonymous]
    challenge: default
    quota: [one]
  - name: open
    match: {path: {exact: /open}}
    auth: [anonymous]
"""
#: the old secret's "until" in POLICY, an hour after T0 (2027-01-15T08:00:00Z)
GRACE_END_MS = T0 + 3_600_000


class Stack:
    def __init__(self, tmp: pathlib.Path, store: Store | None = None, text: str = POLICY) -> None:
        (tmp / "challenge.key").write_bytes(SECRET + b"\n")
        (tmp / "challenge.old").write_bytes(OLD_SECRET)
        (tmp / "policy.yaml").write_text(text)
        self.policy = load_policy(str(tmp / "policy.yaml"))
        self.clock = FixedClock(T0)
        self.store = store or MemoryStore(epoch_ms=T0 - 60_000)
        self.engine = Engine(self.policy, self.store, clock=self.clock, ids=DecisionIds("t"))

    @property
    def challenger(self) -> Challenger:
        return self.policy.challengers["default"]

    async def get(self, path: str = "/signup", solution: str | None = None, peer: str = "198.51.100.7", **headers: str) -> Decision:
        h = dict(headers)
        if solution is not None:
            h["authz-solution"] = solution
        return await self.engine.decide(Request(method="GET", path=path, host="api.example.com", headers=h, peer_ip=peer))


@pytest.fixture
def stack(tmp_path: pathlib.Path) -> Stack:
    return Stack(tmp_path)


def challenge_of(d: Decision) -> str:
    values = [v for n, v in d.client_headers if n == "authz-challenge"]
    assert len(values) == 1, d.client_headers
    return values[0]


def error_of(d: Decision) -> str:
    return str(json.loads(d.body)["error"])


def token_of(challenge: str) -> str:
    return parse_challenge(challenge).token


def solve_at(challenge: str, now_ms: int = T0) -> str:
    return solve(challenge, max_seconds=10, now=now_ms / 1000)


# -- the happy path and single use --------------------------------------------


async def test_without_a_solution_the_answer_is_401_with_a_challenge(stack: Stack) -> None:
    d = await stack.get()
    assert (d.outcome, d.status, d.reason) == (Outcome.CHALLENGE, 401, "challenge.required")
    headers = dict(d.client_headers)
    assert headers["www-authenticate"] == 'PoW realm="authz"'
    parsed = Dictionary()
    parsed.parse(challenge_of(d).encode())
    assert [k for k in parsed] == ["v", "c", "d", "exp"]
    assert (parsed["v"].value, parsed["d"].value, parsed["exp"].value) == (1, 8, (T0 + 120_000) // 1000)
    fields = parsed["c"].value.split(".")
    assert len(fields) == 9 and fields[0] == "v1" and fields[2] == "8"
    assert (int(fields[3]), int(fields[4])) == (T0, T0 + 120_000)
    assert json.loads(d.body)["hint"].startswith("solve the proof of work")
    assert ("challenge.issued", "8") in d.signals


async def test_a_solution_passes_once_and_its_replay_gets_a_fresh_challenge(stack: Stack) -> None:
    first = await stack.get()
    solution = solve_at(challenge_of(first))
    ok = await stack.get(solution=solution)
    assert (ok.outcome, ok.reason) == (Outcome.ALLOW, "ok")
    assert "authz-solution" in ok.remove_headers  # the backend never sees it
    assert ("challenge.solved", "8") in ok.signals

    again = await stack.get(solution=solution)
    assert (again.status, again.reason) == (401, "challenge.replay")
    assert token_of(challenge_of(again)) != token_of(challenge_of(first))
    # the fresh challenge works
    assert (await stack.get(solution=solve_at(challenge_of(again)))).reason == "ok"


async def test_of_twenty_concurrent_uses_of_one_solution_exactly_one_passes(stack: Stack) -> None:
    solution = solve_at(challenge_of(await stack.get()))
    decisions = await asyncio.gather(*(stack.get(solution=solution) for _ in range(20)))
    reasons = sorted(d.reason for d in decisions)
    assert reasons.count("ok") == 1
    assert reasons.count("challenge.replay") == 19


async def test_two_challenges_are_never_the_same(stack: Stack) -> None:
    tokens = {token_of(challenge_of(await stack.get())) for _ in range(50)}
    assert len(tokens) == 50


async def test_the_claim_is_unspent_when_the_quota_refuses(tmp_path: pathlib.Path) -> None:
    text = POLICY.replace("one: {limit: 1, window: 1h, by: ip}", "one: {limit: 1, window: 10s, by: ip}")
    s = Stack(tmp_path, text=text)
    assert (await s.get("/scarce", solve_at(challenge_of(await s.get("/scarce"))))).reason == "ok"
    solution = solve_at(challenge_of(await s.get("/scarce")))
    assert (await s.get("/scarce", solution)).reason == "quota.exhausted"
    s.clock.advance(10_000)
    assert (await s.get("/scarce", solution)).reason == "ok"
    assert (await s.get("/scarce", solution)).reason == "challenge.replay"


async def test_a_route_without_the_option_ignores_solutions(stack: Stack) -> None:
    d = await stack.get("/open", solution='c="junk", n="1"')
    assert d.reason == "ok"


# -- each failure, its own reason -----------------------------------------------


async def test_a_wrong_nonce_is_refused(stack: Stack) -> None:
    token = token_of(challenge_of(await stack.get()))
    nonce = next(str(i) for i in range(1000) if not solved(token, str(i), 8))
    d = await stack.get(solution=format_solution(token, nonce))
    assert (d.outcome, d.status, d.reason) == (Outcome.CHALLENGE, 401, "challenge.wrong_solution")
    assert ("challenge.failed", "challenge.wrong_solution") in d.signals
    challenge_of(d)  # a new challenge comes with every refusal


async def test_an_expired_solution_is_refused(stack: Stack) -> None:
    a = solve_at(challenge_of(await stack.get()))
    b = solve_at(challenge_of(await stack.get()))
    stack.clock.advance(119_999)  # the ttl is 2m
    assert (await stack.get(solution=b)).reason == "ok"
    stack.clock.advance(1)
    assert (await stack.get(solution=a)).reason == "challenge.expired"


async def test_another_clients_solution_is_refused(stack: Stack) -> None:
    solution = solve_at(challenge_of(await stack.get(peer="198.51.100.7")))
    d = await stack.get(solution=solution, peer="203.0.113.9")
    assert d.reason == "challenge.foreign_identity"
    # and it was not spent: its owner can still use it
    assert (await stack.get(solution=solution, peer="198.51.100.7")).reason == "ok"


async def test_a_solution_for_another_route_is_refused(stack: Stack) -> None:
    solution = solve_at(challenge_of(await stack.get("/signup")))
    assert (await stack.get("/login", solution)).reason == "challenge.foreign_route"
    assert (await stack.get("/signup", solution)).reason == "ok"


def _with_field(token: str, index: int, value: str) -> str:
    fields = token.split(".")
    fields[index] = value
    return ".".join(fields)


async def test_a_lowered_difficulty_is_refused_as_invalid(stack: Stack) -> None:
    token = token_of(challenge_of(await stack.get()))
    easy = _with_field(token, 2, "1")
    nonce = find_nonce(easy, 1, deadline=float("inf"))
    assert (await stack.get(solution=format_solution(easy, nonce))).reason == "challenge.invalid"


@pytest.mark.parametrize(
    ("index", "what"),
    [(1, "kid"), (3, "iat"), (4, "exp"), (5, "salt"), (6, "binding tag"), (7, "route tag"), (8, "mac")],
)
async def test_any_altered_field_is_refused_as_invalid(stack: Stack, index: int, what: str) -> None:
    token = token_of(challenge_of(await stack.get()))
    original = token.split(".")[index]
    altered = original[:-1] + ("A" if original[-1] != "A" else "B")
    if index == 4:
        altered = str(int(original) + 3_600_000)  # a longer life
    forged = _with_field(token, index, altered)
    nonce = find_nonce(forged, 8, deadline=float("inf"))
    assert (await stack.get(solution=format_solution(forged, nonce))).reason == "challenge.invalid", what


async def test_another_servers_challenge_is_refused_as_invalid(stack: Stack) -> None:
    foreign = Challenger("x", OTHER_SECRET, base_difficulty=8, max_difficulty=8)
    token = foreign.token(T0, "ip:198.51.100.7", "signup", 8)
    nonce = find_nonce(token, 8, deadline=float("inf"))
    assert (await stack.get(solution=format_solution(token, nonce))).reason == "challenge.invalid"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        'c="v1.a.b", n="1"',  # too few fields
        'c="v2.a.8.1.2.s.b.r.m", n="1"',  # unknown version
        'c="v1.a.8.1.2.s.b.r.m.x", n="1"',  # too many fields
        'c="v1.a.8.1.2.s.b.r.m"',  # no nonce
        'n="1"',
        'c="v1.a.8.1.2.s.b.r.m", n="1", c="v1.b.8.1.2.s.b.r.m"',  # two lines joined by the door
        'c="v1.a.8.1.2.s.b.r.m", n="1", extra=1',
        'c="v1.a.8.1.2.s.b.r.m", n="has space"',
        'c="v1.a.8.1.2.s.b.r.m", n="' + "1" * 65 + '"',
        'c="v1.a.8.1.2.s.b.r.m", n=1',  # an integer, not a string
        "c=v1, n=x",  # tokens, not strings
        'c="v1.a.8.1.2.s.b.r.m";p=1, n="1"',
        'c="' + "a" * 300 + '", n="1"',
        'c="v1.ä.8", n="1"',
    ],
)
async def test_a_malformed_solution_is_refused_never_a_crash(stack: Stack, value: str) -> None:
    d = await stack.get(solution=value)
    assert (d.outcome, d.reason) == (Outcome.CHALLENGE, "challenge.malformed")
    challenge_of(d)


async def test_a_solution_from_before_the_stores_epoch_is_unverifiable(tmp_path: pathlib.Path) -> None:
    s = Stack(tmp_path)
    solution = solve_at(challenge_of(await s.get()))
    s.engine.store = MemoryStore(epoch_ms=T0 + 1)  # the store restarted after the challenge was issued
    d = await s.get(solution=solution)
    assert (d.status, d.reason) == (401, "challenge.replay_unverifiable")
    challenge_of(d)


class FailingStore(Store):
    kind = "failing"

    async def _apply(self, ops: Sequence[Op], now_ms: int, dry_run: bool) -> list[Result]:
        raise ConnectionRefusedError("down")

    async def ping(self) -> bool:
        return False


async def test_a_solution_fails_closed_when_the_store_is_down(tmp_path: pathlib.Path) -> None:
    s = Stack(tmp_path, store=FailingStore())
    solution = solve_at(challenge_of(await s.get()))  # issuing needs no store
    d = await s.get(solution=solution)
    assert (d.status, d.reason) == (503, "store.unavailable")
    assert ("store.fail_closed", "replay") in d.signals


async def test_on_store_error_replay_open_lets_a_solution_through(tmp_path: pathlib.Path) -> None:
    text = POLICY.replace("    challenge: default\n  - name: login", "    challenge: default\n    on_store_error: {replay: open}\n  - name: login")
    s = Stack(tmp_path, store=FailingStore(), text=text)
    d = await s.get(solution=solve_at(challenge_of(await s.get())))
    assert d.reason == "ok.store_unavailable"


# -- rotation ---------------------------------------------------------------------


async def test_the_previous_secret_verifies_until_its_time_then_not(stack: Stack) -> None:
    until_ms = GRACE_END_MS
    old = Challenger("old", OLD_SECRET, base_difficulty=8, max_difficulty=8)
    now = until_ms - 60_000
    stack.clock.ms = now
    token = old.token(now, "ip:198.51.100.7", "signup", 8)
    solution = format_solution(token, find_nonce(token, 8, deadline=float("inf")))
    d = await stack.get(solution=solution)
    assert d.reason == "ok"

    token = old.token(now, "ip:198.51.100.7", "signup", 8)
    late = format_solution(token, find_nonce(token, 8, deadline=float("inf")))
    stack.clock.ms = until_ms
    assert (await stack.get(solution=late)).reason == "challenge.invalid"


async def test_the_previous_secret_never_issues(stack: Stack) -> None:
    d = await stack.get()
    kid = token_of(challenge_of(d)).split(".")[1]
    assert kid == Challenger("x", SECRET).token(T0, "", "", 8).split(".")[1]
    assert kid != Challenger("x", OLD_SECRET).token(T0, "", "", 8).split(".")[1]


async def test_a_challenge_of_the_new_secret_passes_where_it_is_only_accepted(tmp_path: pathlib.Path) -> None:
    """The first step of a rotation across hosts: the new secret is accepted everywhere before any host issues with it."""
    s = Stack(tmp_path)
    (tmp_path / "challenge.key").write_bytes(OLD_SECRET)
    (tmp_path / "challenge.old").write_bytes(SECRET)
    swapped = load_policy(str(tmp_path / "policy.yaml")).challengers["default"]
    token = swapped.token(T0, "ip:198.51.100.7", "signup", 8)
    assert (await s.get(solution=format_solution(token, find_nonce(token, 8, float("inf"))))).reason == "ok"


# -- the API the reputation stage calls ------------------------------------------------


def ctx_for(headers: dict[str, str] | None = None, now_ms: int = T0) -> Ctx:
    return Ctx(Request(method="GET", path="/x", host="h", headers=headers or {}, peer_ip="192.0.2.1"), now_ms, "id")


def test_check_reports_absent_passed_and_failed_and_plans_only_for_a_pass() -> None:
    c = Challenger("c", SECRET, base_difficulty=8, max_difficulty=16)
    ctx = ctx_for()
    assert c.check(ctx, "sub:alice", "r").state is ChallengeState.ABSENT
    assert ctx.ops == [] and ctx.reason is None

    headers = c.issue(ctx_for(), "sub:alice", "r", 10)
    assert headers[1] == ("www-authenticate", 'PoW realm="authz"')
    solution = solve(headers[0][1], now=T0 / 1000)
    ctx = ctx_for({"authz-solution": solution})
    result = c.check(ctx, "sub:alice", "r")
    assert (result.state, result.difficulty, result.reason) == (ChallengeState.PASSED, 10, None)
    (op,) = ctx.ops
    assert op.key.startswith("pow:") and op.created_ms == T0  # type: ignore[attr-defined]
    assert ctx.reason is None  # check never refuses: its caller decides

    ctx = ctx_for({"authz-solution": solution})
    result = c.check(ctx, "sub:alice", "r", min_difficulty=11)
    assert (result.state, result.reason) == (ChallengeState.FAILED, "challenge.insufficient")
    assert ctx.ops == [] and ctx.reason is None


def test_a_demand_above_the_cap_can_still_be_met() -> None:
    c = Challenger("c", SECRET, base_difficulty=8, max_difficulty=10)
    header = c.issue(ctx_for(), "b", "r", 99)[0][1]
    ctx = ctx_for({"authz-solution": solve(header, now=T0 / 1000)})
    assert c.check(ctx, "b", "r", min_difficulty=99).state is ChallengeState.PASSED


def test_issue_clamps_the_difficulty_to_the_cap() -> None:
    c = Challenger("c", SECRET, base_difficulty=8, max_difficulty=12)
    assert parse_challenge(c.issue(ctx_for(), "b", "r", 40)[0][1]).difficulty == 12
    assert parse_challenge(c.issue(ctx_for(), "b", "r", -3)[0][1]).difficulty == 1


def test_demand_refuses_with_the_status_asked_for() -> None:
    c = Challenger("c", SECRET, base_difficulty=8, max_difficulty=12)
    ctx = ctx_for()
    c.demand(ctx, "b", "r", 10, status=429)
    assert (ctx.reason, ctx.status) == ("challenge.required", 429)
    assert parse_challenge(dict(ctx.deny_headers)["authz-challenge"]).difficulty == 10


def test_difficulty_grows_with_the_score_and_is_capped() -> None:
    c = Challenger("c", SECRET, base_difficulty=16, max_difficulty=24)
    got = [c.difficulty_for(s) for s in range(101)]
    assert got[0] == 16 and got[100] == 24 and got[50] == 20
    assert got == sorted(got)
    assert c.difficulty_for(-5) == 16 and c.difficulty_for(1e9) == 24
    assert c.difficulty_for(float("nan")) == 24


def test_a_bad_challenger_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Challenger("c", b"short")
    with pytest.raises(ValueError, match="base_difficulty"):
        Challenger("c", SECRET, base_difficulty=20, max_difficulty=16)
    with pytest.raises(ValueError, match="twice"):
        Challenger("c", SECRET, accept=((SECRET, T0),))


# -- the secret stays secret ------------------------------------------------------------


async def test_the_secret_appears_in_no_repr_decision_header_or_body(stack: Stack) -> None:
    spellings = [SECRET, SECRET.hex().encode(), base64.b64encode(SECRET), OLD_SECRET, OLD_SECRET.hex().encode()]
    key = hmac.digest(SECRET, b"authz challenge v1", "sha256")  # what the MACs are keyed with
    derived = [key, key.hex().encode(), base64.urlsafe_b64encode(key).rstrip(b"=")]
    d1 = await stack.get()
    d2 = await stack.get(solution=solve_at(challenge_of(d1)))
    seen = "\n".join(
        [
            repr(stack.policy),
            repr(stack.challenger),
            *(repr(d) for d in (d1, d2)),
            *(json.dumps(d.to_record()) for d in (d1, d2)),
        ]
    ).encode()
    for s in [*spellings, *derived]:
        assert s not in seen
        assert s[:16] not in seen


# -- the format and the solver -------------------------------------------------------------


def test_target_and_leading_zero_bits_agree() -> None:
    for d in (1, 8, 13, 32):
        bound = target(d)
        assert leading_zero_bits(bound) == d - 1  # the bound itself is 2**(256-d): d-1 zeros, then a one
        assert leading_zero_bits((int.from_bytes(bound, "big") - 1).to_bytes(32, "big")) == d
    with pytest.raises(ValueError):
        target(0)
    with pytest.raises(ValueError):
        target(33)


def test_a_found_nonce_has_the_leading_zero_bits() -> None:
    token = "v1.x.12.1.2.salt.b.r.mac"
    nonce = find_nonce(token, 12, deadline=float("inf"))
    assert leading_zero_bits(hashlib.sha256((token + nonce).encode()).digest()) >= 12
    assert solved(token, nonce, 12)


@pytest.mark.parametrize(
    "value",
    [
        'c="v1.abc", n="42"',
        'n="42", c="v1.abc"',
        'c="v1.abc",n="42"',
        'c="v1.abc",   n="42"',
        '  c="v1.abc", n="42"',
    ],
)
def test_every_serialization_of_a_solution_reads_the_same(value: str) -> None:
    assert parse_solution(value) == ("v1.abc", "42")


def test_solve_refuses_too_hard_expired_and_unreadable_challenges() -> None:
    header = format_challenge("v1.abc", 20, 2_000)
    with pytest.raises(SolveError, match="above the limit of 16"):
        solve(header, max_difficulty=16, now=1_000)
    with pytest.raises(SolveError, match="expired"):
        solve(header, now=2_001)
    with pytest.raises(ChallengeFormatError):
        solve("v=2, c=\"x\", d=3, exp=5", now=1)
    with pytest.raises(ChallengeFormatError):
        solve('v=1, c="x", d=33, exp=5', now=1)
    with pytest.raises(ChallengeFormatError, match="no Authz-Challenge"):
        solve("HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n\r\n{}", now=1)


def test_solve_gives_up_at_its_time_limit() -> None:
    import time

    started = time.monotonic()
    with pytest.raises(SolveError, match="time limit"):
        solve(format_challenge("v1.abc", 32, 10**10), max_difficulty=32, max_seconds=0.2, now=1)
    assert time.monotonic() - started < 2


def test_solve_stops_when_the_challenge_expires() -> None:
    import time

    now = time.time()
    started = time.monotonic()
    with pytest.raises(SolveError, match="time limit"):
        solve(format_challenge("v1.abc", 32, int(now) + 1), max_difficulty=32, max_seconds=60, now=now)
    assert time.monotonic() - started < 3


def test_solve_reads_a_whole_curl_response() -> None:
    header = format_challenge("v1.abc", 4, 10**10)
    response = f"HTTP/1.1 401 Unauthorized\r\nwww-authenticate: PoW realm=\"authz\"\r\nAuthz-Challenge: {header}\r\n\r\n{{\"error\":\"challenge.required\"}}"
    token, nonce = parse_solution(solve(response, now=1))
    assert token == "v1.abc" and solved(token, nonce, 4)


@given(
    token=st.from_regex(r"[A-Za-z0-9_.-]{1,256}", fullmatch=True),
    nonce=st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True),
    spaces=st.integers(0, 3),
)
def test_the_fast_and_the_general_parser_agree(token: str, nonce: str, spaces: int) -> None:
    canonical = format_solution(token, nonce)
    assert parse_solution(canonical) == (token, nonce)
    other = f'n="{nonce}",{" " * spaces}c="{token}"'  # not the canonical form: the general parser
    assert parse_solution(other) == (token, nonce)


@given(st.text(max_size=600))
def test_any_solution_text_parses_or_is_refused_as_malformed(value: str) -> None:
    try:
        token, nonce = parse_solution(value)
    except ChallengeFormatError:
        return
    assert 1 <= len(token) <= 256 and 1 <= len(nonce) <= 64
