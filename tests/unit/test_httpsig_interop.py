"""Interop with the independent ``http-message-signatures`` library, both ways.

Their signer's headers pass our engine; our signer's headers pass their
verifier; for every algorithm both sides share, over the same components.
"""

from __future__ import annotations

import datetime
import pathlib
from typing import Any

import pytest
from http_message_signatures import HTTPMessageSigner, HTTPMessageVerifier, InvalidSignature, algorithms
from http_message_signatures.resolvers import MappingKeyResolver

from authz.httpsig import sign_request
from tests.unit.test_signature_profile import NOW, Harness, Keys, keys, write_policy  # noqa: F401 (keys: fixture)

ALGS = {
    "ed": algorithms.ED25519,
    "p256": algorithms.ECDSA_P256_SHA256,
    "p384": algorithms.ECDSA_P384_SHA384,
    "pss": algorithms.RSA_PSS_SHA512,
    "v15": algorithms.RSA_V1_5_SHA256,
    "hmac": algorithms.HMAC_SHA256,
}
URL = "https://api.example.com/signed/items?page=2&q=a%20b"
COMPONENTS = ("@method", "@target-uri", "@authority", "@path", "@query", '"@query-param";name="page"', "content-type", "x-list")


class Msg:
    """The request shape their resolver reads: method, absolute url, headers."""

    def __init__(self, method: str, url: str, headers: dict[str, str]) -> None:
        self.method = method
        self.url = url
        self.headers = headers


def _resolver(keys: Keys, kid: str) -> MappingKeyResolver:
    priv = keys.private[kid]
    pub = priv if isinstance(priv, bytes) else priv.public_key()
    return MappingKeyResolver(public_keys={kid: pub}, private_keys={kid: priv})


@pytest.mark.parametrize("kid", sorted(ALGS))
async def test_their_signature_passes_our_engine(tmp_path: pathlib.Path, keys: Keys, kid: str) -> None:
    h = Harness(write_policy(tmp_path, keys), keys)
    msg = Msg("POST", URL, {"Content-Type": "application/json", "X-List": "a, b"})
    signer = HTTPMessageSigner(signature_algorithm=ALGS[kid], key_resolver=_resolver(keys, kid))
    created = datetime.datetime.fromtimestamp(NOW, datetime.UTC)
    signer.sign(msg, key_id=kid, created=created, nonce="n-" + kid, label="sig1", covered_component_ids=COMPONENTS, body=b'{"a": 1}')
    assert "alg=" in msg.headers["Signature-Input"]  # their default: the alg parameter, which must match the key
    headers = [*msg.headers.items(), ("Content-Length", "8")]
    d = await h.decide(URL, headers, "POST")
    assert (d.reason, d.identity.key_id) == ("ok", kid), d.signals
    tampered = [(n, v.replace("a, b", "a,b")) for n, v in headers]
    assert (await h.decide(URL, tampered, "POST")).reason == "sig.bad_signature"


@pytest.mark.parametrize("kid", sorted(ALGS))
def test_our_signature_passes_their_verifier(keys: Keys, kid: str) -> None:
    headers = {"Content-Type": "application/json", "X-List": "a, b"}
    added = sign_request("POST", URL, headers, key_id=kid, algorithm=keys.algorithm[kid], key=keys.private[kid],
                         components=COMPONENTS, tag="t", include_alg=True, body=b'{"a": 1}')  # fmt: skip
    msg = Msg("POST", URL, {**headers, **dict(added)})
    verifier = HTTPMessageVerifier(signature_algorithm=ALGS[kid], key_resolver=_resolver(keys, kid))
    (result,) = verifier.verify(msg, expect_tag="t", max_age=datetime.timedelta(minutes=5), body=b'{"a": 1}')
    assert result.parameters["keyid"] == kid
    covered: Any = result.covered_components
    assert '"content-digest"' in covered and '"@query-param";name="page"' in covered
    assert len(covered) == len(COMPONENTS) + 2  # + content-digest, + @signature-params
    msg.headers["X-List"] = "a,b"
    with pytest.raises(InvalidSignature):
        verifier.verify(msg, expect_tag="t", max_age=datetime.timedelta(minutes=5))
