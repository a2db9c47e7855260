"""Hostile signatures: algorithm confusion, key confusion, header-name tricks,
duplicate labels, oversized inputs, stale and future-dated signatures.
Each one is refused with a reason code, never a crash."""

from __future__ import annotations

import base64
import hashlib
import hmac
import pathlib

import pytest
from cryptography.hazmat.primitives import serialization

from authz.httpsig import sign
from tests.unit.test_signature_profile import NOW, Harness, Keys, keys, write_policy  # noqa: F401 (keys: fixture)

URL = "http://api.example.com/signed/items"


@pytest.fixture
def h(tmp_path: pathlib.Path, keys: Keys) -> Harness:
    return Harness(write_policy(tmp_path, keys), keys)


def _replace(headers: list[tuple[str, str]], name: str, old: str, new: str) -> list[tuple[str, str]]:
    return [(n, v.replace(old, new) if n == name else v) for n, v in headers]


async def test_alg_parameter_cannot_choose_the_algorithm(h: Harness) -> None:
    headers = h.signed(URL, "ed", include_alg=True)
    for alg in ("hmac-sha256", "rsa-v1_5-sha256", "none", "ED25519"):
        d = await h.decide(URL, _replace(headers, "Signature-Input", 'alg="ed25519"', f'alg="{alg}"'))
        assert d.reason == "sig.alg_mismatch", alg
    assert (await h.decide(URL, headers)).reason == "ok"


async def test_public_key_used_as_hmac_secret_is_refused(h: Harness, keys: Keys) -> None:
    """The classic confusion: HMAC over the base with the server's public key bytes as the secret."""
    good = h.signed(URL, "ed", nonce="n1")
    si = dict(good)["Signature-Input"]
    base = f'"@method": GET\n"@target-uri": {URL}\n"@signature-params": {si.split("=", 1)[1]}'.encode()
    for kid in ("ed", "pss"):
        pub = keys.private[kid].public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        forged = base64.b64encode(hmac.new(pub, base.replace(b'"ed"', f'"{kid}"'.encode()), hashlib.sha256).digest()).decode()
        headers = [("Signature-Input", si.replace('keyid="ed"', f'keyid="{kid}";alg="hmac-sha256"')), ("Signature", f"sig1=:{forged}:")]
        assert (await h.decide(URL, headers)).reason == "sig.alg_mismatch"
        headers[0] = ("Signature-Input", si.replace('keyid="ed"', f'keyid="{kid}"'))
        assert (await h.decide(URL, headers)).reason == "sig.bad_signature"


async def test_hmac_key_cannot_verify_an_asymmetric_signature_or_the_reverse(h: Harness, keys: Keys) -> None:
    ed_headers = h.signed(URL, "ed")
    as_hmac = _replace(ed_headers, "Signature-Input", 'keyid="ed"', 'keyid="hmac"')
    assert (await h.decide(URL, as_hmac)).reason == "sig.bad_signature"
    hmac_headers = h.signed(URL, "hmac")
    as_ed = _replace(hmac_headers, "Signature-Input", 'keyid="hmac"', 'keyid="ed"')
    assert (await h.decide(URL, as_ed)).reason == "sig.bad_signature"


async def test_upper_case_component_names_are_refused(h: Harness) -> None:
    headers = h.signed(URL, "ed", headers=[("X-Api", "1")], components=["@method", "@target-uri", "x-api"])
    tricked = _replace(headers, "Signature-Input", '"x-api"', '"X-Api"')
    assert (await h.decide(URL, tricked)).reason == "sig.malformed"
    # a covered field sent under a different case is the same field (names are case-insensitive)
    assert (await h.decide(URL, [("X-API", "1") if n == "X-Api" else (n, v) for n, v in headers])).reason == "ok"


async def test_duplicate_labels_are_refused(h: Harness) -> None:
    a = dict(h.signed(URL, "ed", nonce="a"))
    b = dict(h.signed(URL.replace("items", "other"), "ed", nonce="b"))
    both_inputs = [("Signature-Input", a["Signature-Input"]), ("Signature-Input", b["Signature-Input"]), ("Signature", a["Signature"])]
    assert (await h.decide(URL, both_inputs)).reason == "sig.malformed"
    both_sigs = [("Signature-Input", a["Signature-Input"]), ("Signature", b["Signature"]), ("Signature", a["Signature"])]
    assert (await h.decide(URL, both_sigs)).reason == "sig.malformed"


@pytest.mark.parametrize(
    ("sig_input", "signature"),
    [
        ('sig1=("@method" "@method");created=1;keyid="ed";nonce="x"', "sig1=:AAAA:"),
        ('sig1=("@method" "@signature-params");keyid="ed"', "sig1=:AAAA:"),
        ('sig1=("@method");created="1";keyid="ed"', "sig1=:AAAA:"),
        ('sig1=("@method");created=?1;keyid="ed"', "sig1=:AAAA:"),
        ('sig1=("@method");keyid=ed', "sig1=:AAAA:"),
        ('sig1=("@method");created=1;expires=0;keyid="ed"', "sig1=:AAAA:"),
        ('sig1="@method";keyid="ed"', "sig1=:AAAA:"),
        ('sig1=("@method");keyid="ed"', 'sig1="AAAA"'),
        ('sig1=("@method");keyid="ed"', "sig1=:not base64!:"),
        ('sig1=("@method" "x";bs;sf);keyid="ed"', "sig1=:AAAA:"),
        ('sig1=("@method" "x";unknown);keyid="ed"', "sig1=:AAAA:"),
        ('sig1=("@bogus");keyid="ed"', "sig1=:AAAA:"),
        ("sig1=(", "sig1=:AAAA:"),
        ("\x00", "\x00"),
        ("sig1=(\"@method\");keyid=\"é\"", "sig1=:AAAA:"),
        (", ".join(f'l{i}=("@method");keyid="ed"' for i in range(9)), "l0=:AAAA:"),
        ('sig1=(' + " ".join(f'"h{i}"' for i in range(33)) + ');keyid="ed"', "sig1=:AAAA:"),
        ('sig1=("@method");keyid="' + "k" * 300 + '"', "sig1=:AAAA:"),
        ('sig1=("@method");keyid="ed"', "sig1=:" + "A" * 9000 + ":"),
    ],
)
async def test_malformed_and_oversized_inputs_are_refused(h: Harness, sig_input: str, signature: str) -> None:
    d = await h.decide(URL, [("Signature-Input", sig_input), ("Signature", signature)])
    assert (d.reason, d.status) == ("sig.malformed", 401), d.signals


async def test_signature_input_without_signature_is_malformed(h: Harness) -> None:
    headers = h.signed(URL)
    assert (await h.decide(URL, [headers[0]])).reason == "sig.malformed"
    assert (await h.decide(URL, [headers[1]])).reason == "sig.malformed"


async def test_stale_and_future_signatures(h: Harness) -> None:
    assert (await h.decide(URL, h.signed(URL, created=NOW - 3600))).reason == "sig.too_old"
    assert (await h.decide(URL, h.signed(URL, created=NOW + 3600))).reason == "sig.created_in_future"
    assert (await h.decide(URL, h.signed(URL, created=0))).reason == "sig.too_old"
    far = h.signed(URL, created=NOW - 10, expires=NOW - 6)
    assert (await h.decide(URL, far)).reason == "sig.expired"
    assert (await h.decide(URL, h.signed(URL, created=NOW, nonce=False))).reason == "sig.nonce_missing"


async def test_unknown_revoked_or_missing_keyid(h: Harness, keys: Keys) -> None:
    headers = h.signed(URL, "ed")
    for new in ('keyid="nobody"', 'keyid="kong512"', ""):
        d = await h.decide(URL, _replace(headers, "Signature-Input", ';keyid="ed"', f";{new}" if new else ""))
        assert d.reason == "sig.unknown_key", new


async def test_bad_content_digest_forms(h: Harness) -> None:
    for digest in ("sha-256=:AAAA:", "md5=:1B2M2Y8AsgTpgAmY7PhCfg==:", "sha-256=abc", "garbage,,"):
        headers = h.signed(URL, method="POST", headers=[("Content-Digest", digest), ("Content-Length", "1")],
                           components=["@method", "@target-uri", "content-digest"])  # fmt: skip
        assert (await h.decide(URL, headers, "POST")).reason == "sig.bad_content_digest", digest


async def test_query_param_repeated_cannot_be_covered_by_name(h: Harness) -> None:
    url = URL + "?id=1"
    headers = h.signed(url, components=["@method", "@target-uri", '"@query-param";name="id"'])
    assert (await h.decide(url, headers)).reason == "ok"
    # the signature is replayed with a second id= appended: the component is now ambiguous
    d = await h.decide(url + "&id=2", headers)
    assert d.reason == "sig.malformed"


def test_verify_never_raises_on_garbage_keys_or_signatures() -> None:
    from authz.httpsig import verify

    for alg in ("hmac-sha256", "ed25519", "ecdsa-p256-sha256", "ecdsa-p384-sha384", "rsa-pss-sha512", "rsa-v1_5-sha256", "nope"):
        for key in (b"", b"x" * 32, None, object()):
            for sig in (b"", b"\x00" * 64, b"\xff" * 512):
                assert verify(alg, key, b"base", sig) is False
    with pytest.raises(ValueError):
        sign("nope", b"x" * 32, b"base")
