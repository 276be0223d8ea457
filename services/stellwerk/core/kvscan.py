"""Reading many KV entries at once (listing, overviews, cleanup) — never on the hot path."""

from __future__ import annotations

import nats.errors
import nats.js.errors as jserr
from nats.js.kv import KeyValue

__all__ = ["list_keys", "snapshot"]


async def list_keys(kv: KeyValue, pattern: str) -> list[str]:
    """Keys matching the subject-style ``pattern`` (empty list when none)."""
    try:
        return list(await kv.keys(filters=[pattern]))
    except jserr.NoKeysError:
        return []


async def snapshot(kv: KeyValue, pattern: str, *, idle_timeout: float = 5.0) -> dict[str, bytes]:
    """Current value of every key matching ``pattern``, read in one ordered pass (a watch that
    stops at the end of its initial snapshot) instead of one request per key."""
    values: dict[str, bytes] = {}
    watcher = await kv.watch(pattern, include_history=False, ignore_deletes=True)
    try:
        while True:
            try:
                entry = await watcher.updates(timeout=idle_timeout)
            except nats.errors.TimeoutError:
                break
            if entry is None:
                break
            if entry.value is not None and entry.operation is None:
                values[entry.key] = entry.value
    finally:
        await watcher.stop()
    return values
