"""Texts too large for one NATS message — large task results and the parameters that carry
them — stored in chunks in the ``STELLWERK_BLOBS`` stream, referenced by a small
:class:`StoredText` (size, SHA-256, chunk size) in the messages and documents that would have
held them.

Why not nats-py's ``ObjectStore``: it writes an object's chunks under a random subject (a NUID)
and its metadata under the name, so a process killed between the two leaves chunks that nothing
can attribute to a run (no janitor could ever remove them), and a second ``put`` under the same
name replaces the first. Here every chunk's subject is derived from the run, the kind
(``r`` result, ``p`` parameters), the task, the attempt and the text's digest
(``names.blob_chunk_subject``), on a stream that keeps the last message per subject:

* storing the same text again (a re-run after a crash, a repeated dispatch) writes the same
  messages onto the same subjects — nothing grows, nothing is confused;
* a *different* text of the same attempt (a non-deterministic handler run twice) lands on other
  subjects, so it can never overwrite the text a committed outcome refers to;
* removing a run is one purge by subject (``names.run_blobs_filter``), leftovers included.

A text is stored *before* the message that refers to it is published, and that message (the
outcome event, the dispatch) is the commit: a reference in a committed message always finds its
chunks, unless it was forged or the run was removed. Readers check every chunk's size and the
digest, so a forged or damaged reference reads as an error naming it, never as other data.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass

import nats.js.errors as jserr
from nats.js import JetStreamContext

from stellwerk.core import names
from stellwerk.core.errors import NonRetryableError, UnavailableError
from stellwerk.core.publish import NATS_FAILURES, JetStreamWriter
from stellwerk_api.events.v1 import events_pb2

__all__ = [
    "CHUNK_BYTES",
    "PARAMS",
    "RESULT",
    "BlobKey",
    "BlobStore",
    "LargeResult",
    "StoredText",
]

CHUNK_BYTES = 512 * 1024
"""Largest chunk: half a default NATS message, so chunks fit any ``max_payload`` Stellwerk runs
on (``Limits`` keeps the message limit at 1 MiB or more), and a 5 MiB text is ten messages."""

RESULT = "r"
PARAMS = "p"

_SHA256 = re.compile(r"[0-9a-f]{64}")
_PARALLEL = 16  # chunks in flight at once per text: enough to fill loopback, bounded memory


@dataclass(frozen=True, slots=True)
class BlobKey:
    """Whose text it is: the attempt of a task that produced (result) or receives (params) it."""

    run_id: str
    kind: str
    task_id: str
    attempt: int

    def subject(self, sha256: str, index: int) -> str:
        """Subject of chunk ``index`` of the text with digest ``sha256``."""
        return names.blob_chunk_subject(
            self.run_id, self.kind, self.task_id, self.attempt, sha256, index
        )


@dataclass(frozen=True, slots=True)
class StoredText:
    """A reference to a stored JSON text: what messages and documents carry instead of it."""

    size: int
    sha256: str
    chunk_size: int

    @property
    def chunks(self) -> int:
        """Number of chunks the text is stored in."""
        return -(-self.size // self.chunk_size)

    def to_proto(self) -> events_pb2.StoredValue:
        """As the ``StoredValue`` message of the events contract."""
        return events_pb2.StoredValue(
            size=self.size, sha256=self.sha256, chunk_size=self.chunk_size
        )

    def to_record(self) -> dict[str, int | str]:
        """As stored in a task document (``TaskRecord.stored_result``)."""
        return {"size": self.size, "sha256": self.sha256, "chunk_size": self.chunk_size}

    @classmethod
    def from_proto(cls, value: events_pb2.StoredValue, *, max_size: int) -> StoredText:
        """A reference read from a message; ``ValueError`` naming what is wrong with it (a
        forged or damaged message: its size beyond ``max_size``, a malformed digest, ...)."""
        return cls.checked(value.size, value.sha256, value.chunk_size, max_size=max_size)

    @classmethod
    def from_record(cls, doc: dict[str, int | str]) -> StoredText:
        """A reference as written in a task document (checked when it was written)."""
        return cls(int(doc["size"]), str(doc["sha256"]), int(doc["chunk_size"]))

    @classmethod
    def checked(cls, size: int, sha256: str, chunk_size: int, *, max_size: int) -> StoredText:
        """A reference from untrusted fields; ``ValueError`` if they cannot describe a text
        this deployment stores."""
        if not 0 < size <= max_size:
            raise ValueError(
                f"a stored value of {size:,} bytes is outside 1..{max_size:,} "
                "(STELLWERK_MAX_RESULT_BYTES)"
            )
        if not 0 < chunk_size <= CHUNK_BYTES:
            raise ValueError(f"chunk size {chunk_size:,} is outside 1..{CHUNK_BYTES:,}")
        if not _SHA256.fullmatch(sha256):
            raise ValueError("the stored value's sha256 is not 64 lowercase hex digits")
        return cls(size, sha256, chunk_size)


@dataclass(frozen=True, slots=True)
class LargeResult:
    """A task's result that is stored out of line: what a settled dependency's output reads as
    until a dependent needs the value (``core/progress/_large.py`` fetches it then)."""

    key: BlobKey
    ref: StoredText

    @classmethod
    def of(cls, run_id: str, task_id: str, attempt: int, ref: StoredText) -> LargeResult:
        """The stored result of ``attempt`` of ``task_id``."""
        return cls(BlobKey(run_id, RESULT, task_id, attempt), ref)


class BlobStore:
    """Stores and reads texts in ``STELLWERK_BLOBS`` (see the module docstring)."""

    def __init__(self, js: JetStreamContext, writer: JetStreamWriter) -> None:
        self._js = js
        self._writer = writer

    async def put(self, key: BlobKey, text: str) -> StoredText:
        """Store ``text``; its reference. Repeating it (same text) writes the same messages.
        Raises ``UnavailableError`` when NATS cannot take it (callers retry)."""
        data = text.encode("utf-8")
        ref = StoredText(len(data), hashlib.sha256(data).hexdigest(), CHUNK_BYTES)
        gate = asyncio.Semaphore(_PARALLEL)

        async def one(index: int) -> None:
            chunk = data[index * CHUNK_BYTES : (index + 1) * CHUNK_BYTES]
            async with gate:
                ack = await self._writer.publish(key.subject(ref.sha256, index), chunk, None)
            ack.stored(f"chunk {index} of a stored value of {key.task_id!r}")

        await asyncio.gather(*(one(i) for i in range(ref.chunks)))
        return ref

    async def get(self, key: BlobKey, ref: StoredText) -> str:
        """The text ``ref`` refers to. ``NonRetryableError`` naming the task when a chunk is
        missing (forged reference, run removed) or the text does not match its digest;
        ``UnavailableError`` when NATS cannot answer."""
        gate = asyncio.Semaphore(_PARALLEL)

        async def one(index: int) -> bytes:
            async with gate:
                try:
                    found = await self._js.get_last_msg(
                        names.BLOBS_STREAM, key.subject(ref.sha256, index), direct=True
                    )
                except jserr.NotFoundError:
                    raise self._gone(
                        key, ref, f"chunk {index} of {ref.chunks} is missing"
                    ) from None
                except NATS_FAILURES as exc:
                    raise UnavailableError(f"could not read a stored value: {exc}") from exc
            chunk = found.data or b""
            expected = min(ref.chunk_size, ref.size - index * ref.chunk_size)
            if len(chunk) != expected:
                raise self._gone(key, ref, f"chunk {index} has {len(chunk):,} bytes")
            return chunk

        data = b"".join(await asyncio.gather(*(one(i) for i in range(ref.chunks))))
        if hashlib.sha256(data).hexdigest() != ref.sha256:
            raise self._gone(key, ref, "its content does not match its sha256")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise self._gone(key, ref, "it is not UTF-8") from None

    async def exists(self, key: BlobKey, ref: StoredText) -> bool:
        """Whether the last chunk of ``ref`` is stored with the size it should have (a cheap
        check of a reference in a message: chunks are stored before it is published)."""
        last = ref.chunks - 1
        try:
            found = await self._js.get_last_msg(
                names.BLOBS_STREAM, key.subject(ref.sha256, last), direct=True
            )
        except jserr.NotFoundError:
            return False
        except NATS_FAILURES as exc:
            raise UnavailableError(f"could not look up a stored value: {exc}") from exc
        return len(found.data or b"") == ref.size - last * ref.chunk_size

    async def remove_run(self, run_id: str) -> None:
        """Remove every stored text of ``run_id`` (idempotent)."""
        try:
            await self._js.purge_stream(names.BLOBS_STREAM, subject=names.run_blobs_filter(run_id))
        except NATS_FAILURES as exc:
            raise UnavailableError(
                f"could not remove the stored values of {run_id}: {exc}"
            ) from exc

    @staticmethod
    def _gone(key: BlobKey, ref: StoredText, why: str) -> NonRetryableError:
        what = "result" if key.kind == RESULT else "parameters"
        return NonRetryableError(
            f"the stored {what} of task {key.task_id!r} (attempt {key.attempt}, "
            f"{ref.size:,} bytes, sha256 {ref.sha256[:12]}…) cannot be read: {why} "
            "(removed with its run, or the reference is forged)"
        )
