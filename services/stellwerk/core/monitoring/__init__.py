"""Looking at the installation as a whole: the overview, the health checks and the
``MonitorService`` that serves them (from the monitor, and from the resolver as well)."""

from __future__ import annotations

from ._health import Check, Health, Queue, StuckRun, assess
from ._overview import build_overview
from ._servicer import MonitorServicer, health_response

__all__ = [
    "Check",
    "Health",
    "MonitorServicer",
    "Queue",
    "StuckRun",
    "assess",
    "build_overview",
    "health_response",
]
