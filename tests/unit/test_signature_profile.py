"""The ``signature`` and ``kong_hmac`` methods through the real engine and memory store.

Keys are generated per test session and written to a real keys file; the
policy is a real policy file; the clock is pinned.
"""

from __future__ import annotations

import base64
import json
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from authz.clock import FixedClock
from authz.decision import Decision
from authz.errors import ConfigError
from authz.httpsig import cavage, sign_request
from authz.pipeline import Engine
from authz.policy.compile import load_policy
from authz.request import Request, join_field_lines
from authz.store import MemoryStore

T0 = 1_700_000_000_000
NOW = T0 // 1000
HMAC_SECRET = bytes(range(32)) + b"authz-test-secret"

POLICY = """
version: 1
keys_file: keys.yaml
signatures:
  bots: {}
  strict:
    label: sig1
    tag: app-1
    components: ["@method", "@target-uri", "content-type", '"@query-param";name="id"']
    max_age: 60s
    clock_skew: 2s
    keys: [ed, hmac]
kong_hmac:
  legacy: {single_use: true, enforce_headers: [request-line], clock_skew: 300s}
routes:
  - name: signed
    match: {path: {prefix: /signed/}}
    auth: [signature:bots]
  - name: strict
    match: {path: {prefix: /strict/}}
    auth: [signature:strict]
  - name: kong
    match: {path: {prefix: /kong/}}
    auth: [kong_hmac:legacy]
"""


@dataclass
class Keys:
    """Private keys by key id (HMAC: the secret), and each key's algorithm."""

    private: dict[str, Any]
    algorithm: dict[str, str]


def _pem(key: Any) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(
        private={
            "ed": ed25519.Ed25519PrivateKey.generate(),
            "p256": ec.generate_private_key(ec.SECP256R1()),
            "p384": ec.generate_private_key(ec.SECP384R1()),
            "pss": rsa.generate_private_key(65537, 2048),
            "v15": rsa.generate_private_key(65537, 2048),
            "hmac": HMAC_SECRET,
            "kong": HMAC_SECRET[::-1],
            "kong512": HMAC_SECRET * 2,
        },
        algorithm={
            "ed": "ed25519",
            "p256": "ecdsa-p256-sha256",
            "p384": "ecdsa-p384-sha384",
            "pss": "rsa-pss-sha512",
            "v15": "rsa-v1_5-sha256",
            "hmac": "hmac-sha256",
            "kong": "hmac-sha256",
            "kong512": "HS512",
        },
    )


def write_keys(directory: pathlib.Path, keys: Keys) -> None:
    lines = ["keys:"]
    for kid, key in keys.private.items():
        lines += [f"  - id: {kid}", f"    algorithm: {keys.algorithm[kid]}", f"    subject: sub-{kid}"]
        if isinstance(key, bytes):
            lines.append(f"    secret: {base64.b64encode(key).decode()}")
        else:
            lines.append("    public_key: |")
            lines += [f"      {line}" for line in _pem(key).splitlines()]
    (directory / "keys.yaml").write_text("\n".join(lines) + "\n")


def write_policy(directory: pathlib.Path, keys: Keys, text: str = POLICY) -> str:
    write_keys(directory, keys)
    (directory / "policy.yaml").write_text(text)
    return str(directory / "policy.yaml")


class Harness:
    """An engine on the memory store with a pinned clock; builds and decides requests."""

    def __init__(self, policy_path: str, keys: Keys) -> None:
        self.keys = keys
        self.clock = FixedClock(T0)
        self.policy = load_policy(policy_path)
        self.engine = Engine(self.policy, MemoryStore(epoch_ms=T0 - 600_000), clock=self.clock)

    def restart_store(self) -> None:
        """A store that lost its memory: its epoch is now."""
        self.engine.store = MemoryStore(epoch_ms=self.clock.now_ms())

    def signed(
        self,
        url: str,
        kid: str = "ed",
        method: str = "GET",
        headers: Sequence[tuple[str, str]] = (),
        **kw: Any,
    ) -> list[tuple[str, str]]:
        kw.setdefault("created", NOW)
        added = sign_request(method, url, headers, key_id=kid, algorithm=self.keys.algorithm[kid], key=self.keys.private[kid], **kw)
        return [*headers, *added]

    async def decide(self, url: str, headers: Sequence[tuple[str, str]], method: str = "GET") -> Decision:
        return await self.engine.decide(to_request(method, url, headers))


def to_request(method: str, url: str, headers: Sequence[tuple[str, str]]) -> Request:
    parts = urlsplit(url)
    return Request(
        method=method,
        path=parts.path or "/",
        query=parts.query,
        has_query="?" in url,
        host=parts.netloc,
        scheme=parts.scheme,
        protocol="HTTP/1.1",
        headers=join_field_lines([(n.lower(), v) for n, v in headers]),
        peer_ip="127.0.0.1",
    )


@pytest.fixture
def h(tmp_path: pathlib.Path, keys: Keys) -> Harness:
    return Harness(write_policy(tmp_path, keys), keys)


URL = "http://api.example.com/signed/items?page=2"


@pytest.mark.parametrize("kid", ["ed", "p256", "p384", "pss", "v15", "hmac"])
async def test_each_algorithm_passes_and_names_the_key(h: Harness, kid: str) -> None:
    d = await h.decide(URL, h.signed(URL, kid))
    assert (d.reason, d.status) == ("ok", 200), d.signals
    assert d.identity.key_id == kid and d.identity.subject == f"sub-{kid}"
    assert ("x-authz-key-id", kid) in d.upstream_headers
    assert d.identity.method == "signature:bots"


async def test_a_nonce_is_accepted_once(h: Harness) -> None:
    headers = h.signed(URL)
    assert (await h.decide(URL, headers)).reason == "ok"
    again = await h.decide(URL, headers)
    assert (again.reason, again.status) == ("sig.replay", 401)
    assert ("www-authenticate", 'Signature realm="bots"') in again.client_headers
    # a new nonce from the same key is fine
    assert (await h.decide(URL, h.signed(URL))).reason == "ok"


async def test_a_store_that_lost_its_memory_refuses_older_signatures(h: Harness) -> None:
    headers = h.signed(URL)
    assert (await h.decide(URL, headers)).reason == "ok"
    h.clock.advance(10_000)
    h.restart_store()
    replay = await h.decide(URL, headers)
    assert replay.reason == "sig.replay_unverifiable"
    assert ("sig.replay_unverifiable", "before_store_epoch") in replay.signals
    assert "sign the request again" in json.loads(replay.body)["hint"]
    assert ("www-authenticate", 'Signature realm="bots", error_description="sign again"') in replay.client_headers
    assert any(n == "accept-signature" for n, _ in replay.client_headers)
    # a signature made within the skew before the new epoch may have been seen before it
    near = h.signed(URL, created=h.clock.now_ms() // 1000 + 4)
    assert (await h.decide(URL, near)).reason == "sig.replay_unverifiable"
    # one made at least the skew after it passes
    h.clock.advance(6000)
    assert (await h.decide(URL, h.signed(URL, created=h.clock.now_ms() // 1000))).reason == "ok"


async def test_a_future_dated_signature_is_not_replayable_across_a_restart(h: Harness) -> None:
    # created 4 s ahead (inside the 5 s skew), used, then the store restarts before that time
    headers = h.signed(URL, created=NOW + 4)
    assert (await h.decide(URL, headers)).reason == "ok"
    h.clock.advance(1000)
    h.restart_store()
    assert (await h.decide(URL, headers)).reason == "sig.replay_unverifiable"


async def test_the_nonce_claim_lasts_the_whole_window(h: Harness) -> None:
    headers = h.signed(URL)
    assert (await h.decide(URL, headers)).reason == "ok"
    # just inside max_age (5m) + skew (5s): still remembered
    h.clock.advance(300_000 + 4_000)
    assert (await h.decide(URL, headers)).reason == "sig.replay"
    h.clock.advance(2_000)
    assert (await h.decide(URL, headers)).reason == "sig.too_old"


TAMPER = [
    ("@method", lambda m, u, hs: ("PUT", u, hs)),
    ("@target-uri path", lambda m, u, hs: (m, u.replace("/items", "/other"), hs)),
    ("@target-uri query", lambda m, u, hs: (m, u.replace("page=2", "page=3"), hs)),
    ("@target-uri host", lambda m, u, hs: (m, u.replace("api.example.com", "evil.example.com"), hs)),
    ("@target-uri scheme", lambda m, u, hs: (m, u.replace("http://", "https://"), hs)),
    ("content-type", lambda m, u, hs: (m, u, [(n, "text/plain" if n == "content-type" else v) for n, v in hs])),
    ("second content-type line", lambda m, u, hs: (m, u, [*hs, ("content-type", "text/html")])),
    ("content-digest", lambda m, u, hs: (m, u, [(n, v.replace("sha-256=:", "sha-256=:A") if n == "Content-Digest" else v) for n, v in hs])),
    ("signature-params", lambda m, u, hs: (m, u, [(n, v.replace(";keyid", ";tag=\"x\";keyid") if n == "Signature-Input" else v) for n, v in hs])),
]


@pytest.mark.parametrize(("what", "change"), TAMPER, ids=[t[0] for t in TAMPER])
async def test_tampering_with_any_covered_component_fails(h: Harness, what: str, change: Any) -> None:
    body_headers = [("content-type", "application/json"), ("content-length", "9")]
    headers = h.signed(URL, method="POST", headers=body_headers, components=["@method", "@target-uri", "content-type"], body=b'{"a": 1}')
    method, url, tampered = change("POST", URL, headers)
    d = await h.decide(url, tampered, method)
    expected = "sig.bad_content_digest" if what == "content-digest" else "sig.bad_signature"
    assert d.reason == expected, (what, d.signals)
    # the untampered request passes
    assert (await h.decide(URL, headers, "POST")).reason == "ok"


async def test_a_request_with_a_body_must_cover_content_digest(h: Harness) -> None:
    body_headers = [("content-length", "9")]
    headers = h.signed(URL, method="POST", headers=body_headers)
    d = await h.decide(URL, headers, "POST")
    assert d.reason == "sig.component_missing"
    # the answer asks for what the profile requires of a request with a body
    assert ("accept-signature", 'sig1=("@method" "@target-uri" "content-digest");created;nonce') in d.client_headers


async def test_time_rules(h: Harness) -> None:
    cases = [
        ({"created": NOW + 6}, "sig.created_in_future"),
        ({"created": NOW - 306}, "sig.too_old"),
        ({"created": NOW - 20, "expires": NOW - 10}, "sig.expired"),
        ({"nonce": False}, "sig.nonce_missing"),
    ]
    for kw, reason in cases:
        d = await h.decide(URL, h.signed(URL, **kw))
        assert (d.reason, d.status) == (reason, 401), kw
    # within the skew either way
    assert (await h.decide(URL, h.signed(URL, created=NOW + 4))).reason == "ok"
    assert (await h.decide(URL, h.signed(URL, created=NOW - 10, expires=NOW - 2))).reason == "ok"


STRICT = "http://api.example.com/strict/x?id=42&z=1"


async def test_a_strict_profile_applies_label_tag_components_and_keys(h: Harness) -> None:
    comps = ["@method", "@target-uri", "content-type", '"@query-param";name="id"']
    base = [("content-type", "application/json")]
    ok = h.signed(STRICT, headers=base, components=comps, tag="app-1")
    assert (await h.decide(STRICT, ok)).reason == "ok"
    checks = [
        (h.signed(STRICT, headers=base, components=comps, tag="app-2"), "sig.tag_mismatch"),
        (h.signed(STRICT, headers=base, components=comps, tag="app-1", label="other"), "sig.missing"),
        (h.signed(STRICT, headers=base, components=comps[:3], tag="app-1"), "sig.component_missing"),
        (h.signed(STRICT, "p256", headers=base, components=comps, tag="app-1"), "sig.unknown_key"),
        (h.signed(STRICT, headers=base, components=comps, tag="app-1", created=NOW - 63), "sig.too_old"),
    ]
    for headers, reason in checks:
        assert (await h.decide(STRICT, headers)).reason == reason


async def test_covering_target_uri_satisfies_path_and_authority(tmp_path: pathlib.Path, keys: Keys) -> None:
    policy = POLICY.replace("bots: {}", 'bots: {components: ["@method", "@authority", "@path", "@query"]}')
    h = Harness(write_policy(tmp_path, keys, policy), keys)
    assert (await h.decide(URL, h.signed(URL))).reason == "ok"
    partial = h.signed(URL, components=["@method", "@path", "@query"])
    assert (await h.decide(URL, partial)).reason == "sig.component_missing"


async def test_no_signature_gets_the_challenge(h: Harness) -> None:
    d = await h.decide(URL, [("accept", "*/*")])
    assert (d.reason, d.status) == ("auth.missing", 401)
    assert ("www-authenticate", 'Signature realm="bots"') in d.client_headers


@pytest.mark.parametrize(
    ("policy_change", "message"),
    [
        ("bots: {nonce: required, created: optional}", "a required nonce needs created: required"),
        ("bots: {keys: [nope]}", "no key 'nope' in the keys file"),
        ("bots: {keys: [kong512]}", "key 'kong512' is HS512, not an HTTP signature algorithm"),
        ('bots: {components: ["@status"]}', "@status applies to responses only"),
        ('bots: {components: ["Content-Type"]}', "is not a lower-case field name"),
        ("bots: {label: Sig1}", "not a structured-field key"),
        ("bots: {max_age: 2d}", "at most 1d"),
        ("bots: {algorithm: ed25519}", "unknown key 'algorithm'"),
    ],
)
def test_bad_profiles_name_file_line_and_field(tmp_path: pathlib.Path, keys: Keys, policy_change: str, message: str) -> None:
    path = write_policy(tmp_path, keys, POLICY.replace("bots: {}", policy_change))
    with pytest.raises(ConfigError) as err:
        load_policy(path)
    assert message in str(err.value)
    assert err.value.line == 5 and err.value.field.startswith("signatures.bots")


# -- kong_hmac ---------------------------------------------------------------

KONG = "http://api.example.com/kong/orders?x=1"


def kong_headers(kid: str, secret: bytes, *, algorithm: str = "hmac-sha256", date_ms: int = T0, names: Sequence[str] = ("date", "request-line"), date_header: str = "Date") -> list[tuple[str, str]]:
    date = formatdate(date_ms / 1000, usegmt=True)
    fields = {date_header.lower(): date}
    text = cavage.signing_string(list(names), "GET", "/kong/orders?x=1", "HTTP/1.1", fields)
    return [(date_header, date), ("Authorization", cavage.authorization(kid, algorithm, secret, list(names), text))]


async def test_kong_clients_work_unchanged(h: Harness) -> None:
    headers = kong_headers("kong", h.keys.private["kong"])
    d = await h.decide(KONG, headers)
    assert (d.reason, d.identity.key_id, d.identity.method) == ("ok", "kong", "kong_hmac:legacy")
    assert (await h.decide(KONG, headers)).reason == "sig.replay"  # single_use
    x_date = kong_headers("kong", h.keys.private["kong"], names=("x-date", "request-line"), date_header="X-Date", date_ms=T0 - 1000)
    assert (await h.decide(KONG, x_date)).reason == "ok"
    hs512 = kong_headers("kong512", h.keys.private["kong512"], algorithm="hmac-sha512", date_ms=T0 - 2000)
    assert (await h.decide(KONG, hs512)).reason == "ok"


async def test_kong_refusals(h: Harness) -> None:
    secret = h.keys.private["kong"]
    checks = [
        (kong_headers("kong", secret, date_ms=T0 - 301_000), "sig.expired"),
        (kong_headers("kong", secret, date_ms=T0 + 301_000), "sig.created_in_future"),
        (kong_headers("kong", secret, algorithm="hmac-sha512"), "sig.alg_mismatch"),
        (kong_headers("kong", secret[::-1]), "sig.bad_signature"),
        (kong_headers("nobody", secret), "sig.unknown_key"),
        (kong_headers("ed", secret), "sig.unknown_key"),
        (kong_headers("kong", secret, names=("date",)), "sig.component_missing"),
        (kong_headers("kong", secret, names=("request-line",)), "sig.component_missing"),
        ([("Date", formatdate(NOW, usegmt=True)), ("Authorization", 'hmac username="kong"')], "sig.malformed"),
    ]
    for headers, reason in checks:
        d = await h.decide(KONG, headers)
        assert (d.reason, d.status) == (reason, 401), (reason, d.signals)
        assert ("www-authenticate", 'hmac realm="legacy"') in d.client_headers


# -- secure defaults and several signatures -------------------------------------------


def test_kong_defaults_cover_the_request_line_and_are_single_use(tmp_path: pathlib.Path, keys: Keys) -> None:
    policy = load_policy(write_policy(tmp_path, keys, POLICY.replace("legacy: {single_use: true, enforce_headers: [request-line], clock_skew: 300s}", "legacy: {}")))
    kong = policy.authenticators["kong_hmac:legacy"]
    assert kong.enforce == ("date", "request-line") and kong.single_use  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("legacy: {enforce_headers: [date]}", "must include request-line"),
        ("legacy: {enforce_headers: [x-date, content-md5]}", "must include request-line"),
    ],
)
def test_kong_signatures_over_less_than_the_request_line_are_a_config_error(tmp_path: pathlib.Path, keys: Keys, change: str, message: str) -> None:
    path = write_policy(tmp_path, keys, POLICY.replace("legacy: {single_use: true, enforce_headers: [request-line], clock_skew: 300s}", change))
    with pytest.raises(ConfigError) as err:
        load_policy(path)
    assert message in str(err.value) and "insecure_partial_coverage" in str(err.value)
    assert err.value.field == "kong_hmac.legacy.enforce_headers"


async def test_kong_date_only_signatures_need_the_insecure_switch(tmp_path: pathlib.Path, keys: Keys) -> None:
    text = POLICY.replace(
        "legacy: {single_use: true, enforce_headers: [request-line], clock_skew: 300s}",
        "legacy: {enforce_headers: [date], insecure_partial_coverage: true, single_use: false}",
    )
    h = Harness(write_policy(tmp_path, keys, text), keys)
    headers = kong_headers("kong", keys.private["kong"], names=("date",))
    assert (await h.decide(KONG, headers)).reason == "ok"
    # the risk the switch accepts: the same signature is good for another path, and again
    assert (await h.decide("http://api.example.com/kong/other", headers)).reason == "ok"
    assert (await h.decide(KONG, headers)).reason == "ok"


async def test_kong_default_refuses_a_replay_and_a_date_only_signature(tmp_path: pathlib.Path, keys: Keys) -> None:
    text = POLICY.replace("legacy: {single_use: true, enforce_headers: [request-line], clock_skew: 300s}", "legacy: {}")
    h = Harness(write_policy(tmp_path, keys, text), keys)
    headers = kong_headers("kong", keys.private["kong"])
    assert (await h.decide(KONG, headers)).reason == "ok"
    assert (await h.decide(KONG, headers)).reason == "sig.replay"
    date_only = kong_headers("kong", keys.private["kong"], names=("date",), date_ms=T0 - 1000)
    d = await h.decide(KONG, date_only)
    assert (d.reason, dict(d.signals)["sig.problem"]) == ("sig.component_missing", "request-line is not signed")


MULTI = POLICY.replace("  bots: {}\n", "  bots: {}\n  any: {select: any}\n  all: {select: all}\n  tagged: {tag: client, select: first}\n").replace(
    "routes:\n",
    "routes:\n  - {name: any, match: {path: {prefix: /any/}}, auth: [signature:any]}\n"
    "  - {name: all, match: {path: {prefix: /all/}}, auth: [signature:all]}\n"
    "  - {name: tagged, match: {path: {prefix: /tagged/}}, auth: [signature:tagged]}\n",
)


def two_signatures(h: Harness, url: str, first_good: bool, second_good: bool, **kw: Any) -> list[tuple[str, str]]:
    """A client signature (sig1, key ed) and a proxy's (proxy, key hmac), as RFC 9421 4.3 describes."""
    one = dict(sign_request("GET", url, [], key_id="ed", algorithm="ed25519", key=h.keys.private["ed"], label="sig1", created=NOW, tag="client"))
    two = dict(sign_request("GET", url, [], key_id="hmac", algorithm="hmac-sha256", key=h.keys.private["hmac"], label="proxy", created=NOW, tag="proxy", **kw))
    sig1 = one["Signature"] if first_good else one["Signature"].replace(one["Signature"][6:10], "AAAA")
    sig2 = two["Signature"] if second_good else two["Signature"].replace(two["Signature"][7:11], "AAAA")
    return [("Signature-Input", f"{one['Signature-Input']}, {two['Signature-Input']}"), ("Signature", f"{sig1}, {sig2}")]


@pytest.mark.parametrize(
    ("route", "first_good", "second_good", "expected", "key_id"),
    [
        ("signed", True, False, "ok", "ed"),  # first: only sig1 is verified
        ("signed", False, True, "sig.bad_signature", None),
        ("any", False, True, "ok", "hmac"),  # any: the proxy's signature suffices
        ("any", False, False, "sig.bad_signature", None),
        ("all", True, True, "ok", "ed"),
        ("all", True, False, "sig.bad_signature", None),  # all: the proxy's must verify too
        ("tagged", False, True, "sig.bad_signature", None),  # by tag: only the client's counts
        ("tagged", True, False, "ok", "ed"),
    ],
)
async def test_a_profile_says_which_of_several_signatures_to_verify(
    tmp_path: pathlib.Path, keys: Keys, route: str, first_good: bool, second_good: bool, expected: str, key_id: str | None
) -> None:
    h = Harness(write_policy(tmp_path, keys, MULTI), keys)
    url = f"http://api.example.com/{route}/items"
    d = await h.decide(url, two_signatures(h, url, first_good, second_good))
    assert d.reason == expected, d.signals
    if key_id is not None:
        assert d.identity.key_id == key_id
    signals = dict(d.signals)
    if route in ("any", "all") and expected != "ok":
        failed = signals["sig.failed"]
        assert "bad_signature" in failed and failed.startswith(("sig1:", "proxy:"))


async def test_all_claims_every_verified_nonce(tmp_path: pathlib.Path, keys: Keys) -> None:
    h = Harness(write_policy(tmp_path, keys, MULTI), keys)
    url = "http://api.example.com/all/items"
    headers = two_signatures(h, url, True, True)
    d = await h.decide(url, headers)
    assert d.reason == "ok" and dict(d.signals)["sig.verified"] == "sig1:ed,proxy:hmac"
    assert (await h.decide(url, headers)).reason == "sig.replay"


async def test_every_401_of_a_signature_route_carries_accept_signature(h: Harness) -> None:
    missing = await h.decide(URL, [("accept", "*/*")])
    assert missing.reason == "auth.missing"
    assert ("accept-signature", 'sig1=("@method" "@target-uri");created;nonce') in missing.client_headers
    with_body = await h.decide(URL, [("content-length", "5")], "POST")
    assert ("accept-signature", 'sig1=("@method" "@target-uri" "content-digest");created;nonce') in with_body.client_headers
    headers = h.signed(URL)
    assert (await h.decide(URL, headers)).reason == "ok"
    replay = await h.decide(URL, headers)
    assert replay.reason == "sig.replay"
    assert [n for n, _ in replay.client_headers].count("accept-signature") == 1
    strict = await h.decide("http://api.example.com/strict/x?id=1", [])
    assert ("accept-signature", 'sig1=("@method" "@target-uri" "content-type" "@query-param";name="id");created;nonce;tag="app-1"') in strict.client_headers
    kong = await h.decide(KONG, [])
    assert kong.status == 401 and "accept-signature" not in dict(kong.client_headers)
