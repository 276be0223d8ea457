"""The monitor: overview of runs and executors, the reconciler (re-drives what a crash left
between two writes) and the janitor (retention)."""

from stellwerk.monitor._service import Monitor

__all__ = ["Monitor"]
