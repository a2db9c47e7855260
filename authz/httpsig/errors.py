"""The one exception of the signature library, with a short machine-readable code.

Callers map ``code`` to their own vocabulary (the authenticate stage maps it to
``sig.<code>`` reason codes); ``detail`` is for logs and never contains key
material.
"""

from __future__ import annotations

#: the codes a ``SignatureError`` can carry
MALFORMED = "malformed"  # a field or parameter does not parse, or breaks an RFC 9421 rule
COMPONENT_MISSING = "component_missing"  # a covered component is absent from the message
BAD_CONTENT_DIGEST = "bad_content_digest"  # Content-Digest is absent or not well formed
UNSUPPORTED = "unsupported"  # a component or algorithm that does not apply here


class SignatureError(ValueError):
    """A signature could not be processed (not: a signature that did not verify)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
