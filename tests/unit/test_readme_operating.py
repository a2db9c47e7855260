"""README's "Operating authz" is true: its certificate commands make files authz accepts, its options exist, its links resolve."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import click

from authz.cli import serve
from authz.server import tls

ROOT = Path(__file__).resolve().parents[2]
SECTION = ROOT.joinpath("README.md").read_text().split("## Operating authz", 1)[1]


def _block(after: str) -> str:
    start = SECTION.index(after)
    body = SECTION[SECTION.index("```sh\n", start) + 6 :]
    return body[: body.index("```")]


def test_the_certificate_commands_make_a_set_authz_accepts_for_mtls(tmp_path: Path) -> None:
    assert shutil.which("openssl"), "openssl is on the test machines"
    script = _block("**2. Certificates.**").replace("/etc/authz/tls", str(tmp_path))
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    files = tls.CertFiles(str(tmp_path / "authz.pem"), str(tmp_path / "authz.key"), str(tmp_path / "envoy-ca.pem"), name="grpc")
    try:
        assert "CN=authz" in files.material.subject
        text = subprocess.run(["openssl", "x509", "-in", str(tmp_path / "authz.pem"), "-noout", "-ext", "subjectAltName"],
                              capture_output=True, text=True, check=True, timeout=30).stdout  # fmt: skip
        assert "DNS:authz.internal" in text
        done = subprocess.run(
            ["openssl", "verify", "-CAfile", str(tmp_path / "envoy-ca.pem"), "-purpose", "sslclient", str(tmp_path / "envoy-client.pem")],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        files.close()


def test_every_serve_option_the_section_uses_exists() -> None:
    real = {o for p in serve.params if isinstance(p, click.Option) for o in (*p.opts, *p.secondary_opts)}
    used = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", SECTION)) - {"--mode"}  # envoy's --mode validate
    assert used <= real, sorted(used - real)
    command = _block("**4. Serve.**").replace("\\\n", " ")
    assert shlex.split(command)[:2] == ["authz", "serve"]


def test_the_section_links_to_files_that_exist() -> None:
    for target in re.findall(r"\]\(([^)#]+)\)", SECTION):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target
