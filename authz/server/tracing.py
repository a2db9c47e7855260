"""OpenTelemetry spans per decision and per stage (``--otel``; the optional extra ``authz[otel]``).

Nothing is traced while a decision runs: the engine already times its stages
(``authz.stats`` laps, one ``perf_counter_ns`` per boundary), and when the
decision is made the tracer turns those times into spans after the fact:
``authz.check`` (kind SERVER) with one child per stage the decision reached
(``authz.route``, ``authz.identify``, ``authz.authenticate``, ``authz.plan``,
``authz.apply``, ``authz.judge``, ``authz.respond``). With tracing off the
cost is one ``is None`` test per decision.

The parent is the caller's: the W3C ``traceparent`` (and ``tracestate``)
header of the checked request, which Envoy forwards in the CheckRequest's
headers (and the HTTP door receives as a header). The SDK is configured by
the standard variables: ``OTEL_TRACES_EXPORTER`` (``otlp``, the default, over
HTTP to ``OTEL_EXPORTER_OTLP_ENDPOINT``; ``console``; ``none``),
``OTEL_SERVICE_NAME`` (default ``authz``), ``OTEL_TRACES_SAMPLER`` and
``OTEL_TRACES_SAMPLER_ARG``, ``OTEL_RESOURCE_ATTRIBUTES``. Spans are
exported in the SDK's background thread (BatchSpanProcessor).

Span attributes never hold a credential: the decision id, outcome, reason,
route, status, method, the policy version, and the client address.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from authz.decision import Decision
from authz.errors import ConfigError
from authz.request import Request
from authz.stats import STAGES, Laps

log = logging.getLogger("authz.tracing")

EXTRA = "pip install 'authz[otel]'"


def require_sdk() -> None:
    """:raises ConfigError: the OpenTelemetry SDK is not installed"""
    try:
        import opentelemetry.sdk.trace
        import opentelemetry.trace.propagation.tracecontext  # noqa: F401
    except ImportError:
        raise ConfigError("settings", 0, "otel", f"--otel needs the OpenTelemetry SDK, which is not installed: {EXTRA}") from None


def provider_from_env() -> Any:
    """A TracerProvider with the exporter that OTEL_TRACES_EXPORTER names (otlp by default)."""
    require_sdk()
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "authz")})
    provider = TracerProvider(resource=resource)
    for name in [n.strip() for n in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]:
        if name == "none":
            continue
        if name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif name == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError:
                raise ConfigError("settings", 0, "otel", f"OTEL_TRACES_EXPORTER=otlp needs the OTLP exporter: {EXTRA}") from None
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        else:
            raise ConfigError("settings", 0, "otel", f"OTEL_TRACES_EXPORTER={name} is not supported here (otlp, console, none)")
    return provider


class Tracer:
    """The engine's observer: spans for one decision, from its stage times, under the caller's trace."""

    def __init__(self, provider: Any) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self._trace = trace
        self._tracer = provider.get_tracer("authz")
        self._propagator = TraceContextTextMapPropagator()
        self._server = trace.SpanKind.SERVER
        # perf_counter_ns -> Unix ns, once (stage times are perf_counter readings)
        self._offset = time.time_ns() - time.perf_counter_ns()

    def __call__(self, req: Request, decision: Decision, laps: Laps) -> None:
        headers = req.headers
        carrier = {k: headers[k] for k in ("traceparent", "tracestate") if k in headers}
        parent = self._propagator.extract(carrier) if carrier else None
        off = self._offset
        end = max(laps)
        span = self._tracer.start_span(
            "authz.check", context=parent, kind=self._server, start_time=laps[0] + off,
            attributes={
                "authz.decision_id": decision.id, "authz.outcome": decision.outcome.value,
                "authz.reason": decision.reason.code, "authz.route": decision.route, "authz.door": decision.door,
                "authz.policy_version": decision.policy_version, "http.request.method": decision.method,
                "http.response.status_code": decision.status, "client.address": decision.identity.client_ip,
            },
        )  # fmt: skip
        inside = self._trace.set_span_in_context(span)
        prev = laps[0]
        for stage, name in enumerate(STAGES, 1):
            t = laps[stage]
            if t:
                child = self._tracer.start_span(f"authz.{name}", context=inside, start_time=prev + off)
                child.end(end_time=t + off)
                prev = t
        span.end(end_time=end + off)

    def shutdown(self) -> None:
        """Export what is pending (blocking: call it off the event loop)."""
        try:
            self.provider.shutdown()
        except Exception as exc:  # an exporter that fails at exit must not fail the shutdown
            log.warning("tracing shutdown: %s", type(exc).__name__)


__all__ = ["Tracer", "provider_from_env", "require_sdk"]
