"""Bad jwt provider configurations: one case per failure, each naming file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz.errors import ConfigError
from tests.support.jwt_tokens import KEYS, provider

JWKS = KEYS / "jwks.json"

CASES = [
    ("keys: {jwks_file: %s}" % JWKS, "jwt_providers.p", "missing required key 'algorithms'"),
    ("algorithms: [RS256]", "jwt_providers.p", "missing required key 'keys'"),
    ("algorithms: [RS257]\nkeys: {jwks_file: %s}" % JWKS, "jwt_providers.p.algorithms[0]", "unknown JWS algorithm 'RS257'"),
    ("algorithms: [NONE]\nkeys: {jwks_file: %s}" % JWKS, "jwt_providers.p.algorithms[0]", "alg none (unsecured tokens) can never be allowed"),
    ("algorithms: []\nkeys: {jwks_file: %s}" % JWKS, "jwt_providers.p.algorithms", "list at least one algorithm"),
    ("algorithms: [RS256]\nkeys: {}", "jwt_providers.p.keys", "give at least one key source"),
    ("algorithms: [RS256]\nkeys: {jwks_file: missing.json}", "jwt_providers.p.keys.jwks_file", "cannot read missing.json"),
    ("algorithms: [RS256]\nkeys: {jwks: {keys: 3}}", "jwt_providers.p.keys.jwks", 'a JWKS is an object with a "keys" list'),
    ("algorithms: [RS256]\nkeys: {jwks: {keys: [{kty: EC, crv: P-256, x: AA, y: AA}]}}", "jwt_providers.p.keys.jwks", "invalid EC JWK"),
    ("algorithms: [HS256]\nkeys: {jwks_file: %s}" % JWKS, "jwt_providers.p.keys.jwks_file", "no key in this JWKS can verify HS256"),
    ("algorithms: [HS256, RS256]\nkeys: {jwks_file: %s}" % JWKS, "jwt_providers.p.keys", "HS* algorithms need HMAC secrets from the keyring"),
    ("algorithms: [HS256]\nkeys: {keyring: [nope]}", "jwt_providers.p.keys.keyring[0]", "no key 'nope' in the keyring"),
    ("algorithms: [HS256]\nkeys: {keyring: [sig-hmac]}", "jwt_providers.p.keys.keyring[0]", "is for hmac-sha256, not a JWS algorithm"),
    ("algorithms: [HS256]\nkeys: {keyring: [hs-512]}", "jwt_providers.p.keys.keyring[0]", "bound to HS512"),
    ("algorithms: [ES256]\nkeys: {remote: {url: 'ftp://x/jwks'}}", "jwt_providers.p.keys.remote.url", "not an absolute https URL"),
    ("algorithms: [ES256]\nkeys: {remote: {url: 'https://127.0.0.1/j', ca_file: nope.pem}}", "jwt_providers.p.keys.remote.ca_file", "cannot load CA bundle"),
    ("algorithms: [ES256]\nkeys: {remote: {url: 'https://127.0.0.1/j', cache_ttl: soon}}", "jwt_providers.p.keys.remote.cache_ttl", "expected a duration"),
    ("algorithms: [ES256]\nkeys: {jwks_file: %s}\ntoken_from: {header: X-Token}" % JWKS, "jwt_providers.p.token_from.header", "not a lower-case header name"),
    ("algorithms: [ES256]\nkeys: {jwks_file: %s}\ntoken_from: {header: a, query: b}" % JWKS, "jwt_providers.p.token_from", "give exactly one of header, query, cookie"),
    ("algorithms: [ES256]\nkeys: {jwks_file: %s}\ntoken_from: {cookie: at}\nforward: {remove_token: true}" % JWKS, "jwt_providers.p.forward.remove_token", "remove_token works for a token in a header only"),
    ("algorithms: [ES256]\nkeys: {jwks_file: %s}\nforward: {claims: {sub: host}}" % JWKS, "jwt_providers.p.forward.claims.sub", "a claim header is named x-authz-<name>, got 'host'"),
    ("algorithms: [ES256]\nkeys: {jwks_file: %s}\nforward: {claims: {sub: x-user}}" % JWKS, "jwt_providers.p.forward.claims.sub", "a claim header is named x-authz-<name>, got 'x-user'"),
    ("algorithms: [ES256]\nkeys: {jwks_file: %s}\nforward: {claims: {sub: x-authz-}}" % JWKS, "jwt_providers.p.forward.claims.sub", "a claim header is named x-authz-<name>, got 'x-authz-'"),
    ("algorithms: [ES256]\nkeys: {jwks_file: %s}\nforward: {payload_header: x-jwt-payload}" % JWKS, "jwt_providers.p.forward.payload_header", "a claim header is named x-authz-<name>, got 'x-jwt-payload'"),
    ("algorithms: [ES256]\nkeys: {jwks_file: %s}\nforward: {claims: {sub: X-Authz-User}}" % JWKS, "jwt_providers.p.forward.claims.sub", "not a lower-case header name"),
    ("algorithms: [ES256]\nkeys: {jwks_file: %s}\nforward: {claims: {sub: x-authz-subject}}" % JWKS, "jwt_providers.p.forward.claims.sub", "'x-authz-subject' is a header authz sets itself"),
    ("algorithms: [ES256]\nkeys: {jwks_file: %s}\nforward: {claims: {sub: x-authz-status}}" % JWKS, "jwt_providers.p.forward.claims.sub", "'x-authz-status' is a header authz sets itself"),
    ("algorithms: [ES256]\nkeys: {jwks_file: %s}\nforward: {claims: {sub: x-authz-a, email: x-authz-a}}" % JWKS, "jwt_providers.p.forward.claims.email", "header 'x-authz-a' is used twice"),
    ("algorithms: [ES256]\nkeys: {jwks_file: %s}\nrealm: 'a\"b'" % JWKS, "jwt_providers.p.realm", "printable ASCII"),
    ("algorithms: [ES256]\nkeys: {jwks_file: %s}\nmax_lifetime: 0s" % JWKS, "jwt_providers.p.max_lifetime", "must be at least 1000 ms"),
    ("algorithms: [ES256]\nkeys: {jwks_file: %s}\nsingle_use: yes-please" % JWKS, "jwt_providers.p.single_use", "expected true or false"),
    ("algorithms: [ES256]\nkeys: {jwks_file: %s}\naudience: x" % JWKS, "jwt_providers.p.audience", "unknown key 'audience'"),
]


@pytest.mark.parametrize(("body", "field", "message"), CASES, ids=[c[2][:40] for c in CASES])
def test_bad_provider_config_names_file_line_and_field(tmp_path: Path, body: str, field: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        provider(tmp_path, body)
    err = info.value
    assert err.file.endswith("policy.yaml")
    assert err.line > 0
    assert err.field == field
    assert message in err.message
