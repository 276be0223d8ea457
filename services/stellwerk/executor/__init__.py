"""The executor service: runs task attempts dispatched by the resolver."""

from stellwerk.executor._service import Executor

__all__ = ["Executor"]
