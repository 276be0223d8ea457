"""OpenTelemetry for the client's channel, when the application traces.

The client sets up no tracing of its own (a library must not): when the application installed a
tracer provider (``opentelemetry.trace.set_tracer_provider``) and
``opentelemetry-instrumentation-grpc`` is installed, every call gets a client span and sends its
W3C trace context to the server, so a run submitted inside the application's span belongs to the
application's trace. Otherwise nothing is added to the channel.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["client_interceptors"]


def client_interceptors() -> list[Any]:
    """``grpc.aio`` client interceptors for the application's tracer provider, or none."""
    if "opentelemetry.trace" not in sys.modules:
        return []  # nothing here set up tracing
    try:
        from opentelemetry import trace
        from opentelemetry.instrumentation.grpc import aio_client_interceptors
    except ImportError:
        return []
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return []
    return list(aio_client_interceptors(tracer_provider=provider))  # type: ignore[no-untyped-call]
