"""Reading many KV entries at once (listing, overviews, sweeps) — never on the hot path.

Not ``KeyValue.keys(filters=...)``: it walks every key of the bucket and matches the filters as
substrings. Not a ``KeyValue.watch`` either: nats-py may signal "end of initial values" before
delivering them (it counts pending messages after the push consumer already took them). A pull
consumer is exact: its pending count at creation is the number of entries to read.
"""

from __future__ import annotations

import contextlib
from typing import Any

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.kv import KeyValue

__all__ = ["list_keys", "remove", "snapshot"]

_BATCH = 1000
_OPERATION = "KV-Operation"


async def _scan(kv: KeyValue, pattern: str, *, values: bool) -> dict[str, bytes]:
    # KeyValue keeps its JetStream context and bucket name private; the bucket's stream and
    # subject prefix follow the KV naming convention (KV_<bucket>, $KV.<bucket>.<key>).
    js: Any = kv._js
    bucket: str = kv._name
    prefix = f"$KV.{bucket}."
    sub = await js.pull_subscribe(
        prefix + pattern,
        stream=f"KV_{bucket}",
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            ack_policy=AckPolicy.NONE,
            headers_only=not values,
            mem_storage=True,
            inactive_threshold=30.0,
        ),
    )
    found: dict[str, bytes] = {}
    info = await sub.consumer_info()
    try:
        remaining = info.num_pending
        while remaining > 0:
            msgs = await sub.fetch(batch=min(remaining, _BATCH), timeout=10)
            remaining -= len(msgs)
            for msg in msgs:
                if (msg.headers or {}).get(_OPERATION) in ("DEL", "PURGE"):
                    continue
                found[msg.subject[len(prefix) :]] = msg.data
    finally:
        await sub.unsubscribe()
        # Unsubscribing leaves an ephemeral consumer behind until its inactive threshold; a busy
        # caller would pile them up to the server's consumer limit. Delete it now.
        with contextlib.suppress(Exception):
            await js.delete_consumer(f"KV_{bucket}", info.name)
    return found


async def list_keys(kv: KeyValue, pattern: str) -> list[str]:
    """Keys matching the subject-style ``pattern`` (``run.*``, ``<run>.>``), deleted ones out."""
    return list(await _scan(kv, pattern, values=False))


async def snapshot(kv: KeyValue, pattern: str) -> dict[str, bytes]:
    """Current value of every key matching ``pattern``."""
    return await _scan(kv, pattern, values=True)


async def remove(kv: KeyValue, pattern: str) -> None:
    """Remove every key matching ``pattern`` *and its history*, leaving no delete marker.

    ``KeyValue.purge`` leaves one marker message per key, which would then need sweeping;
    purging the bucket's stream by subject removes the messages outright (one request for a
    whole run's tasks with ``<run>.>``).
    """
    js: Any = kv._js
    bucket: str = kv._name
    await js.purge_stream(f"KV_{bucket}", subject=f"$KV.{bucket}.{pattern}")
