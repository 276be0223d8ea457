"""The one domain error tree of Stellwerk, re-exported from the client distribution.

It lives in ``stellwerk_client.errors`` (the client raises it and installs without the server);
services keep importing it from here. The tree and why it is shaped so: that module's docstring.
"""

from __future__ import annotations

from stellwerk_client.errors import (
    MAX_MESSAGE_CHARS,
    AlreadyExistsError,
    ConflictError,
    DeadlineExceededError,
    InvalidArgumentError,
    MalformedRequestError,
    NonRetryableError,
    NotFoundError,
    Problem,
    ReferenceResolutionError,
    StellwerkError,
    TaskError,
    UnavailableError,
    WorkflowInvalidError,
    WrongStateError,
    clip,
    shorten,
    summarise,
)

__all__ = [
    "MAX_MESSAGE_CHARS",
    "AlreadyExistsError",
    "ConflictError",
    "DeadlineExceededError",
    "InvalidArgumentError",
    "MalformedRequestError",
    "NonRetryableError",
    "NotFoundError",
    "Problem",
    "ReferenceResolutionError",
    "StellwerkError",
    "TaskError",
    "UnavailableError",
    "WorkflowInvalidError",
    "WrongStateError",
    "clip",
    "shorten",
    "summarise",
]
