"""Country and network through the engine: lookups, country rules, the LRU cache, database reloads."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz.clock import FixedClock
from authz.decision import REASONS, DecisionIds, Outcome
from authz.errors import ConfigError
from authz.pipeline import Engine
from authz.policy.compile import load_policy
from authz.request import Request
from authz.store import MemoryStore
from tests.support.geo import write_asn_db, write_country_db

T0 = 1_700_000_000_000

POLICY = """
version: 1
trusted_proxies: [10.0.0.0/8]
ip_lists:
  partners: {cidrs: ["203.0.113.77 partner"]}
ip: {allow: [partners]}
geo:
  country_database: country.mmdb
  asn_database: asn.mmdb
  cache_size: 64
  countries: {deny: [KP]}
routes:
  - name: health
    match: {path: {exact: /healthz}}
    action: allow
  - name: eu
    match: {path: {prefix: /eu/}}
    auth: [anonymous]
    geo: {countries: {allow: [DE, FR]}}
  - name: no-fr
    match: {path: {prefix: /no-fr/}}
    auth: [anonymous]
    geo: {countries: {deny: [FR]}}
  - name: api
    auth: [anonymous]
"""


@pytest.fixture
def geo_dir(tmp_path: Path) -> Path:
    write_country_db(tmp_path / "country.mmdb")
    write_asn_db(tmp_path / "asn.mmdb")
    return tmp_path


def engine(directory: Path, text: str = POLICY) -> Engine:
    (directory / "policy.yaml").write_text(text)
    policy = load_policy(str(directory / "policy.yaml"))
    return Engine(policy, MemoryStore(epoch_ms=T0), clock=FixedClock(T0), ids=DecisionIds("test"))


def req(path: str = "/v1/items", peer: str = "198.51.100.7", xff: str | None = None) -> Request:
    headers = {"x-forwarded-for": xff} if xff else {}
    return Request(method="GET", path=path, host="api.example.com", peer_ip=peer, headers=headers)


def test_the_reasons_are_registered_with_their_status() -> None:
    assert (REASONS["geo.country_denied"].status, REASONS["geo.country_denied"].outcome) == (403, Outcome.DENY)
    assert (REASONS["geo.country_not_allowed"].status, REASONS["geo.country_not_allowed"].outcome) == (403, Outcome.DENY)


async def test_country_and_network_fill_the_identity_and_the_record(geo_dir: Path) -> None:
    d = await engine(geo_dir).decide(req(peer="198.51.100.7"))
    assert d.reason == "ok"
    assert (d.identity.country, d.identity.asn) == ("DE", 64502)
    rec = d.to_record()
    assert (rec["country"], rec["asn"]) == ("DE", 64502)


async def test_ipv6_and_forwarded_clients_are_looked_up(geo_dir: Path) -> None:
    e = engine(geo_dir)
    d = await e.decide(req(peer="2001:db8:de::9"))
    assert (d.identity.country, d.identity.asn) == ("DE", 64502)
    # through a trusted proxy, the forwarded client is looked up, never the proxy
    d = await e.decide(req(peer="10.1.1.1", xff="81.2.69.160"))
    assert (d.identity.client_ip, d.identity.country, d.identity.asn) == ("81.2.69.160", "GB", 64500)
    # an untrusted peer's header is ignored: its own address is looked up
    d = await e.decide(req(peer="198.51.100.7", xff="203.0.113.9"))
    assert d.identity.country == "DE" and d.reason == "ok"


async def test_an_unknown_address_has_no_country_and_no_record_fields(geo_dir: Path) -> None:
    d = await engine(geo_dir).decide(req(peer="172.16.0.9"))
    assert d.reason == "ok"
    assert (d.identity.country, d.identity.asn) == ("", 0)
    assert "country" not in d.to_record() and "asn" not in d.to_record()


async def test_global_deny_list(geo_dir: Path) -> None:
    e = engine(geo_dir)
    d = await e.decide(req(peer="203.0.113.9"))
    assert (d.outcome, d.status, d.reason, d.route) == (Outcome.DENY, 403, "geo.country_denied", "api")
    assert ("geo.country", "KP") in d.signals
    assert d.body == b'{"error":"geo.country_denied","decision_id":"test-000000000001"}'
    # on every route, including an allow route (like ip.deny)
    d = await e.decide(req("/healthz", peer="2001:db8:ee::1"))
    assert d.reason == "geo.country_denied"


async def test_route_allow_list(geo_dir: Path) -> None:
    e = engine(geo_dir)
    assert (await e.decide(req("/eu/x", peer="198.51.100.7"))).reason == "ok"  # DE
    assert (await e.decide(req("/eu/x", peer="192.0.2.1"))).reason == "ok"  # FR
    d = await e.decide(req("/eu/x", peer="81.2.69.160"))  # GB
    assert (d.status, d.reason) == (403, "geo.country_not_allowed")
    assert ("geo.country", "GB") in d.signals
    d = await e.decide(req("/eu/x", peer="203.0.113.9"))  # KP: the global deny list comes first
    assert d.reason == "geo.country_denied"


async def test_unknown_country_is_not_admitted_by_an_allow_list_nor_refused_by_a_deny_list(geo_dir: Path) -> None:
    e = engine(geo_dir)
    d = await e.decide(req("/eu/x", peer="172.16.0.9"))
    assert (d.reason, dict(d.signals)["geo.country"]) == ("geo.country_not_allowed", "unknown")
    assert (await e.decide(req("/no-fr/x", peer="172.16.0.9"))).reason == "ok"
    assert (await e.decide(req("/v1/x", peer="172.16.0.9"))).reason == "ok"


async def test_route_deny_list_adds_to_the_global_one(geo_dir: Path) -> None:
    e = engine(geo_dir)
    assert (await e.decide(req("/no-fr/x", peer="192.0.2.1"))).reason == "geo.country_denied"
    assert (await e.decide(req("/no-fr/x", peer="203.0.113.9"))).reason == "geo.country_denied"
    assert (await e.decide(req("/no-fr/x", peer="198.51.100.7"))).reason == "ok"
    assert (await e.decide(req("/v1/x", peer="192.0.2.1"))).reason == "ok"  # FR elsewhere


async def test_global_and_route_allow_lists_must_both_admit(geo_dir: Path) -> None:
    text = POLICY.replace("countries: {deny: [KP]}", "countries: {allow: [DE, GB]}")
    e = engine(geo_dir, text)
    assert (await e.decide(req("/eu/x", peer="198.51.100.7"))).reason == "ok"  # DE: on both
    assert (await e.decide(req("/eu/x", peer="192.0.2.1"))).reason == "geo.country_not_allowed"  # FR: route only
    assert (await e.decide(req("/eu/x", peer="81.2.69.160"))).reason == "geo.country_not_allowed"  # GB: global only
    assert (await e.decide(req("/v1/x", peer="81.2.69.160"))).reason == "ok"


async def test_an_allowlisted_address_skips_country_rules(geo_dir: Path) -> None:
    d = await engine(geo_dir).decide(req(peer="203.0.113.77"))  # KP, but a partner
    assert (d.reason, d.identity.country) == ("ok.ip_allowlisted", "KP")


async def test_lookups_are_cached_and_bounded(geo_dir: Path) -> None:
    e = engine(geo_dir)
    geo = e.policy.geo
    assert geo is not None
    lookup = geo._lookup
    for i in range(200):
        await e.decide(req(peer=f"198.51.100.{i % 250}"))
    for _ in range(3):
        await e.decide(req(peer="198.51.100.7"))
    info = lookup.cache_info()  # type: ignore[attr-defined]
    assert info.maxsize == 64 and info.currsize == 64
    # 200 distinct addresses missed; .7 had been evicted by then: one miss, then two hits
    assert (info.misses, info.hits) == (201, 2)


async def test_a_replaced_database_is_used_by_the_policy_read_again(geo_dir: Path) -> None:
    e = engine(geo_dir)
    assert (await e.decide(req(peer="198.51.100.7"))).identity.country == "DE"  # cached now
    write_country_db(geo_dir / "country.mmdb", {"198.51.100.0/24": "KP"})  # an update, renamed into place
    e.policy = engine(geo_dir).policy  # what the reloader does when the file changed
    d = await e.decide(req(peer="198.51.100.7"))
    assert (d.identity.country, d.reason) == ("KP", "geo.country_denied")
    assert d.identity.asn == 64502  # the ASN database was not touched


def test_a_broken_database_is_refused_naming_it(geo_dir: Path) -> None:
    db = geo_dir / "asn.mmdb"
    good = db.read_bytes()
    db.write_bytes(good[: len(good) // 3])  # a half-copied file
    with pytest.raises(ConfigError, match="not a MaxMind database"):
        engine(geo_dir)
    write_country_db(db)  # the wrong kind
    with pytest.raises(ConfigError, match="asn_database needs an ASN database"):
        engine(geo_dir)


async def test_without_a_geo_section_nothing_is_looked_up(geo_dir: Path) -> None:
    e = engine(geo_dir, "version: 1\nroutes:\n  - {name: api, auth: [anonymous]}\n")
    assert e.policy.geo is None
    d = await e.decide(req(peer="203.0.113.9"))
    assert (d.reason, d.identity.country, d.identity.asn) == ("ok", "", 0)


async def test_an_asn_database_alone(geo_dir: Path) -> None:
    text = "version: 1\ngeo: {asn_database: asn.mmdb}\nroutes:\n  - {name: api, auth: [anonymous]}\n"
    d = await engine(geo_dir, text).decide(req(peer="203.0.113.9"))
    assert (d.identity.country, d.identity.asn) == ("", 64501)


def _example_uncommented(directory: Path) -> str:
    """examples/policy.yaml with its commented geo, identify and evidence sections switched on,
    and what they name (databases, the hosting list) made in ``directory``."""
    example = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"
    lines, inside = [], False
    for line in example.read_text().splitlines():
        if line in ("# geo:", "# identify:", "# evidence:"):
            inside = True
        elif not line.startswith("#   "):
            inside = False
        lines.append(line[2:] if inside else line)
    text = "\n".join(lines) + "\n"
    assert text.count("\ngeo:\n") == text.count("\nidentify:\n") == text.count("\nevidence:\n") == 1
    (directory / "lists").mkdir()
    (directory / "lists" / "blocked.txt").write_text((example.parent / "lists" / "blocked.txt").read_text())
    (directory / "lists" / "hosting-asns.txt").write_text("64501 example-cloud\n")
    write_country_db(directory / "GeoLite2-Country.mmdb")
    write_asn_db(directory / "GeoLite2-ASN.mmdb")
    return text


async def test_the_example_policys_commented_geo_and_evidence_sections_are_valid(tmp_path: Path) -> None:
    """examples/policy.yaml shows the sections commented out (they need databases); uncommented, they load."""
    e = engine(tmp_path, _example_uncommented(tmp_path))
    assert e.policy.geo is not None and e.policy.evidence and e.policy.client_ids
    d = await e.decide(req("/v1/x", peer="203.0.113.9"))
    assert (d.reason, d.identity.asn) == ("geo.country_denied", 64501)
