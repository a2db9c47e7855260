"""The Keys and ApiKeys admin services over a real gRPC server on a loopback port."""

from __future__ import annotations

import base64
import json
import logging
import os
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from authz.admin.v1 import admin_pb2 as pb
from authz.admin.v1 import admin_pb2_grpc
from authz.clock import FixedClock
from authz.keys.crypto import MasterKey, MasterKeys
from authz.keys.keystore import FileBackend, Keystore
from authz.policy.compile import load_policy
from authz.server.admin_keys import ApiKeysService, KeysService

T0 = 1_700_000_000_000


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, str]]] = []

    def __call__(self, context: grpc.aio.ServicerContext, action: str, target: str, **details: str) -> None:
        self.calls.append((action, target, details))


class Admin:
    def __init__(self, ks: Keystore, audit: Recorder, channel: grpc.aio.Channel, path: pathlib.Path) -> None:
        self.ks, self.audit, self.path = ks, audit, path
        self.keys = admin_pb2_grpc.KeysStub(channel)
        self.api = admin_pb2_grpc.ApiKeysStub(channel)


@pytest.fixture
async def admin(tmp_path: pathlib.Path) -> AsyncIterator[Admin]:
    secret = base64.b64encode(os.urandom(32)).decode()
    (tmp_path / "keys.yaml").write_text(f"keys:\n  - {{id: legacy, algorithm: hmac-sha256, secret: {secret}}}\n")
    (tmp_path / "p.yaml").write_text("version: 1\nkeys_file: keys.yaml\nsignatures: {bots: {}}\nroutes:\n  - {name: a, auth: ['signature:bots']}\n")
    ks = Keystore(FileBackend(str(tmp_path / "ks.json")), MasterKeys([MasterKey("m", os.urandom(32))]), clock=FixedClock(T0))
    await ks.start()
    policy = load_policy(str(tmp_path / "p.yaml"), keystore=ks)
    audit = Recorder()
    server = grpc.aio.server()
    admin_pb2_grpc.add_KeysServicer_to_server(KeysService(ks, audit, file_keys=lambda: policy.keyring), server)
    admin_pb2_grpc.add_ApiKeysServicer_to_server(ApiKeysService(ks, audit), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Admin(ks, audit, channel, tmp_path / "ks.json")
    finally:
        await channel.close()
        await server.stop(None)
        await ks.close()


async def code_of(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call
    return exc.value.code(), exc.value.details() or ""


async def test_keys_service(admin: Admin, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    made = await admin.keys.CreateKey(pb.CreateKeyRequest(name="partner", algorithm="hmac-sha256", subject="p-co"))
    assert made.key_id == "partner.v1" and made.secret and "once" in made.notice
    ed = await admin.keys.CreateKey(pb.CreateKeyRequest(name="bot", algorithm="ed25519"))
    assert "BEGIN PRIVATE KEY" in ed.secret
    rotated = await admin.keys.RotateKey(pb.RotateKeyRequest(name="partner", previous_valid_until_ms=T0 + 5000))
    assert rotated.key_id == "partner.v2" and rotated.key.current_key_id == "partner.v2"
    assert [(v.key_id, v.status, v.not_after_ms) for v in rotated.key.versions] == [("partner.v1", "retiring", T0 + 5000), ("partner.v2", "active", 0)]
    listed = await admin.keys.ListKeys(pb.ListKeysRequest())
    assert [(k.name, k.source) for k in listed.keys] == [("legacy", "file"), ("bot", "keystore"), ("partner", "keystore")]
    bot = await admin.keys.GetKey(pb.GetKeyRequest(name="bot"))
    assert json.loads(bot.versions[0].public_jwk)["kid"] == "bot.v1"
    jwks = json.loads((await admin.keys.ExportJwks(pb.ExportJwksRequest())).jwks)
    assert [k["kid"] for k in jwks["keys"]] == ["bot.v1"] and all("d" not in k for k in jwks["keys"])
    revoked = await admin.keys.RevokeKey(pb.RevokeKeyRequest(name="partner", version=1))
    assert [v.status for v in revoked.versions] == ["revoked", "active"]

    assert (await code_of(admin.keys.CreateKey(pb.CreateKeyRequest(name="bad name", algorithm="HS256"))))[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert (await code_of(admin.keys.CreateKey(pb.CreateKeyRequest(name="x", algorithm="nope"))))[0] == grpc.StatusCode.INVALID_ARGUMENT
    code, details = await code_of(admin.keys.CreateKey(pb.CreateKeyRequest(name="imp", algorithm="ed25519", import_pem=ed.secret)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "private key" in details and ed.secret not in details
    assert (await code_of(admin.keys.CreateKey(pb.CreateKeyRequest(name="bot", algorithm="ed25519"))))[0] == grpc.StatusCode.ALREADY_EXISTS
    assert (await code_of(admin.keys.CreateKey(pb.CreateKeyRequest(name="legacy", algorithm="HS256"))))[0] == grpc.StatusCode.ALREADY_EXISTS
    assert (await code_of(admin.keys.GetKey(pb.GetKeyRequest(name="none"))))[0] == grpc.StatusCode.NOT_FOUND
    assert (await code_of(admin.keys.RevokeKey(pb.RevokeKeyRequest(name="partner", version=9))))[0] == grpc.StatusCode.NOT_FOUND
    assert (await code_of(admin.keys.RotateKey(pb.RotateKeyRequest(name="legacy"))))[0] == grpc.StatusCode.FAILED_PRECONDITION
    assert (await code_of(admin.keys.RevokeKey(pb.RevokeKeyRequest(name="legacy"))))[0] == grpc.StatusCode.FAILED_PRECONDITION

    assert [(a, t) for a, t, _ in admin.audit.calls] == [
        ("key.create", "partner"), ("key.create", "bot"), ("key.rotate", "partner"), ("key.revoke", "partner"),
    ]
    secrets = [made.secret, ed.secret, rotated.secret]
    blob = repr(admin.audit.calls) + caplog.text + str(listed) + str(bot) + admin.path.read_text()
    for s in secrets:
        assert s not in blob
        assert s.splitlines()[1] not in blob if "\n" in s else True


async def test_api_keys_service(admin: Admin, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    made = await admin.api.CreateApiKey(pb.CreateApiKeyRequest(name="export", owner="acme", tier="gold"))
    assert made.key.startswith(f"azk_{made.api_key.id}_") and made.api_key.status == "active" and "once" in made.notice
    other = await admin.api.CreateApiKey(pb.CreateApiKeyRequest(name="x", owner="beta"))
    rotated = await admin.api.RotateApiKey(pb.RotateApiKeyRequest(id=made.api_key.id, previous_valid_until_ms=T0 + 1000))
    assert (rotated.api_key.owner, rotated.api_key.tier) == ("acme", "gold")
    listed = await admin.api.ListApiKeys(pb.ListApiKeysRequest(owner="acme"))
    assert {(a.id, a.status) for a in listed.api_keys} == {(made.api_key.id, "retiring"), (rotated.api_key.id, "active")}
    revoked = await admin.api.RevokeApiKey(pb.RevokeApiKeyRequest(id=other.api_key.id))
    assert revoked.status == "revoked" and revoked.revoked_ms == T0
    assert (await code_of(admin.api.RevokeApiKey(pb.RevokeApiKeyRequest(id=other.api_key.id))))[0] == grpc.StatusCode.FAILED_PRECONDITION
    assert (await code_of(admin.api.RevokeApiKey(pb.RevokeApiKeyRequest(id="nope"))))[0] == grpc.StatusCode.NOT_FOUND
    assert (await code_of(admin.api.CreateApiKey(pb.CreateApiKeyRequest(name="x", owner=""))))[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert (await code_of(admin.api.CreateApiKey(pb.CreateApiKeyRequest(owner="a", tier="bad tier"))))[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert [a for a, _, _ in admin.audit.calls] == ["apikey.create", "apikey.create", "apikey.rotate", "apikey.revoke"]
    everything = repr(admin.audit.calls) + caplog.text + str(listed) + str(revoked) + admin.path.read_text()
    for key in (made.key, other.key, rotated.key):
        assert key not in everything and key.rsplit("_", 1)[1] not in everything
