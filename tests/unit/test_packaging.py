"""The Dockerfile, the Kubernetes example and the systemd unit: syntax, options that exist, what is checkable here.

There is no container engine or cluster on the machines this project is
tested on, so the images are not built and the manifests are not applied:
these tests check what can be checked without them (the Envoy config with the
real Envoy, the policy with authz, the unit with systemd-analyze).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import click
import yaml

from authz.cli import serve
from authz.policy.compile import load_policy
from tests.support.procs import envoy_binary, venv_bin

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s" / "authz.yaml"
UNIT = ROOT / "deploy" / "systemd" / "authz.service"
DOCKERFILE = ROOT / "Dockerfile"
SERVE_OPTIONS = {o for p in serve.params if isinstance(p, click.Option) for o in (*p.opts, *p.secondary_opts)}


def assert_serve_options(args: list[str]) -> None:
    for arg in args:
        if arg.startswith("--"):
            assert arg.split("=", 1)[0] in SERVE_OPTIONS, arg


def k8s() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(K8S.read_text()) if d]
    return {d["kind"]: d for d in docs} | {"_configmaps": {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}}


def test_the_kubernetes_example_has_what_it_says() -> None:
    docs = k8s()
    assert {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap"} <= set(docs)
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert set(containers) == {"authz", "envoy"}
    authz = containers["authz"]
    assert_serve_options(authz["args"])
    assert "readinessProbe" in authz and "livenessProbe" in authz
    assert "127.0.0.1:9190/healthz" in " ".join(authz["readinessProbe"]["exec"]["command"])
    for c in containers.values():
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert docs["PodDisruptionBudget"]["spec"]["selector"] == docs["Deployment"]["spec"]["selector"]
    assert docs["Service"]["spec"]["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]


def test_the_kubernetes_policy_and_envoy_config_are_valid(tmp_path: Path) -> None:
    maps = k8s()["_configmaps"]
    policy = tmp_path / "policy.yaml"
    policy.write_text(maps["authz-policy"]["data"]["policy.yaml"])
    assert load_policy(str(policy)).routes
    envoy = tmp_path / "envoy.yaml"
    envoy.write_text(maps["authz-envoy"]["data"]["envoy.yaml"])
    done = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", envoy, "--disable-hot-restart", "--log-level", "error"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dockerfile_is_multi_stage_non_root_and_runs_authz_serve() -> None:
    text = DOCKERFILE.read_text()
    assert len(re.findall(r"^FROM ", text, re.MULTILINE)) == 2
    (user,) = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert not user.startswith("0") and user.split(":")[0] != "root"
    assert 'ENTRYPOINT ["authz", "serve"]' in text
    assert not re.search(r"^ADD https?:", text, re.MULTILINE)  # nothing fetched from the network by the build itself
    cmd = text[text.index("CMD [") + 4 :]
    args = re.findall(r'"([^"]+)"', cmd[: cmd.index("]") + 1])
    assert_serve_options(args)


def test_the_systemd_unit_is_sandboxed_and_verifies(tmp_path: Path) -> None:
    text = UNIT.read_text()
    for line in ("ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes", "CapabilityBoundingSet=", "DynamicUser=yes", "ProtectHome=yes"):
        assert re.search(rf"^{re.escape(line)}$", text, re.MULTILINE), line
    (exec_start,) = re.findall(r"^ExecStart=(.*)$", text, re.MULTILINE)
    words = shlex.split(exec_start)
    assert words[:2] == ["/opt/authz/bin/authz", "serve"]
    assert_serve_options(words[2:])
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is part of the test machine (systemd)"
    unit = tmp_path / "authz.service"
    unit.write_text(text.replace("/opt/authz/bin/authz", str(venv_bin("authz"))))  # the one thing that differs here
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr
    broken = tmp_path / "broken.service"
    broken.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))
    done = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True, timeout=60, check=False)
    assert "Unknown key 'ProtectSytem'" in done.stderr  # the check sees a mistake
