"""Every stream, subject, consumer, bucket and key name Stellwerk uses — defined here only.

Task ids and method names are free text (unicode, spaces, dots) while NATS subjects and KV keys
are not, so they travel encoded as unpadded base64url tokens (``[A-Za-z0-9_-]``, valid in both).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from stellwerk_client.wire import is_run_id  # the client checks ids too

__all__ = [
    "BLOBS_STREAM",
    "BLOBS_SUBJECTS",
    "CHECKPOINTS_BUCKET",
    "CLAIMS_BUCKET",
    "CLAIMS_TTL",
    "DISPATCH_STREAM",
    "EVENTS_STREAM",
    "EVENT_FORMAT_VERSION",
    "EXECUTORS_BUCKET",
    "READABLE_FORMAT_VERSIONS",
    "RESOLVER_CONSUMER",
    "RUNS_BUCKET",
    "TASKS_BUCKET",
    "EventAddress",
    "blob_chunk_subject",
    "cancel_key",
    "checkpoint_key",
    "checkpoint_lookup",
    "checkpoint_part_key",
    "claim_key",
    "decode_token",
    "dispatch_consumer",
    "dispatch_filter",
    "dispatch_msg_id",
    "dispatch_subject",
    "encode_token",
    "event_msg_id",
    "event_subject",
    "finished_key",
    "idempotency_key",
    "is_checkpoint_id",
    "is_run_id",
    "order_key",
    "parse_event_subject",
    "request_key",
    "restart_key",
    "run_blobs_filter",
    "run_checkpoints_filter",
    "run_dispatches_filter",
    "run_events_filter",
    "run_key",
    "run_of_event_subject",
    "staging_key",
    "task_key",
    "task_prefix",
]

DISPATCH_STREAM = "STELLWERK_DISPATCH"
"""Work queue of task attempts; subjects by method, so executors get only what they run."""
DISPATCH_SUBJECTS = "stellwerk.dispatch.>"
EVENTS_STREAM = "STELLWERK_EVENTS"
"""Task outcomes, one subject per attempt holding at most one message: the first outcome of an
attempt is stored, later ones are refused (first result wins, decided by JetStream). Kept until
the janitor removes the run."""
_EVENTS_PREFIX = "stellwerk.events."
EVENTS_SUBJECTS = f"{_EVENTS_PREFIX}>"
RESOLVER_CONSUMER = "resolver"
BLOBS_STREAM = "STELLWERK_BLOBS"
"""Large results and parameters (beyond one message), in chunks: one subject per chunk, named
by run, kind, task, attempt and the text's SHA-256 (``core/blobs.py``). Kept until the janitor
removes the run."""
BLOBS_SUBJECTS = "stellwerk.blobs.>"

EVENT_FORMAT_VERSION = 2
"""``format_version`` of the messages this code publishes on the streams (``TaskDispatch``,
``TaskEvent``). 2 named the run ``run_id``; 1 called the same field (same number, same type)
``workflow_id``, so a version-1 message still reads correctly."""
READABLE_FORMAT_VERSIONS = frozenset({1, 2})
"""Versions a receiver accepts: messages still in the streams across an upgrade keep working."""

RUNS_BUCKET = "stellwerk-runs"
"""Run headers (the commit point of a submit), task order, request ids, finished index."""
TASKS_BUCKET = "stellwerk-tasks"
"""One document per task of a run: its definition, state, attempt and result."""
EXECUTORS_BUCKET = "stellwerk-executors"
CLAIMS_BUCKET = "stellwerk-claims"
"""Who holds the claim on a long-running attempt: written by the executor with each heartbeat
(every lease/3, so attempts shorter than that never write one), read by ``ExplainRun`` only."""
CLAIMS_TTL = 24 * 3600.0
"""Claim records expire by themselves: nothing has to remove a dead executor's."""
"""One registration per executor: its methods and when it was last seen."""


def encode_token(text: str) -> str:
    """Encode free text as a subject/key-safe token (reversible)."""
    return base64.urlsafe_b64encode(text.encode("utf-8")).rstrip(b"=").decode("ascii")


def decode_token(token: str) -> str:
    """Inverse of :func:`encode_token`."""
    padded = token + "=" * (-len(token) % 4)
    return base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8")


def dispatch_subject(method: str, run_id: str, task_id: str) -> str:
    """Subject of a dispatch: by method (so executors get only what they run), then by task (so
    the reconciler can ask JetStream whether one task's dispatch is still waiting)."""
    return f"stellwerk.dispatch.{encode_token(method)}.{run_id}.{encode_token(task_id)}"


def dispatch_filter(method: str) -> str:
    """Filter of the consumer that carries every dispatch of ``method``."""
    return f"stellwerk.dispatch.{encode_token(method)}.>"


_MAX_CONSUMER_NAME = 255
"""nats-server refuses longer consumer names (error 10102)."""


def dispatch_consumer(method: str) -> str:
    """Durable consumer name shared by all executors that serve ``method``.

    Consumer names may not hold '.', '*', '>' or whitespace; the token has none of them. A
    method's token is 4/3 of its length, so methods beyond 184 characters (a method may have
    200) would make a name nats-server refuses: those are named by the SHA-256 of the method
    instead, ``h`` + 64 hex digits — 65 characters, a length no unpadded base64 token has
    (never 1 modulo 4), so it names no other method's consumer."""
    name = f"dispatch-{encode_token(method)}"
    if len(name) <= _MAX_CONSUMER_NAME:
        return name
    return f"dispatch-h{hashlib.sha256(method.encode()).hexdigest()}"


def event_subject(run_id: str, task_id: str, attempt: int) -> str:
    """Subject of the outcome of one attempt: the stream keeps only the first message on it."""
    return f"{_EVENTS_PREFIX}{run_id}.{encode_token(task_id)}.{attempt}"


def run_events_filter(run_id: str) -> str:
    """Every outcome subject of one run (for removing the run)."""
    return f"{_EVENTS_PREFIX}{run_id}.>"


def blob_chunk_subject(
    run_id: str, kind: str, task_id: str, attempt: int, sha256: str, index: int
) -> str:
    """Subject of chunk ``index`` of a stored text (``kind``: ``r`` result, ``p`` parameters):
    the same text of the same attempt always lands on the same subjects, another never does."""
    return f"stellwerk.blobs.{run_id}.{kind}.{encode_token(task_id)}.{attempt}.{sha256}.{index}"


def run_blobs_filter(run_id: str) -> str:
    """Every stored chunk of one run (for removing the run)."""
    return f"stellwerk.blobs.{run_id}.>"


@dataclass(frozen=True, slots=True)
class EventAddress:
    """The attempt an event subject names (what ``event_subject`` was given)."""

    run_id: str
    task_id: str
    attempt: int


def parse_event_subject(subject: str) -> EventAddress | None:
    """The attempt an event subject names, or ``None`` if it is not one ``event_subject``
    could have made (wrong prefix, token or attempt)."""
    if not subject.startswith(_EVENTS_PREFIX):
        return None
    parts = subject[len(_EVENTS_PREFIX) :].split(".")
    if len(parts) != 3 or not parts[0] or not parts[2].isdigit():
        return None
    try:
        task_id = decode_token(parts[1])
    except ValueError:
        return None
    attempt = int(parts[2])
    return EventAddress(parts[0], task_id, attempt) if attempt >= 1 else None


def run_of_event_subject(subject: str) -> str:
    """The run id inside an event subject (once per event: nothing else is decoded)."""
    return subject[len(_EVENTS_PREFIX) :].partition(".")[0]


def _attempt_id(kind: str, run_id: str, task_id: str, attempt: int, generation: int) -> str:
    return f"{kind}:{run_id}:{encode_token(task_id)}:{attempt}:{generation}"


def dispatch_msg_id(run_id: str, task_id: str, attempt: int, generation: int) -> str:
    """Deterministic ``Nats-Msg-Id`` of a dispatch, so a repeated publish is dropped."""
    return _attempt_id("d", run_id, task_id, attempt, generation)


def event_msg_id(run_id: str, task_id: str, attempt: int, generation: int) -> str:
    """Deterministic ``Nats-Msg-Id`` of a task outcome."""
    return _attempt_id("e", run_id, task_id, attempt, generation)


def idempotency_key(run_id: str, task_id: str, attempt: int) -> str:
    """Stable key for one attempt of one task, whatever crashes and re-runs happen."""
    digest = hashlib.sha256(f"{run_id}\x00{task_id}\x00{attempt}".encode()).hexdigest()
    return f"{run_id}-{digest[:24]}-{attempt}"


def run_key(run_id: str) -> str:
    """Run header key; its creation is the commit point of a submit."""
    return f"run.{run_id}"


def order_key(run_id: str) -> str:
    """Key holding the run's task ids in document order."""
    return f"order.{run_id}"


def staging_key(run_id: str) -> str:
    """Marker present while a submit is being written; a leftover one means a crashed submit."""
    return f"staging.{run_id}"


def request_key(request_id: str) -> str:
    """Key mapping a client's ``request_id`` to the run it created."""
    return f"req.{hashlib.sha256(request_id.encode('utf-8')).hexdigest()[:40]}"


def finished_key(end_epoch: int, run_id: str) -> str:
    """Index of finished runs by end time, read by the retention janitor."""
    return f"fin.{end_epoch}.{run_id}"


def cancel_key(run_id: str) -> str:
    """Marker of a cancelled run (``*`` for the watch's filter), written after the header's
    cancel; executors and resolvers watch these (``core/progress/_cancel.py``)."""
    return f"cancel.{run_id}"


def restart_key(run_id: str) -> str:
    """The intent of the run's latest restart (RetryRun, RestoreCheckpoint): its write commits
    the restart (``core/progress/_restart.py``)."""
    return f"restart.{run_id}"


def run_dispatches_filter(run_id: str) -> str:
    """Every dispatch subject of one run (purged when the run restarts)."""
    return f"stellwerk.dispatch.*.{run_id}.*"


CHECKPOINTS_BUCKET = "stellwerk-checkpoints"
"""Checkpoints of runs (``core/checkpoints.py``): a run's task documents in parts, then the
checkpoint's description, whose creation commits it."""


def is_checkpoint_id(checkpoint_id: str) -> bool:
    """Whether ``checkpoint_id`` has the shape of a checkpoint id (that of a run id)."""
    return is_run_id(checkpoint_id)


def checkpoint_key(run_id: str, checkpoint_id: str) -> str:
    """Key of a checkpoint's description (its creation commits the checkpoint)."""
    return f"{run_id}.{checkpoint_id}.meta"


def checkpoint_part_key(run_id: str, checkpoint_id: str, index: int) -> str:
    """Key of part ``index`` of a checkpoint's task documents."""
    return f"{run_id}.{checkpoint_id}.{index}"


def checkpoint_lookup(checkpoint_id: str) -> str:
    """Filter finding a checkpoint's description by its id alone."""
    return f"*.{checkpoint_id}.meta"


def run_checkpoints_filter(run_id: str) -> str:
    """Every key of every checkpoint of one run (for removing the run)."""
    return f"{run_id}.>"


def claim_key(run_id: str, task_id: str) -> str:
    """Key of a task's claim record in the claims bucket."""
    return f"{run_id}.{encode_token(task_id)}"


def task_key(run_id: str, task_id: str) -> str:
    """Key of one task document."""
    return f"{run_id}.{encode_token(task_id)}"


def task_prefix(run_id: str) -> str:
    """Filter matching every task document of a run."""
    return f"{run_id}.>"
