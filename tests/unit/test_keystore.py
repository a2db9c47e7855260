"""The keystore: encryption at rest, the file backend, the live keyring, and the methods using it.

Everything is real: files in a temporary directory, the engine on the memory
store with a pinned clock, RFC 9421 signatures from authz's signer, JWTs from
PyJWT.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import pathlib
import stat
from collections.abc import AsyncIterator
from typing import Any

import jwt as pyjwt
import pytest

from authz.clock import FixedClock
from authz.decision import Decision
from authz.errors import ConfigError
from authz.httpsig import sign_request
from authz.keys.crypto import MasterKey, MasterKeys, new_master_key, parse_master_keys
from authz.keys.errors import AlreadyExists, Corrupt, FailedPrecondition, InvalidArgument, NotFound
from authz.keys.keystore import FileBackend, Keystore, decode
from authz.pipeline import Engine
from authz.policy.compile import load_policy
from authz.store import MemoryStore
from tests.unit.test_signature_profile import to_request

T0 = 1_700_000_000_000
URL = "http://api.example.com/signed/items"

POLICY = """
version: 1
jwt_providers:
  managed:
    algorithms: [EdDSA, ES256, HS256]
    keys: {keystore: true}
    max_lifetime: 2h
signatures:
  bots: {}
api_keys:
  partners: {header: x-api-key}
  gold: {tiers: [gold]}
routes:
  - {name: signed, match: {path: {prefix: /signed/}}, auth: ["signature:bots"]}
  - {name: jwt, match: {path: {prefix: /jwt/}}, auth: ["jwt:managed"]}
  - {name: api, match: {path: {prefix: /api/}}, auth: ["api_key:partners"]}
  - {name: gold, match: {path: {prefix: /gold/}}, auth: ["api_key:gold"]}
"""


def masters(*specs: tuple[str, bytes]) -> MasterKeys:
    return MasterKeys([MasterKey(i, k) for i, k in specs])


M1 = ("m1", os.urandom(32))
M2 = ("m2", os.urandom(32))


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
async def ks(tmp_path: pathlib.Path, clock: FixedClock) -> AsyncIterator[Keystore]:
    store = Keystore(FileBackend(str(tmp_path / "keystore.json")), masters(M1), clock=clock)
    await store.start()
    yield store
    await store.close()


class Harness:
    def __init__(self, path: str, ks: Keystore, clock: FixedClock) -> None:
        self.policy = load_policy(path, keystore=ks)
        self.engine = Engine(self.policy, MemoryStore(epoch_ms=T0 - 600_000), clock=clock)
        self.clock = clock

    async def decide(self, url: str, headers: list[tuple[str, str]]) -> Decision:
        return await self.engine.decide(to_request("GET", url, headers))

    def signed(self, key_id: str, algorithm: str, key: Any, url: str = URL) -> list[tuple[str, str]]:
        return sign_request("GET", url, [], key_id=key_id, algorithm=algorithm, key=key, created=self.clock.now_ms() // 1000)


@pytest.fixture
def h(tmp_path: pathlib.Path, ks: Keystore, clock: FixedClock) -> Harness:
    (tmp_path / "policy.yaml").write_text(POLICY)
    return Harness(str(tmp_path / "policy.yaml"), ks, clock)


async def wait_for(condition: Any, seconds: float = 1.0) -> float:
    """Poll ``condition`` until true; return the time it took (fails past ``seconds``)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not condition():
        assert loop.time() - start < seconds, "not seen within the deadline"
        await asyncio.sleep(0.02)
    return loop.time() - start


def secret_bytes(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# -- master keys and encryption at rest -------------------------------------------


def test_master_keys_parse_and_refuse_bad_ones() -> None:
    one = new_master_key()
    assert parse_master_keys(one).primary.id == "default"
    two = parse_master_keys(f"new:{new_master_key()},old:{one}")
    assert two.ids == ("new", "old") and two.primary.id == "new"
    with pytest.raises(ValueError, match="32 random bytes"):
        parse_master_keys(base64.b64encode(b"short").decode())
    with pytest.raises(ValueError, match="not valid base64"):
        parse_master_keys("k:not base64!")
    with pytest.raises(ValueError, match="needs an id"):
        parse_master_keys(f"{one},{one}")
    with pytest.raises(ValueError) as exc:
        parse_master_keys("k:" + base64.b64encode(b"x" * 31).decode())
    assert base64.b64encode(b"x" * 31).decode() not in str(exc.value)


async def test_round_trip_and_no_secret_in_clear(ks: Keystore, tmp_path: pathlib.Path) -> None:
    made = await ks.create_key("partner", "hmac-sha256")
    record, text = await ks.create_api_key("export", "acme", "gold")
    data = (tmp_path / "keystore.json").read_bytes()
    secret = secret_bytes(made.secret)
    api_secret = text.rsplit("_", 1)[1]
    for needle in (made.secret.encode(), base64.b64encode(secret), secret, api_secret.encode(), text.encode()):
        assert needle not in data
    state = decode(data, ks.master_keys)
    assert state.keys["partner"].versions[0].secret == secret
    assert state.api_keys[record.id].owner == "acme"
    assert stat.S_IMODE(os.stat(tmp_path / "keystore.json").st_mode) == 0o600


async def test_tampering_and_wrong_master_key_are_refused(ks: Keystore, tmp_path: pathlib.Path) -> None:
    await ks.create_key("partner", "hmac-sha256")
    await ks.create_key("bot", "ed25519")
    data = (tmp_path / "keystore.json").read_bytes()
    doc = json.loads(data)
    with pytest.raises(Corrupt, match="master key 'm1', which is not configured"):
        decode(data, masters(M2))
    with pytest.raises(Corrupt, match="integrity tag does not match"):
        decode(data, masters(("m1", os.urandom(32))))
    # a revocation edited in (or out) of the clear fields
    edited = json.loads(data)
    edited["keys"][1]["versions"][0]["revoked_ms"] = 5
    with pytest.raises(Corrupt, match="integrity tag"):
        decode(json.dumps(edited).encode(), ks.master_keys)
    # a flipped ciphertext byte, with the MAC recomputed: the AEAD refuses it
    sealed = doc["keys"][1]["versions"][0]["secret"] if "secret" in doc["keys"][1]["versions"][0] else doc["keys"][0]["versions"][0]["secret"]
    ct = bytearray(base64.urlsafe_b64decode(sealed["ct"] + "=="))
    ct[0] ^= 1
    sealed["ct"] = base64.urlsafe_b64encode(bytes(ct)).rstrip(b"=").decode()
    from authz.keys.crypto import mac
    from authz.keys.keystore import _canonical

    doc.pop("mac")
    doc["mac"] = mac(ks.master_keys.primary, _canonical(doc))
    with pytest.raises(Corrupt, match="does not decrypt"):
        decode(json.dumps(doc).encode(), ks.master_keys)
    with pytest.raises(Corrupt, match="not JSON"):
        decode(data[: len(data) // 2], ks.master_keys)


async def test_master_key_rotation(ks: Keystore, tmp_path: pathlib.Path, clock: FixedClock) -> None:
    made = await ks.create_key("partner", "HS256")
    path = str(tmp_path / "keystore.json")
    rotated = Keystore(FileBackend(path), masters(M2, M1), clock=clock)
    await rotated.start()
    assert await rotated.rotate_master() == 1
    await rotated.close()
    data = (tmp_path / "keystore.json").read_bytes()
    only_new = decode(data, masters(M2))  # the old key can go now
    assert only_new.keys["partner"].versions[0].secret == secret_bytes(made.secret)
    with pytest.raises(Corrupt):
        decode(data, masters(M1))


async def test_a_corrupt_keystore_refuses_the_start(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "keystore.json"
    path.write_bytes(b'{"format": "authz-keystore", "format_version": 1, "serial": 1')
    with pytest.raises(ConfigError) as exc:
        await Keystore(FileBackend(str(path)), masters(M1)).start()
    assert str(path) in str(exc.value) and "not JSON" in str(exc.value)


async def test_a_later_bad_change_keeps_the_keys_in_force(ks: Keystore, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="authz")
    made = await ks.create_key("partner", "hmac-sha256")
    generation = ks.generation
    path = tmp_path / "keystore.json"
    path.write_bytes(path.read_bytes().replace(b'"serial": 1', b'"serial": 9'))
    await wait_for(lambda: "refused" in caplog.text)
    assert ks.generation == generation and "partner.v1" in ks.ring_keys()
    assert str(path) in caplog.text and "integrity tag" in caplog.text
    assert made.secret not in caplog.text


# -- the file backend between instances ----------------------------------------------


async def test_a_second_instance_sees_changes_within_a_second(ks: Keystore, tmp_path: pathlib.Path, clock: FixedClock) -> None:
    other = Keystore(FileBackend(str(tmp_path / "keystore.json")), masters(M1), clock=clock)
    await other.start()
    try:
        await ks.create_key("partner", "ed25519")
        await wait_for(lambda: "partner.v1" in other.ring_keys())
        await ks.rotate_key("partner", T0 + 60_000)
        await wait_for(lambda: "partner.v2" in other.ring_keys())
        assert other.ring_keys()["partner.v1"].not_after_ms == T0 + 60_000
        await other.revoke_key("partner", 2)  # the other way round too
        await wait_for(lambda: ks.ring_keys()["partner.v2"].revoked)
        # both wrote; neither lost the other's change
        assert [v.number for v in ks.key("partner").versions] == [1, 2]
    finally:
        await other.close()


async def test_concurrent_writers_lose_nothing(ks: Keystore, tmp_path: pathlib.Path, clock: FixedClock) -> None:
    other = Keystore(FileBackend(str(tmp_path / "keystore.json")), masters(M1), clock=clock)
    await other.start()
    try:
        await asyncio.gather(*(s.create_api_key(f"k{i}", "acme") for i in range(10) for s in (ks, other)))
        await ks.refresh()
        assert len(ks.api_keys()) == 20
    finally:
        await other.close()


# -- managed keys ----------------------------------------------------------------------


async def test_key_operations_and_their_errors(ks: Keystore) -> None:
    made = await ks.create_key("bot", "ES256", subject="bot-co")
    assert made.key_id == "bot.v1" and "BEGIN PRIVATE KEY" in made.secret
    assert ks.key("bot").versions[0].secret == b"" and "PRIVATE" not in ks.key("bot").versions[0].public_pem
    with pytest.raises(AlreadyExists):
        await ks.create_key("bot", "ES256")
    with pytest.raises(InvalidArgument, match="key name"):
        await ks.create_key("bad name", "ES256")
    with pytest.raises(InvalidArgument, match="unknown algorithm"):
        await ks.create_key("x", "RS1")
    with pytest.raises(InvalidArgument, match="import the public key"):
        await ks.create_key("rsa", "RS256")
    with pytest.raises(InvalidArgument, match="private key"):
        await ks.create_key("imp", "ES256", import_pem=made.secret)
    with pytest.raises(NotFound):
        await ks.revoke_key("nope")
    jwks = ks.jwks()
    assert [(k["kid"], k["alg"]) for k in jwks["keys"]] == [("bot.v1", "ES256")] and "d" not in jwks["keys"][0]
    # a public JWK imports (alg taken from it); a private one is refused
    imported = await ks.create_key("imp", "", import_jwk=json.dumps(jwks["keys"][0]))
    assert imported.secret == "" and imported.key.algorithm == "ES256"
    with pytest.raises(InvalidArgument, match="private or secret material"):
        await ks.create_key("imp2", "ES256", import_jwk=json.dumps({**jwks["keys"][0], "d": "AAAA"}))
    with pytest.raises(InvalidArgument, match="exactly one key"):
        await ks.create_key("imp3", "ES256", import_jwk=json.dumps({"keys": jwks["keys"] * 2}))
    revoked = await ks.revoke_key("bot")
    assert [v.status(T0) for v in revoked.versions] == ["revoked"]
    assert ks.jwks()["keys"][0]["kid"] == "imp.v1"


# -- methods through the engine ----------------------------------------------------------


async def test_hmac_signature_rotation_works_until_the_chosen_time(h: Harness, ks: Keystore, clock: FixedClock) -> None:
    made = await ks.create_key("partner", "hmac-sha256", subject="partner-co")
    old = secret_bytes(made.secret)
    d = await h.decide(URL, h.signed("partner.v1", "hmac-sha256", old))
    assert d.reason == "ok" and d.identity.subject == "partner-co" and d.identity.key_id == "partner.v1"
    new = await ks.rotate_key("partner", T0 + 60_000)
    clock.advance(59_000)
    assert (await h.decide(URL, h.signed("partner.v1", "hmac-sha256", old))).reason == "ok"
    assert (await h.decide(URL, h.signed("partner.v2", "hmac-sha256", secret_bytes(new.secret)))).reason == "ok"
    clock.advance(1_000)
    assert (await h.decide(URL, h.signed("partner.v1", "hmac-sha256", old))).reason == "sig.unknown_key"
    assert (await h.decide(URL, h.signed("partner.v2", "hmac-sha256", secret_bytes(new.secret)))).reason == "ok"


def token(private_pem: str, kid: str, alg: str = "EdDSA", **claims: Any) -> str:
    body = {"sub": "alice", "exp": T0 // 1000 + 3600, "iat": T0 // 1000, **claims}
    return pyjwt.encode(body, private_pem, algorithm=alg, headers={"kid": kid})


async def test_jwt_rotation_works_until_the_chosen_time(h: Harness, ks: Keystore, clock: FixedClock) -> None:
    made = await ks.create_key("issuer", "EdDSA")
    bearer = [("authorization", "Bearer " + token(made.secret, made.key_id))]
    assert (await h.decide("http://api.example.com/jwt/x", bearer)).reason == "ok"
    await ks.rotate_key("issuer", T0 + 60_000)
    clock.advance(59_999)
    assert (await h.decide("http://api.example.com/jwt/x", bearer)).reason == "ok"
    clock.advance(1)
    assert (await h.decide("http://api.example.com/jwt/x", bearer)).reason == "jwt.key_revoked"


async def test_revocation_applies_at_once_to_a_cached_jwt(h: Harness, ks: Keystore) -> None:
    made = await ks.create_key("issuer", "ES256")
    bearer = [("authorization", "Bearer " + token(made.secret, made.key_id, "ES256"))]
    provider: Any = h.policy.authenticators["jwt:managed"]
    assert (await h.decide("http://api.example.com/jwt/x", bearer)).reason == "ok"
    assert (await h.decide("http://api.example.com/jwt/x", bearer)).reason == "ok"
    assert provider.hits == 1  # the second one came from the verified-token cache
    await ks.revoke_key("issuer", 1)
    d = await h.decide("http://api.example.com/jwt/x", bearer)
    assert d.reason == "jwt.key_revoked"


async def test_a_revocation_by_another_instance_reaches_a_cached_jwt(h: Harness, ks: Keystore, tmp_path: pathlib.Path, clock: FixedClock) -> None:
    made = await ks.create_key("issuer", "EdDSA")
    bearer = [("authorization", "Bearer " + token(made.secret, made.key_id))]
    assert (await h.decide("http://api.example.com/jwt/x", bearer)).reason == "ok"
    assert (await h.decide("http://api.example.com/jwt/x", bearer)).reason == "ok"
    admin = Keystore(FileBackend(str(tmp_path / "keystore.json")), masters(M1), clock=clock)
    await admin.start()
    try:
        await admin.revoke_key("issuer")
        await wait_for(lambda: ks.ring_keys()["issuer.v1"].revoked)
        assert (await h.decide("http://api.example.com/jwt/x", bearer)).reason == "jwt.key_revoked"
    finally:
        await admin.close()


async def test_api_keys_end_to_end(h: Harness, ks: Keystore, clock: FixedClock) -> None:
    record, text = await ks.create_api_key("export", "acme", "gold", expires_ms=T0 + 3_600_000)
    api = "http://api.example.com/api/orders"
    d = await h.decide(api, [("x-api-key", text), ("x-other", "1")])
    assert d.reason == "ok" and d.identity.subject == "acme" and d.identity.tier == "gold"
    assert d.identity.key_id == f"apikey:{record.id}" and d.identity.method == "api_key:partners"
    assert "x-api-key" in d.remove_headers  # never forwarded
    assert (await h.decide("http://api.example.com/gold/x", [("x-api-key", text)])).reason == "ok"

    wrong = text[:-2] + ("AA" if not text.endswith("AA") else "BA")
    for bad, why in [(wrong, "apikey.invalid"), ("azk_short", "apikey.invalid"), (text + "x", "apikey.invalid"), (f"{text}, {text}", "apikey.invalid")]:
        d = await h.decide(api, [("x-api-key", bad)])
        assert (d.reason, d.status) == (why, 401), bad
        assert any(n == "www-authenticate" and "ApiKey" in v for n, v in d.client_headers)
    assert (await h.decide(api, [])).reason == "auth.missing"

    silver, silver_text = await ks.create_api_key("s", "beta", "silver")
    assert (await h.decide("http://api.example.com/gold/x", [("x-api-key", silver_text)])).reason == "apikey.tier_not_allowed"

    await ks.revoke_api_key(silver.id)
    assert (await h.decide(api, [("x-api-key", silver_text)])).reason == "apikey.revoked"
    clock.advance(3_600_000)
    assert (await h.decide(api, [("x-api-key", text)])).reason == "apikey.expired"


async def test_api_key_rotation_overlaps_until_the_chosen_time(h: Harness, ks: Keystore, clock: FixedClock) -> None:
    old, old_text = await ks.create_api_key("export", "acme", "gold")
    new, new_text = await ks.rotate_api_key(old.id, T0 + 10_000)
    assert (new.owner, new.tier) == ("acme", "gold") and new.id != old.id
    api = "http://api.example.com/api/x"
    assert (await h.decide(api, [("x-api-key", old_text)])).reason == "ok"
    clock.advance(10_000)
    assert (await h.decide(api, [("x-api-key", old_text)])).reason == "apikey.expired"
    assert (await h.decide(api, [("x-api-key", new_text)])).reason == "ok"


def test_api_key_methods_without_a_keystore_are_refused(tmp_path: pathlib.Path) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    with pytest.raises(ConfigError, match="keystore"):
        load_policy(str(tmp_path / "p.yaml"))


async def test_names_of_the_keys_file_are_not_taken(tmp_path: pathlib.Path, ks: Keystore) -> None:
    secret = base64.b64encode(os.urandom(32)).decode()
    (tmp_path / "keys.yaml").write_text(f"keys:\n  - {{id: legacy, algorithm: hmac-sha256, secret: {secret}}}\n")
    (tmp_path / "p.yaml").write_text("version: 1\nkeys_file: keys.yaml\nsignatures: {bots: {}}\nroutes:\n  - {name: a, auth: ['signature:bots']}\n")
    policy = load_policy(str(tmp_path / "p.yaml"), keystore=ks)
    ks.file_ring = policy.keyring.file_ring  # type: ignore[attr-defined]
    with pytest.raises(AlreadyExists, match="keys file"):
        await ks.create_key("legacy", "hmac-sha256")
    with pytest.raises(FailedPrecondition, match="keys file"):
        await ks.rotate_key("legacy")
    await ks.create_key("fresh", "hmac-sha256")
    ring = policy.keyring
    assert {k.id: k.source for k in ring} == {"legacy": "file", "fresh.v1": "keystore"}


def test_api_key_ids_are_letters_and_digits() -> None:
    # an id is typed on command lines (authz apikeys revoke ID): one starting with '-' would read as an option
    from authz.keys import apikeys

    ids = [apikeys.new("k", "alice", "", 0, 1, frozenset())[0].id for _ in range(3000)]
    assert all(len(i) == apikeys.ID_CHARS and i.isascii() and i.isalnum() for i in ids)
    assert len(set(ids)) == len(ids)
