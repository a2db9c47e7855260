"""Precomputed traffic for the full-policy scenarios (o)-(r): every signed request is good once.

The full policy (bench/policies/full.yaml) requires a single-use nonce on
every RFC 9421 signature: a request wrk sent twice would be refused the
second time (401 ``sig.replay``) and counted as an error. So before a
measured run the bench writes the run's requests to a file, each signed
request with its own nonce, and the load generator sends each once:

* a third are JWT requests (``/v1/jwt/...``, ``Authorization: Bearer``): one
  token for all, as a client reuses its token, so authz verifies it once and
  then answers from its verified-token cache;
* a third are signed with the hmac-sha256 key and a third with the ed25519
  key (``/v1/sig/...``), by ``authz.httpsig.sign_request`` (what the tests
  and ``authz sign`` use), covering ``@method`` and ``@target-uri``, each
  with a fresh nonce and ``created`` of the moment authz may first accept it.

The keys are made for the run (``FullKeys.new``): the policy and its keys
file are written into the run's work directory with them, so nothing
committed can sign anything.

The wrk file (``write_wrk``) holds one request a line: its path, then its
header lines, separated by tabs; its first line is a request that may be
sent any number of times (a JWT one), which ``WRK_SCRIPT`` sends only after
a thread ran out of once-only requests, when it stops that thread. The k6
file (``write_k6``) is a JSON list of ``{"path", "headers"}`` that
``bench/k6.py`` reads with a SharedArray, request *i* at arrival *i*.

Sizing: a measured run cannot know its rate in advance, so the files are
sized for the door's plausible ceiling on one server core (``CEILING_RPS``)
over the whole wrk run (warm-up and measurement get a file each). Running
out is never silent: wrk reports it, and the row fails instead of showing
a throughput computed over a run that stopped early.
"""

from __future__ import annotations

import base64
import json
import math
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from authz.httpsig import sign_request
from bench import HERE

FULL_POLICY = HERE / "policies" / "full.yaml"
#: the request every scenario sends, under each route's prefix
ITEM = "/items/42?fields=name,price"
JWT_PATH = "/v1/jwt" + ITEM
SIG_PATH = "/v1/sig" + ITEM
#: request i is of kind KINDS[i % 3]
KINDS = ("jwt", "hmac-sha256", "ed25519")
KEY_IDS = {"hmac-sha256": "bench-hmac", "ed25519": "bench-ed25519"}
#: what a real API client sends besides its credentials (wrk and k6 add Host)
COMMON_HEADERS = (("accept", "application/json"), ("user-agent", "authz-bench/1"))
#: the policy's signature profile: its clock_skew (seconds) and max_age (seconds)
CLOCK_SKEW_S = 2
MAX_AGE_S = 300
#: the highest request rate the full policy plausibly reaches on one server core, per door: above the
#: bare grpc.aio floor (f) at its best for gRPC, and well above the bench policy's (e) for HTTP
CEILING_RPS = {"grpc": 3000, "http": 6000}
#: a bound on one file: about 30 s of signing in Python, and some 200 MB
MAX_REQUESTS = 300_000

Headers = list[tuple[str, str]]


@dataclass(frozen=True)
class FullKeys:
    """One run's keys: the RS256 token and its JWKS, an HMAC secret, an ed25519 key pair."""

    token: str
    jwks: str
    hmac_secret: bytes
    ed25519: ed25519.Ed25519PrivateKey

    @classmethod
    def new(cls, jwt: tuple[str, str]) -> FullKeys:
        """Fresh signature keys; the JWT key and token are the run's (those of (b), for a like comparison)."""
        jwks, token = jwt
        return cls(token, jwks, secrets.token_bytes(32), ed25519.Ed25519PrivateKey.generate())

    def signing_key(self, algorithm: str) -> Any:
        return self.hmac_secret if algorithm == "hmac-sha256" else self.ed25519


def write_policy(workdir: Path, keys: FullKeys) -> Path:
    """full.yaml and its keys file, with this run's keys, in ``workdir``; returns the policy's path.

    The committed policy is read as it is; only the provider's inline JWKS is
    replaced (comments are lost in the copy, the settings are the same).
    """
    conf = yaml.safe_load(FULL_POLICY.read_text())
    conf["jwt_providers"]["bench"]["keys"] = {"jwks": json.loads(keys.jwks)}
    pem = keys.ed25519.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    keyring = {
        "keys": [
            {"id": "bench-hmac", "algorithm": "hmac-sha256", "secret": base64.b64encode(keys.hmac_secret).decode(), "subject": "bench-hmac-client"},
            {"id": "bench-ed25519", "algorithm": "ed25519", "public_key": pem.decode(), "subject": "bench-ed25519-client"},
        ]
    }
    (workdir / conf["keys_file"]).write_text(yaml.safe_dump(keyring, sort_keys=False))
    path = workdir / FULL_POLICY.name
    path.write_text(yaml.safe_dump(conf, sort_keys=False))
    return path


def sized(seconds: float, rps: float) -> int:
    """Requests for ``seconds`` (rounded as wrk rounds them) at ``rps``; at least one."""
    return max(1, math.ceil(max(1, round(seconds)) * rps))


@dataclass(frozen=True)
class Traffic:
    """The requests of one scenario, signed for the Envoy listener at ``base``.

    :param ready_s: when the decision server was seen listening: its store's
        epoch is no later, and a nonce claim dated before the epoch is refused,
        so no signature is dated earlier than ``ready_s`` plus the clock skew
    """

    keys: FullKeys
    base: str
    ready_s: float

    @property
    def first_created(self) -> int:
        """The earliest ``created`` the store accepts: its claim (``created - clock_skew``) is after the epoch."""
        return math.ceil(self.ready_s) + CLOCK_SKEW_S + 1

    def probe(self) -> tuple[str, dict[str, str]]:
        """A request that may be sent any number of times (a JWT one): the URL and its headers."""
        return self.base + JWT_PATH, dict(self._jwt_headers())

    def _jwt_headers(self) -> Headers:
        return [*COMMON_HEADERS, ("authorization", f"Bearer {self.keys.token}")]

    def requests(self, n: int) -> Iterator[tuple[str, Headers]]:
        """``n`` requests, (path, headers), the three kinds in turn; every signature has its own nonce."""
        created = max(int(time.time()), self.first_created)
        url = self.base + SIG_PATH
        for i in range(n):
            kind = KINDS[i % len(KINDS)]
            if kind == "jwt":
                yield JWT_PATH, self._jwt_headers()
                continue
            signed = sign_request("GET", url, [], key_id=KEY_IDS[kind], algorithm=kind, key=self.keys.signing_key(kind), created=created)
            yield SIG_PATH, [*COMMON_HEADERS, *signed]

    def write_wrk(self, path: Path, n: int) -> Path:
        """The wrk file: a reusable request first, then ``n`` once-only requests, one a line (see the module doc)."""
        with path.open("w") as f:
            for p, headers in [(JWT_PATH, self._jwt_headers()), *self.requests(n)]:
                fields = [p, *(f"{name}: {value}" for name, value in headers)]
                if any("\t" in x or "\n" in x for x in fields):
                    raise ValueError(f"a request field holds a tab or a newline: {fields!r}")
                f.write("\t".join(fields) + "\n")
        return path

    def write_k6(self, path: Path, n: int) -> Path:
        """The k6 file: a JSON list of ``n`` requests, ``{"path": ..., "headers": {...}}``."""
        reqs = [{"path": p, "headers": dict(h)} for p, h in self.requests(n)]
        path.write_text(json.dumps(reqs, separators=(",", ":")))
        return path

    def wait_until_valid(self) -> None:
        """Sleep until the signatures made so far may be accepted (``created`` at most ``clock_skew`` ahead).

        Signing takes seconds, so this usually returns at once.
        """
        start = self.first_created - CLOCK_SKEW_S + 0.2
        while (now := time.time()) < start:
            time.sleep(min(0.1, start - now))


#: each line of the file once, each wrk thread its own lines (line k goes to thread k mod threads);
#: a thread that ran out stops, and done() reports it (wrk then divides by the whole duration: the
#: bench refuses such a run). Arguments after the URL: the file, the number of threads.
WRK_SCRIPT = """\
-- bench/precomputed.py: send every request of a precomputed file once
local threads = {}

function setup(thread)
  thread:set("index", #threads)
  table.insert(threads, thread)
end

local function parse(line)
  local path, headers = nil, {}
  for field in line:gmatch("[^\\t]+") do
    if path == nil then
      path = field
    else
      local name, value = field:match("^([^:]+): (.*)$")
      headers[name] = value
    end
  end
  return wrk.format("GET", path, headers)
end

function init(args)
  local file, nthreads = args[1], tonumber(args[2])
  reqs, sent, ran_out = {}, 0, 0
  local k = -1
  for line in io.lines(file) do
    if k < 0 then
      spare = parse(line)
    elseif k % nthreads == index then
      reqs[#reqs + 1] = parse(line)
    end
    k = k + 1
  end
  total = #reqs
end

function request()
  if sent >= total then
    if ran_out == 0 then
      wrk.thread:stop()
    end
    ran_out = ran_out + 1
    return spare
  end
  sent = sent + 1
  return reqs[sent]
end

function done(summary, latency, requests)
  local sent_all, total_all, out = 0, 0, 0
  for _, t in ipairs(threads) do
    sent_all = sent_all + t:get("sent")
    total_all = total_all + t:get("total")
    if t:get("ran_out") > 0 then
      out = out + 1
    end
  end
  io.write(string.format("precomputed: %d of %d sent, %d threads ran out\\n", sent_all, total_all, out))
end
"""


def write_wrk_script(workdir: Path) -> Path:
    path = workdir / "precomputed.lua"
    path.write_text(WRK_SCRIPT)
    return path
