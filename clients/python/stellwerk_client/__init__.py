"""Python client of Stellwerk: submit workflows, follow runs, look at executors and the monitor.

``stellwerk_client.cli`` is the ``stellwerk`` command line built on it.
"""

from __future__ import annotations

from ._channel import DEFAULT_TIMEOUT
from ._client import WATCH_SEGMENT, WorkflowClient
from ._health import HealthProbe, wait_for_health
from ._services import ExecutorClient, MonitorClient

__all__ = [
    "DEFAULT_TIMEOUT",
    "WATCH_SEGMENT",
    "ExecutorClient",
    "HealthProbe",
    "MonitorClient",
    "WorkflowClient",
    "wait_for_health",
]
