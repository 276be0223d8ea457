"""How large each stored record and message may be, derived from the server's ``max_payload``.

Every KV document and every stream message is one NATS message, so none may exceed the
server's ``max_payload`` (1 MiB by default; ``stellwerk dev`` and the tests run 8 MiB). A write
beyond it is refused by the client (``MaxPayloadError``) — as "unavailable", which invites a
retry that can never succeed. So sizes are checked where they enter, against these figures:

* a **task result** travels inline (in its outcome event and its task document) up to
  :attr:`Limits.result` bytes (JSON): half the message limit, at most :data:`MAX_RESULT`. A
  larger one, up to ``STELLWERK_MAX_RESULT_BYTES`` (default :data:`DEFAULT_MAX_RESULT_BYTES`),
  is stored in chunks (``core/blobs.py``) and referenced; beyond that cap it fails its task
  (:func:`result_over_cap`);
* a **task document as submitted** (definition: params, metadata, ids, dependents, ...) must
  leave room for its largest result plus :data:`BOOKKEEPING` (error, executor id, times);
* the **run header** as submitted must leave :data:`BOOKKEEPING` for its request id and error;
* the **order list** and every **dispatch** must fit in one message.

Errors are clipped to :data:`MAX_ERROR_CHARS` wherever they are recorded, so the bookkeeping
room is a real bound and a failure can never make its own document unwritable.
"""

from __future__ import annotations

from dataclasses import dataclass

from stellwerk.core.errors import StellwerkError
from stellwerk_client.wire import GRPC_MAX_MESSAGE_BYTES  # shared with the client

__all__ = [
    "BOOKKEEPING",
    "DEFAULT_MAX_RESULT_BYTES",
    "GRPC_MAX_MESSAGE_BYTES",
    "HEADROOM",
    "MAX_ERROR_CHARS",
    "MAX_EXECUTOR_ID_CHARS",
    "MAX_RESULT",
    "Limits",
    "TooLargeError",
    "clip_error",
    "result_over_cap",
    "result_too_large",
]


HEADROOM = 1024
"""Bytes of each message kept for the headers that travel with it (``Nats-Msg-Id``, the
expected last sequence of a compare-and-set): ``max_payload`` counts headers too."""

BOOKKEEPING = 16 * 1024
"""Bytes a document may grow by after submit, besides the result: an error of at most
:data:`MAX_ERROR_CHARS` (<= 12,002 bytes as JSON even if every character is escaped), an
executor id of at most :data:`MAX_EXECUTOR_ID_CHARS`, a request id of at most 256 characters
(run header), states, counters and times."""

MAX_RESULT = 512 * 1024
"""Largest task result (JSON bytes) on servers whose ``max_payload`` would allow more."""

DEFAULT_MAX_RESULT_BYTES = 32 * 1024 * 1024
"""Default cap on a task result (and on a dependent's substituted parameters), in bytes of
JSON, beyond which the task fails (``STELLWERK_MAX_RESULT_BYTES``). Half of gRPC's 64 MiB
message limit, so ``GetRun`` can still return such a result inline."""

MAX_ERROR_CHARS = 2000
MAX_EXECUTOR_ID_CHARS = 200


class TooLargeError(StellwerkError):
    """A document or message would exceed what the server stores in one message."""


def clip_error(text: str) -> str:
    """``text`` cut to :data:`MAX_ERROR_CHARS` (an error must not grow with what caused it),
    lone surrogates escaped (an exception's text may hold them; protobuf and JSON refuse them)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) <= MAX_ERROR_CHARS:
        return text
    return f"{text[: MAX_ERROR_CHARS - 40]}... ({len(text):,} characters in all)"


def result_too_large(size: int, limit: int) -> str:
    """The error of a task whose result exceeds ``limit``."""
    return (
        f"the result is {size:,} bytes; this deployment stores at most {limit:,} bytes per "
        "task result"
    )


def result_over_cap(size: int, cap: int) -> str:
    """The error of a task whose result exceeds the deployment's cap on stored results."""
    return (
        f"the result is {size:,} bytes; this deployment stores at most {cap:,} bytes per "
        "task result (STELLWERK_MAX_RESULT_BYTES)"
    )


@dataclass(frozen=True, slots=True)
class Limits:
    """The size limits of one deployment (see the module docstring)."""

    max_payload: int
    """The server's ``max_payload`` (``nc.max_payload``)."""

    @property
    def message(self) -> int:
        """Largest KV document or stream message: order list, dispatch, any record."""
        return self.max_payload - HEADROOM

    @property
    def result(self) -> int:
        """Largest task result, in bytes of JSON."""
        return min(MAX_RESULT, self.message // 2)

    @property
    def task_definition(self) -> int:
        """Largest task document as a submit writes it (without result and bookkeeping)."""
        return self.message - self.result - BOOKKEEPING

    @property
    def run_header(self) -> int:
        """Largest run header as a submit writes it (without request id and error)."""
        return self.message - BOOKKEEPING
