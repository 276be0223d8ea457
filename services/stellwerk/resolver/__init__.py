"""The resolver: accepts workflows over gRPC and dispatches tasks as their dependencies finish."""

from stellwerk.resolver._service import Resolver

__all__ = ["Resolver"]
