"""``kong_hmac``: the Kong ``hmac-auth`` plugin's request signatures, for moving off Kong.

Clients that sign ``Authorization: hmac username="...", algorithm="...",
headers="date request-line", signature="..."`` keep working unchanged: the
``username`` is a key id of the keyring, whose secret and algorithm decide
(``hmac-sha256`` or ``HS256`` keys verify ``hmac-sha256``; ``HS384`` and
``HS512`` keys verify ``hmac-sha384`` / ``hmac-sha512``; ``hmac-sha1`` is
refused). The ``X-Date`` (else ``Date``) header must be signed and within the
clock skew, as with Kong.

Secure by default, unlike Kong: the signature must cover the request line
and the date (Kong accepts a signature over ``date`` alone, which is good for
any method and path for the whole skew window); covering less is a policy
error unless ``insecure_partial_coverage: true`` says the operator means it.
The draft-cavage form has no nonce, so a captured request stays valid for
its window: ``single_use`` (the default) remembers each signature and refuses
a second use, at the cost of refusing two identical requests signed within
the same second (the Date has one-second resolution) and of refusing, for
``clock_skew`` after the replay store starts or loses its state, signatures
it cannot vouch for (docs/signatures.md).

Policy section, by example::

    kong_hmac:
      legacy:
        clock_skew: 300s                       # Kong's default
        enforce_headers: [date, request-line]  # must be signed (the default; more may be added)
        keys: [alice]                          # allowed usernames (default: every HMAC key)
        single_use: true                       # the default
        hide_credentials: false                # strip Authorization before the backend
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from authz.algorithms import KONG_NAMES
from authz.decision import Reason
from authz.httpsig import SignatureError, cavage
from authz.stages.authenticate import Authenticator, AuthResult
from authz.stages.authenticate.signature import (
    SIG_ALG_MISMATCH,
    SIG_BAD_SIGNATURE,
    SIG_COMPONENT_MISSING,
    SIG_CREATED_IN_FUTURE,
    SIG_CREATED_MISSING,
    SIG_EXPIRED,
    SIG_MALFORMED,
    SIG_REPLAY,
    SIG_REPLAY_UNVERIFIABLE,
    SIG_UNKNOWN_KEY,
    allowed_keys,
)
from authz.stages.context import Ctx
from authz.stages.replay import ReplayCheck
from authz.store.ops import ClaimOnce

if TYPE_CHECKING:
    from authz.config.context import CompileContext
    from authz.config.source import Node
    from authz.keys import Key, KeyRing
    from authz.request import Request

#: keyring algorithm -> the Kong algorithm name it verifies (the algorithm table's kong column)
KEY_ALGORITHMS = KONG_NAMES
MAX_AUTHORIZATION_BYTES = 4096
#: what a Kong signature must cover unless the policy says insecure_partial_coverage
SECURE_MINIMUM = ("date", "request-line")
_CODES = {"component_missing": SIG_COMPONENT_MISSING}


class KongHmac(Authenticator):
    kind = "kong_hmac"

    def __init__(
        self,
        name: str,
        keyring: KeyRing,
        *,
        skew_ms: int,
        enforce: tuple[str, ...],
        allowed_keys: frozenset[str] | None,
        single_use: bool,
        hide_credentials: bool,
    ) -> None:
        self.name = name
        self.keyring = keyring
        self.skew_ms = skew_ms
        self.enforce = enforce
        self.allowed_keys = allowed_keys
        self.single_use = single_use
        self.hide_credentials = hide_credentials
        self._challenge = f'hmac realm="{name}"'
        self._replay = ReplayCheck(
            replayed=SIG_REPLAY,
            unverifiable=SIG_REPLAY_UNVERIFIABLE,
            challenge=self._challenge,
            unverifiable_challenge=f'{self._challenge}, error_description="sign again"',
            hint="the replay store restarted after this signature's Date; sign the request again with a new Date",
        )

    def present(self, req: Request) -> bool:
        return req.headers.get("authorization", "")[:5].lower() == "hmac "

    def challenge(self) -> str:
        return self._challenge

    def _fail(self, reason: Reason, detail: str) -> AuthResult:
        return AuthResult(ok=False, reason=reason, challenge=self._challenge, signals=[("sig.problem", detail)])

    async def authenticate(self, req: Request, ctx: Ctx) -> AuthResult:
        value = req.headers.get("authorization", "")
        if len(value) > MAX_AUTHORIZATION_BYTES:
            return self._fail(SIG_MALFORMED, "Authorization too large")
        try:
            params = cavage.parse_authorization(value)
            names = cavage.signed_headers(params)
            return self._verify(req, ctx, params, names)
        except SignatureError as exc:
            return self._fail(_CODES.get(exc.code, SIG_MALFORMED), exc.detail)

    def _verify(self, req: Request, ctx: Ctx, params: dict[str, str], names: list[str]) -> AuthResult:
        key = self._key(params["username"], ctx.now_ms)
        if key is None:
            return self._fail(SIG_UNKNOWN_KEY, "username unknown or not usable")
        algorithm = KEY_ALGORITHMS[key.algorithm]
        if params["algorithm"].lower() != algorithm:
            return self._fail(SIG_ALG_MISMATCH, f"algorithm {params['algorithm']!r} but the key is {algorithm}")
        date_name = "x-date" if "x-date" in req.headers else "date"
        date_value = req.headers.get(date_name)
        if date_value is None:
            return self._fail(SIG_CREATED_MISSING, "a Date or X-Date header is required")
        if date_name not in names:
            return self._fail(SIG_COMPONENT_MISSING, f"{date_name} is not signed")
        for want in self.enforce:
            if want not in names and not (want in ("date", "x-date") and date_name in names):
                return self._fail(SIG_COMPONENT_MISSING, f"{want} is not signed")
        try:
            date_ms = int(parsedate_to_datetime(date_value).timestamp() * 1000)
        except (TypeError, ValueError, IndexError, OverflowError):
            return self._fail(SIG_MALFORMED, f"{date_name} is not an HTTP date")
        if date_ms > ctx.now_ms + self.skew_ms:
            return self._fail(SIG_CREATED_IN_FUTURE, f"{date_name} ahead of the clock")
        if ctx.now_ms - date_ms > self.skew_ms:
            return self._fail(SIG_EXPIRED, f"{date_name} older than the clock skew")
        text = cavage.signing_string(names, req.method, req.target, req.protocol, req.headers)
        if not cavage.matches(algorithm, key.material, text, params["signature"]):
            return self._fail(SIG_BAD_SIGNATURE, "signature does not verify")
        result = AuthResult(ok=True, subject=key.subject, key_id=key.id)
        if self.hide_credentials:
            result.remove_headers.append("authorization")
        if self.single_use:
            # dated from the earliest moment it could have been accepted (see signature.py)
            claim = ClaimOnce(claim=f"k:{key.id}:{params['signature']}", ttl_ms=2 * self.skew_ms + 1000, created_ms=date_ms - self.skew_ms)
            result.ops.append((claim, self._replay))
        return result

    def _key(self, key_id: str, now_ms: int) -> Key | None:
        if self.allowed_keys is not None and key_id not in self.allowed_keys:
            return None
        key = self.keyring.get(key_id)
        if key is None or key.algorithm not in KEY_ALGORITHMS or not key.usable(now_ms):
            return None
        return key


class _KongKind:
    kind = "kong_hmac"
    section = "kong_hmac"

    def compile(self, name: str, node: Node, cc: CompileContext[KeyRing]) -> Authenticator:
        node.keys(
            allowed={"clock_skew", "enforce_headers", "keys", "single_use", "hide_credentials", "insecure_partial_coverage"}
        )
        skew_ms = node.get("clock_skew", "300s").duration_ms(min_ms=1000)
        if skew_ms > 3_600_000:
            node.get("clock_skew").error("at most 1h")
        enforce_node = node.get("enforce_headers", list(SECURE_MINIMUM))
        enforce = tuple(dict.fromkeys(h.lower() for h in enforce_node.str_list()))
        partial = node.get("insecure_partial_coverage", False).bool()
        # the Date (or X-Date) is always required to be signed; the request line must be asked for
        if "request-line" not in enforce and not partial:
            enforce_node.error(
                "must include request-line: a signature over the date alone is valid for any method and path"
                " within the clock skew (set insecure_partial_coverage: true to accept that)"
            )
        allowed = allowed_keys(node, cc, KEY_ALGORITHMS, "an HMAC algorithm")
        return KongHmac(
            name,
            cc.keyring,
            skew_ms=skew_ms,
            enforce=enforce,
            allowed_keys=allowed,
            single_use=node.get("single_use", True).bool(),
            hide_credentials=node.get("hide_credentials", False).bool(),
        )


KIND = _KongKind()
