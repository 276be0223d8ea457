"""The monitor: overview of workflows and executors, retention and (later) reconciliation."""

from stellwerk.monitor._service import Monitor

__all__ = ["Monitor"]
