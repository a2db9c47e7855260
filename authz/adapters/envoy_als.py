"""Envoy's access log service (ALS) -> the backend's answers, as reputation evidence.

An allowed request's decision leaves, in Envoy's dynamic metadata, its
feedback (``Decision.feedback``: the scored identities and flags). Envoy's
``envoy.access_loggers.http_grpc`` streams each finished request to authz's
``envoy.service.accesslog.v3.AccessLogService`` with that metadata and the
response code; an answer *from the backend* (``response_code_details`` is
``via_upstream``) in the 4xx range becomes evidence against those identities:
a 404 is path enumeration (``status.404``), another 4xx ``status.4xx``, and a
401/403 on a sensitive route a failed login. authz's own refusals are not
counted twice: they carry no feedback, and their details are ``ext_authz_*``.

Nothing is remembered between the check and the log entry, so the entry may
reach any authz process sharing the store.
"""

from __future__ import annotations

from typing import Any

#: the dynamic metadata namespace Envoy files ext_authz's metadata under
NAMESPACE = "envoy.filters.http.ext_authz"
#: Envoy's response code details when the backend answered (not a local reply)
VIA_UPSTREAM = "via_upstream"
#: more list items than a feedback tuple has is not ours
_MAX_ITEMS = 8


def backend_answer(entry: Any) -> tuple[tuple[str, ...], int] | None:
    """(feedback, status) of one ``HTTPAccessLogEntry``, or None when it is not evidence.

    Not evidence: no feedback of authz's (a route that does not score, a
    request authz refused), no response code, or a response that Envoy made
    itself (a timeout, a reset, a local reply): only the backend's answers say
    something about what the client asked for.
    """
    response = entry.response
    if response.response_code_details != VIA_UPSTREAM or not response.HasField("response_code"):
        return None
    filters = entry.common_properties.metadata.filter_metadata
    if NAMESPACE not in filters:
        return None
    field = filters[NAMESPACE].fields.get("feedback")
    if field is None or field.WhichOneof("kind") != "list_value":
        return None
    values = field.list_value.values
    if not 0 < len(values) <= _MAX_ITEMS:
        return None
    items = []
    for v in values:
        if v.WhichOneof("kind") != "string_value":
            return None
        items.append(v.string_value)
    return tuple(items), response.response_code.value


__all__ = ["NAMESPACE", "VIA_UPSTREAM", "backend_answer"]
