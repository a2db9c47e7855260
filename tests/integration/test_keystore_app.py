"""A served app with a keystore: API keys made by another keystore instance authenticate at once."""

from __future__ import annotations

import asyncio
import base64
import os
import pathlib

import pytest

from authz.errors import ConfigError
from authz.keys.crypto import parse_master_keys
from authz.keys.keystore import FileBackend, Keystore
from authz.server.app import App
from authz.settings import Settings
from tests.unit.test_signature_profile import to_request

POLICY = """
version: 1
api_keys: {partners: {}}
routes:
  - {name: api, auth: ["api_key:partners"]}
"""


async def test_served_app_follows_the_keystore(tmp_path: pathlib.Path) -> None:
    (tmp_path / "policy.yaml").write_text(POLICY)
    master = base64.b64encode(os.urandom(32)).decode()
    (tmp_path / "master.key").write_text(f"k1:{master}\n")
    settings = Settings(
        config=str(tmp_path / "policy.yaml"), grpc_listen="127.0.0.1:0", http_listen="", drain=0,
        keystore=str(tmp_path / "ks.json"), master_key_file=str(tmp_path / "master.key"),
    )  # fmt: skip
    app = App(settings)
    await app.start()
    admin = Keystore(FileBackend(str(tmp_path / "ks.json")), parse_master_keys(f"k1:{master}"))
    await admin.start()
    try:
        record, text = await admin.create_api_key("export", "acme", "gold")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.0
        while app.keystore is not None and app.keystore.api_key(record.id) is None:
            assert loop.time() < deadline, "the served app did not see the new key within a second"
            await asyncio.sleep(0.02)
        d = await app.engine.decide(to_request("GET", "http://api.example.com/x", [("x-api-key", text)]))
        assert (d.reason, d.identity.subject, d.identity.tier) == ("ok", "acme", "gold")
        assert app.reload()  # a reload compiles against the same keystore
        d = await app.engine.decide(to_request("GET", "http://api.example.com/x", [("x-api-key", text)]))
        assert d.reason == "ok"
    finally:
        await admin.close()
        await app.stop()


async def test_a_corrupt_keystore_refuses_the_start(tmp_path: pathlib.Path) -> None:
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "ks.json").write_text("{not json")
    (tmp_path / "master.key").write_text(base64.b64encode(os.urandom(32)).decode())
    app = App(Settings(
        config=str(tmp_path / "policy.yaml"), grpc_listen="127.0.0.1:0", http_listen="", drain=0,
        keystore=str(tmp_path / "ks.json"), master_key_file=str(tmp_path / "master.key"),
    ))  # fmt: skip
    with pytest.raises(ConfigError, match=r"ks\.json.*not JSON"):
        await app.start()
