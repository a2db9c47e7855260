"""RFC 9421's own examples: bases byte for byte, deterministic signatures byte for byte.

Every request example in tests/vectors/rfc9421 is checked twice: from the
message's separate field lines (an HTTP/1.1 parser's view) and from the
decision server's normalized request (lines joined with ", ", as the gRPC
adapter builds it from Envoy's header_map).
"""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest

from authz.httpsig import (
    Message,
    SignatureError,
    component_value,
    parse_component,
    parse_signature,
    parse_signature_input,
    sign,
    signature_base,
    verify,
)
from authz.httpsig.base import build_params
from authz.httpsig.digest import body_matches
from authz.httpsig.sfv import parse_item
from authz.stages.authenticate.signature import message_of
from tests.vectors.rfc9421 import load

REQUEST_CASES = load.request_cases()
B4 = {k: v for k, v in load.messages().items() if k.startswith("B.4-")}


def test_the_vectors_hold_every_request_example() -> None:
    # 9 signed requests (sec 2.4, 2.5/3.2, 4.3 x2, B.2.1-B.2.3, B.2.5, B.2.6, B.3, B.4) and 6 B.4 variants
    assert len(REQUEST_CASES) == 11
    assert len(B4) == 6


def _base_and_sig(case: dict[str, Any], msg: Message) -> tuple[bytes, bytes, str]:
    raw = load.messages()[case["target_message"]]
    headers = {n.lower(): v for n, v in raw["headers"]}
    inputs = parse_signature_input(headers["signature-input"])
    sigs = parse_signature(headers["signature"])
    # sec 4.3's proxy request carries two signatures; the case names which
    label = case["label"] if case["label"] in inputs else case["signature_input_header"].split("=", 1)[0]
    si = inputs[label]
    assert si.keyid == case["keyid"]
    return signature_base(msg, si), sigs[label], label


@pytest.mark.parametrize("case", REQUEST_CASES, ids=lambda c: c["id"])
@pytest.mark.parametrize("view", ["field-lines", "normalized-request"])
def test_signature_base_is_byte_for_byte(case: dict[str, Any], view: str) -> None:
    raw = load.messages()[case["target_message"]]
    msg = load.message(raw) if view == "field-lines" else message_of(load.request(raw))
    base, signature, _ = _base_and_sig(case, msg)
    assert base == case["signature_base"].encode()
    assert base64.b64encode(signature).decode() == case["signature_b64"]


@pytest.mark.parametrize("case", REQUEST_CASES, ids=lambda c: c["id"])
def test_signature_verifies_with_the_rfc_key(case: dict[str, Any]) -> None:
    msg = load.message(load.messages()[case["target_message"]])
    base, signature, _ = _base_and_sig(case, msg)
    assert verify(case["algorithm"], load.public_key(case["keyid"]), base, signature)
    # one flipped bit in the base or the signature fails
    assert not verify(case["algorithm"], load.public_key(case["keyid"]), base + b" ", signature)
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    assert not verify(case["algorithm"], load.public_key(case["keyid"]), base, flipped)


@pytest.mark.parametrize("case", [c for c in REQUEST_CASES if c["deterministic"]], ids=lambda c: c["id"])
def test_deterministic_signatures_reproduce_byte_for_byte(case: dict[str, Any]) -> None:
    assert case["algorithm"] in ("hmac-sha256", "ed25519", "rsa-v1_5-sha256")
    produced = sign(case["algorithm"], load.private_key(case["keyid"]), case["signature_base"].encode())
    assert base64.b64encode(produced).decode() == case["signature_b64"]


@pytest.mark.parametrize("case", [c for c in REQUEST_CASES if not c["deterministic"]], ids=lambda c: c["id"])
def test_randomized_algorithms_sign_what_verifies(case: dict[str, Any]) -> None:
    base = case["signature_base"].encode()
    produced = sign(case["algorithm"], load.private_key(case["keyid"]), base)
    assert verify(case["algorithm"], load.public_key(case["keyid"]), base, produced)


def test_every_algorithm_is_exercised() -> None:
    algs = {c["algorithm"] for c in REQUEST_CASES}
    assert {"hmac-sha256", "ed25519", "ecdsa-p256-sha256", "rsa-pss-sha512", "rsa-v1_5-sha256"} <= algs


@pytest.mark.parametrize("name", sorted(B4))
@pytest.mark.parametrize("view", ["field-lines", "normalized-request"])
def test_b4_transformations_verify_or_fail_as_the_rfc_says(name: str, view: str) -> None:
    raw = B4[name]
    msg = load.message(raw) if view == "field-lines" else message_of(load.request(raw))
    headers = {n.lower(): v for n, v in raw["headers"]}
    si = parse_signature_input(headers["signature-input"])["transform"]
    sig = parse_signature(headers["signature"])["transform"]
    ok = verify("ed25519", load.public_key(si.keyid or ""), signature_base(msg, si), sig)
    assert ok is raw["rfc_says_signature_valid"]


def test_content_digests_of_the_examples_match_their_bodies() -> None:
    raw = load.messages()["test-request"]
    value = dict((n.lower(), v) for n, v in raw["headers"])["content-digest"]
    assert body_matches(value, raw["body"].encode())
    assert not body_matches(value, raw["body"].encode() + b" ")


# -- component examples (RFC 9421 sections 2.1-2.3) ---------------------------

_LINE = re.compile(r'^("[^"]*"(?:;[a-z*][a-z0-9_.*-]*(?:=(?:"[^"]*"|[^;:\s]+))?)*): (.*)$', re.S)


def _fragment(example: dict[str, Any]) -> Message:
    """A message from an example's fragment: an optional request line, then field lines."""
    text = example.get("message_fragment", "")
    method, target, scheme = "GET", "/", "https"
    lines = text.split("\n") if text else []
    if lines and re.match(r"^[A-Z]+ \S+ HTTP/1\.1$", lines[0]):
        method, target, _ = lines.pop(0).split(" ")
    fields: dict[str, list[str]] = {}
    last = ""
    for line in lines:
        if line[:1] in (" ", "\t") and last:
            fields[last][-1] += "\n" + line  # obs-fold, normalized by the library
            continue
        name, _, value = line.partition(":")
        last = name.lower()
        fields.setdefault(last, []).append(value)
    host = fields.get("host", ["www.example.com"])[0].strip()
    request_target = None
    if target.startswith("https://"):
        request_target, target = target, "/" + target.split("/", 3)[3]
    elif not target.startswith("/"):
        request_target, target = target, "/"
    path, sep, query = target.partition("?")
    if example["id"] == "derived-scheme":
        scheme = "http"
    return Message(
        method=method,
        scheme=scheme,
        authority=host,
        path=path,
        query=query,
        has_query=bool(sep),
        fields={n: ", ".join(v) for n, v in fields.items()},
        field_lines=fields,
        request_target=request_target,
    )


REQUEST_EXAMPLES = [
    e
    for e in load.data("component_examples")["examples"]
    if e["expected_signature_base_lines"][0].startswith('"')
    and not e["message_fragment" if "message_fragment" in e else "id"].startswith("HTTP/")
    and e["id"] != "signature-params-serialization"
]


def test_component_examples_cover_every_request_component() -> None:
    ids = {e["id"] for e in REQUEST_EXAMPLES}
    assert {"fields-basic", "field-sf", "field-dict-key", "field-bs-multi", "derived-query-param-encoding"} <= ids
    assert len(REQUEST_EXAMPLES) == 21


@pytest.mark.parametrize("example", REQUEST_EXAMPLES, ids=lambda e: e["id"])
def test_component_values_match_the_rfc(example: dict[str, Any]) -> None:
    msg = _fragment(example)
    for line in example["expected_signature_base_lines"]:
        m = _LINE.match(line)
        assert m, line
        comp = parse_component(parse_item(m.group(1), "identifier"))
        assert comp.text == m.group(1)
        assert component_value(msg, comp) == m.group(2), line


def test_signature_params_serialize_as_the_rfc_prints_them() -> None:
    inner = build_params(
        ["@target-uri", "@authority", "date", "cache-control"],
        [("keyid", "test-key-rsa-pss"), ("alg", "rsa-pss-sha512"), ("created", 1618884475), ("expires", 1618884775)],
    )
    (expected,) = next(e for e in load.data("component_examples")["examples"] if e["id"] == "signature-params-serialization")[
        "expected_signature_base_lines"
    ]
    assert str(inner) == expected


def test_response_only_components_are_refused_in_requests() -> None:
    for text in ('"@status"', '"content-type";req', '"expires";tr', '"@method";req'):
        with pytest.raises(SignatureError) as err:
            parse_component(parse_item(text, "identifier"))
        assert err.value.code == "unsupported"
