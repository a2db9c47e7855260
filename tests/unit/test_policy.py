"""Policy files: every bad file is refused with file, line, field and a clear message."""

from __future__ import annotations

import pathlib

import pytest
from click.testing import CliRunner

from authz.cli import cli
from authz.errors import ConfigError
from authz.policy.compile import load_policy

CONFIG = pathlib.Path(__file__).parent.parent / "config"
ROOT = pathlib.Path(__file__).parent.parent.parent

# file -> exact message, with {file} the path as given and {dir} the directory of the bad files
BAD = {
    "bad_action.yaml": "{file}:4: routes[0].action: must be one of allow, check, deny; got 'maybe'",
    "bad_auth_method.yaml": "{file}:4: routes[0].auth[1]: unknown authentication method 'kerberos' (known: {kinds})",
    "bad_auth_missing.yaml": "{file}:3: routes[0]: a route with action 'check' needs 'auth' (a list such as [anonymous] or [jwt:partners])",
    "bad_auth_on_allow.yaml": "{file}:5: routes[0].auth: a route with action 'allow' runs no checks; remove 'auth'",
    "bad_challenge_accept_twice.yaml": "{file}:6: challenges.default.accept[0].secret_file: this secret is already listed",
    "bad_challenge_difficulty.yaml": "{file}:6: challenges.default.max_difficulty: must be at least 20; got 16",
    "bad_challenge_no_secret.yaml": "{file}:5: challenges.default.secret_file: cannot read file 'secrets/absent.key' (looked for {dir}/secrets/absent.key): No such file or directory",
    "bad_challenge_on_allow.yaml": "{file}:7: routes[0].challenge: a route with action 'allow' runs no checks; remove 'challenge'",
    "bad_challenge_ref.yaml": "{file}:7: routes[0].challenge: no challenge named 'strict' under 'challenges'",
    "bad_challenge_short_secret.yaml": "{file}:4: challenges.default.secret_file: a challenge secret needs at least 32 bytes, this file has 9 (make one with: openssl rand -base64 48)",
    "bad_challenge_ttl.yaml": "{file}:5: challenges.default.ttl: at most 1h: a solution stays usable, and its claim remembered, that long",
    "bad_challenge_until.yaml": "{file}:7: challenges.default.accept[0].until: give a time zone (Z for UTC)",
    "bad_claim_header.yaml": "{file}:7: jwt_providers.partners.forward.claims.email: a claim header is named x-authz-<name>, got 'x-user-email': the proxy configs forward that prefix to the upstream and strip client-sent copies (docs/jwt.md)",
    "bad_cidr_inline.yaml": "{file}:6: ip_lists.blocked.cidrs[1]: not an IP address or CIDR block: '300.1.2.3/8'",
    "bad_duplicate_key.yaml": "{file}:5: duplicate key 'name' (first on line 3)",
    "bad_duplicate_route.yaml": "{file}:4: routes[1].name: route name 'api' already used on line 3",
    "bad_evidence_family.yaml": "{file}:4: evidence.user_agents: unknown key 'user_agents' (expected one of: fingerprint_mismatch, missing_headers, probes, user_agent)",
    "bad_evidence_fingerprint_entry.yaml": "{file}:6: evidence.fingerprint_mismatch.library[1]: not a JA4 cipher hash (12 hex digits) or a JA4 prefix (t13d1516h2, t13d1516h2_8daaf6152771...): 'curl/8'",
    "bad_evidence_mismatch_no_header.yaml": "{file}:3: evidence.fingerprint_mismatch: fingerprint_mismatch needs identify.fingerprint.header (where the proxy puts the JA4 fingerprint)",
    "bad_evidence_probe_strength.yaml": "{file}:3: evidence.probes.injection: expected a number, got a string",
    "bad_geo_corrupt_db.yaml": "{file}:4: geo.country_database: 'geo/corrupt.mmdb': not a MaxMind database (Error opening database file. Is this a valid MaxMind DB file?)",
    "bad_geo_country_code.yaml": "{file}:5: geo.countries.deny[1]: not a country code: 'ir' (ISO 3166-1 alpha-2, upper case: 'KP', 'DE')",
    "bad_geo_denied_and_allowed.yaml": "{file}:10: routes[0].geo.countries.allow: IR, KP both denied and allowed",
    "bad_geo_empty_allow.yaml": "{file}:4: geo.countries.allow: an empty allow list would refuse every request; remove it, or list countries",
    "bad_geo_hosting_file.yaml": "{dir}/lists/bad-asns.txt:3: asn: not an AS number: 'ASX' (write 13335 or AS13335)",
    "bad_geo_hosting_no_asn.yaml": "{file}:4: geo.hosting_asns: hosting_asns needs geo.asn_database (the AS number of each client comes from it)",
    "bad_geo_missing_db.yaml": "{file}:3: geo.country_database: cannot read file 'nope.mmdb' (looked for {dir}/nope.mmdb)",
    "bad_geo_no_country_db.yaml": "{file}:8: routes[0].geo.countries: country rules need geo.country_database",
    "bad_geo_no_database.yaml": "{file}:3: geo: give country_database, asn_database or both",
    "bad_geo_route_key.yaml": "{file}:7: routes[0].geo.country: unknown key 'country' (expected one of: countries)",
    "bad_geo_wrong_kind.yaml": "{file}:3: geo.country_database: 'geo/asn.mmdb': an ASN database; country_database needs a Country or City database (database_type 'GeoLite2-ASN')",
    "bad_identify_header.yaml": "{file}:3: identify.device.header: not a header name: 'x device id'",
    "bad_identify_session.yaml": "{file}:3: identify.session: give exactly one of cookie, header",
    "bad_list_signal_name.yaml": "{file}:3: ip_lists.tor.signal: not a signal name: 'Tor exits' (lower-case letters, digits, '_', '-'; at most 32)",
    "bad_list_strength_alone.yaml": "{file}:5: ip_lists.tor.strength: strength applies to a list used as evidence: give 'signal' too",
    "bad_list_strength_range.yaml": "{file}:3: ip_lists.tor.strength: must be at most 1.0; got 1.5",
    "bad_host.yaml": "{file}:5: routes[0].match.hosts[0]: not a lower-case host name or *.suffix: 'API.example.com'",
    "bad_ip_list_ref.yaml": "{file}:5: ip.deny[0]: no address list named 'blokked' in ip_lists",
    "bad_keys_file.yaml": "{file}:2: keys_file: cannot read file 'does-not-exist.yaml' (looked for {dir}/does-not-exist.yaml)",
    "bad_limits.yaml": "{file}:3: limits.max_headers: must be at least 1; got 0",
    "bad_list_file.yaml": "{dir}/lists/bad.txt:3: cidr: not an IP address or CIDR block: '192.0.2.300'",
    "bad_method.yaml": "{file}:4: routes[0].match.methods[1]: not an HTTP method: 'get' (upper case, one of CONNECT, DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT, TRACE)",
    "bad_no_routes.yaml": "{file}:2: routes: a policy needs at least one route",
    "bad_not_a_mapping.yaml": "{file}:1: expected a mapping, got a list",
    "bad_on_store_error.yaml": "{file}:5: routes[0].on_store_error.quota: must be one of closed, local, open; got 'sometimes'",
    "bad_on_store_error_kind.yaml": "{file}:7: routes[0].on_store_error.weather: unknown check kind 'weather' (expected one of: quota, replay, reputation)",
    "bad_path_no_slash.yaml": "{file}:5: routes[0].match.path.prefix: a path starts with '/': 'v1/'",
    "bad_path_two_kinds.yaml": "{file}:5: routes[0].match.path: give exactly one of exact, prefix, subtree, regex",
    "bad_path_not_canonical.yaml": "{file}:5: routes[0].match.path.subtree: '/%61dmin' is not a canonical path (routes match canonical paths): write '/admin'",
    "bad_path_refused_class.yaml": "{file}:5: routes[0].match.path.prefix: '/files/a%2Fb' holds encoded_slash, which requests are refused for (paths.allow), so it would never match",
    "bad_ignore_case.yaml": "{file}:6: routes[0].match.ignore_case: expected true or false, got a string",
    "bad_ignore_case_no_path.yaml": "{file}:6: routes[0].match.ignore_case: ignore_case applies to the path: give a path too",
    "bad_paths_unknown_class.yaml": "{file}:5: paths.allow[1]: unknown path class 'encoded_slashes' (allowable: {allowable})",
    "bad_paths_never_allowed.yaml": "{file}:3: paths.allow[0]: 'above_root' cannot be allowed: no backend is known to read it as authz does (allowable: {allowable})",
    "bad_paths_twice.yaml": "{file}:5: paths.allow[1]: 'semicolon' is listed twice",
    "bad_paths_key.yaml": "{file}:3: paths.accept: unknown key 'accept' (expected one of: allow)",
    "bad_quota_by.yaml": "{file}:6: quotas.per-ip.by: must be one of client, ip, subnet, subject, key_id, route, global, header:<name> or claim:<name>; got 'colour'",
    "bad_quota_limit.yaml": "{file}:4: quotas.per-ip.limit: expected an integer, got a string",
    "bad_quota_ref.yaml": "{file}:7: routes[0].quota[0]: no quota named 'per-client' in quotas",
    "bad_quota_window.yaml": "{file}:5: quotas.per-ip.window: expected a duration like 250ms, 10s, 5m or 1h; got 'fortnight'",
    "bad_regex.yaml": "{file}:5: routes[0].match.path.regex: invalid regular expression: missing ), unterminated subpattern at position 4",
    "bad_route_no_name.yaml": "{file}:3: routes[0]: missing required key 'name'",
    "bad_trusted_proxy.yaml": "{file}:4: trusted_proxies[1]: not an IP address or CIDR block: 'envoy.local'",
    "bad_unknown_top_key.yaml": "{file}:2: rutes: unknown key 'rutes' (expected one of: {top_keys})",
    "bad_agent_any_without_fetch.yaml": "{file}:5: web_bot_auth.agents.fetch: trust: any needs fetch: true (the directories of unknown origins must be fetched)",
    "bad_agent_directory_kid.yaml": "{file}:5: web_bot_auth.agents.directories.https://crawler.example: agents/wrong-kid.json: keys[0]: kid 'my-key-1' is not the key's JWK thumbprint kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k",
    "bad_agent_no_trust.yaml": "{file}:3: web_bot_auth.agents: give trust (a list of agent origins, or any) or directories (local key directories), or both",
    "bad_agent_origin.yaml": "{file}:4: web_bot_auth.agents.trust[0]: not an agent origin (https://host[:port], no path): 'https://crawler.example/bots'",
    "bad_agent_test_key.yaml": "{file}:5: web_bot_auth.agents.directories.https://crawler.example: agents/rfc9421-test-key.json: keys[0]: is the RFC 9421 example key (test-key-ed25519), which is public; set insecure_test_keys: true to accept it in tests",
    "bad_agent_validity.yaml": "{file}:5: web_bot_auth.agents.max_validity: at most 1d (the drafts bound an agent signature's life to a day)",
    "bad_listed_bot_list.yaml": "{file}:3: listed_bots.crawlers.lists[0]: no address list named 'googlebot' in ip_lists",
    "bad_version.yaml": "{file}:1: version: unsupported policy version 2 (this authz reads version 1)",
    "bad_yaml_syntax.yaml": "{file}:5: YAML syntax error: expected ',' or ']', but got '<stream end>'",
}


def _expected(name: str, path: str) -> str:
    from authz.stages.authenticate import registered_kinds

    kinds = registered_kinds()
    top = {"challenges", "clock", "evidence", "geo", "identify", "ip", "ip_lists", "keys_file", "limits", "paths", "quotas", "reputation", "routes", "trusted_proxies", "version"}
    top |= {k.section for k in kinds.values() if k.section}
    return BAD[name].format(
        file=path,
        dir=str(CONFIG.resolve()),
        kinds=", ".join(sorted(kinds)),
        top_keys=", ".join(sorted(top)),
        allowable="backslash, dot_segment, double_encoding, encoded_backslash, encoded_dot, encoded_slash, leading_double_slash, non_utf8, semicolon, trailing_dot_or_space",
    )


def test_every_bad_file_has_an_expected_message() -> None:
    assert sorted(p.name for p in CONFIG.glob("bad_*.yaml")) == sorted(BAD)


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_policy_is_refused_with_its_exact_message(name: str) -> None:
    path = str(CONFIG / name)
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    assert str(info.value) == _expected(name, path)


@pytest.mark.parametrize("name", ["bad_quota_ref.yaml", "bad_yaml_syntax.yaml"])
def test_check_config_exits_1_naming_file_line_field(name: str) -> None:
    path = str(CONFIG / name)
    result = CliRunner().invoke(cli, ["check-config", path])
    assert result.exit_code == 1
    assert result.output == f"Error: {_expected(name, path)}\n"


def test_example_policy_is_valid() -> None:
    result = CliRunner().invoke(cli, ["check-config", str(ROOT / "examples" / "policy.yaml")])
    assert result.exit_code == 0, result.output
    assert ": OK (" in result.output


def test_compiles_routes_quotas_and_lists(tmp_path: pathlib.Path) -> None:
    (tmp_path / "l.txt").write_text("# comment\n\n198.51.100.0/24 scanners  # trailing\n2001:db8::/32\n")
    p = tmp_path / "p.yaml"
    p.write_text(
        """version: 1
trusted_proxies: [10.0.0.0/8]
ip_lists:
  bad: {file: l.txt, cidrs: ["203.0.113.9 single"]}
quotas:
  q: {limit: 6, window: 1m, burst: 2, by: "header:x-api-key"}
routes:
  - name: r
    match: {hosts: [api.example.com, "*.example.org"], methods: [GET], path: {regex: "/v[0-9]+/.*"}}
    auth: [anonymous]
    quota: [q]
    on_store_error: {quota: closed, replay: open}
"""
    )
    policy = load_policy(str(p))
    (route,) = policy.routes
    quota, cost = route.quotas[0]
    assert quota.interval_ms == 10_000 and quota.burst == 2 and cost is None  # type: ignore[union-attr]
    assert dict(route.on_store_error) == {"quota": "closed", "replay": "open", "reputation": "open"}
    bad = policy.ip_lists["bad"]
    assert bad.match("198.51.100.77") == "scanners"
    assert bad.match("203.0.113.9") == "single"
    assert bad.match("2001:db8::5") == "bad"
    assert bad.match("::ffff:198.51.100.1") == "scanners"
    assert bad.match("203.0.113.10") is None
    assert bad.match("not-an-ip") is None
    assert policy.trusted_proxies is not None and "10.2.3.4" in policy.trusted_proxies
