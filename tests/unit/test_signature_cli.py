"""``authz sign``: the headers it prints get a request through a signature route."""

from __future__ import annotations

import pathlib

from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from authz.cli import cli
from tests.unit.test_signature_profile import Harness, Keys, keys, write_policy  # noqa: F401 (keys: fixture)

URL = "http://api.example.com/signed/items?page=2"


async def test_printed_headers_pass_and_are_single_use(tmp_path: pathlib.Path, keys: Keys) -> None:
    h = Harness(write_policy(tmp_path, keys), keys)
    pem = keys.private["ed"].private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "ed.pem").write_bytes(pem)
    args = ["sign", "--key-id", "ed", "-a", "ed25519", "--key-file", str(tmp_path / "ed.pem"), "-X", "POST",
            "-H", "Content-Type: application/json", "-d", '{"a": 1}', URL]  # fmt: skip
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output
    printed = [tuple(line.split(": ", 1)) for line in out.output.splitlines()]
    assert [n for n, _ in printed] == ["Content-Digest", "Signature-Input", "Signature"]
    # the clock of the harness is pinned; the CLI used the real time
    created = int(printed[1][1].split("created=")[1].split(";")[0])
    h.clock.advance(created * 1000 - h.clock.now_ms())
    headers = [("Content-Type", "application/json"), ("Content-Length", "8"), *printed]
    assert (await h.decide(URL, headers, "POST")).reason == "ok"  # type: ignore[arg-type]
    assert (await h.decide(URL, headers, "POST")).reason == "sig.replay"  # type: ignore[arg-type]


def test_bad_input_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    (tmp_path / "secret").write_bytes(b"short")
    out = CliRunner().invoke(cli, ["sign", "--key-id", "k", "-a", "hmac-sha256", "--key-file", str(tmp_path / "secret"), URL])
    assert out.exit_code == 1 and "at least 32 bytes" in out.output
    (tmp_path / "secret").write_bytes(b"s" * 32)
    out = CliRunner().invoke(cli, ["sign", "--key-id", "k", "-a", "hmac-sha256", "--key-file", str(tmp_path / "secret"), "-H", "nocolon", URL])
    assert out.exit_code == 2 and "expected 'Name: value'" in out.output
    out = CliRunner().invoke(cli, ["sign", "--key-id", "k", "-a", "hmac-sha256", "--key-file", str(tmp_path / "secret"), "ftp://x/"])
    assert out.exit_code == 1 and "not an absolute http(s) URL" in out.output
