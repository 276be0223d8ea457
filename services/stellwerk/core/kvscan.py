"""Reading many KV entries at once (listing, overviews, cleanup) — never on the hot path."""

from __future__ import annotations

from nats.js.kv import KeyValue

__all__ = ["list_keys", "snapshot"]


async def list_keys(kv: KeyValue, pattern: str, *, idle_timeout: float = 5.0) -> list[str]:
    """Keys matching the subject-style ``pattern`` (empty list when none).

    Not ``KeyValue.keys(filters=...)``: that one walks every key of the bucket and matches the
    filters as substrings; a filtered watch lets the server do the selecting.
    """
    keys: list[str] = []
    watcher = await kv.watch(pattern, meta_only=True, ignore_deletes=True)
    try:
        while True:
            try:
                entry = await watcher.updates(timeout=idle_timeout)
            except TimeoutError:
                break
            if entry is None:
                break
            if entry.operation is None:
                keys.append(entry.key)
    finally:
        await watcher.stop()
    return keys


async def snapshot(kv: KeyValue, pattern: str, *, idle_timeout: float = 5.0) -> dict[str, bytes]:
    """Current value of every key matching ``pattern``, read in one ordered pass (a watch that
    stops at the end of its initial snapshot) instead of one request per key."""
    values: dict[str, bytes] = {}
    watcher = await kv.watch(pattern, include_history=False, ignore_deletes=True)
    try:
        while True:
            try:
                entry = await watcher.updates(timeout=idle_timeout)
            except TimeoutError:
                break
            if entry is None:
                break
            if entry.value is not None and entry.operation is None:
                values[entry.key] = entry.value
    finally:
        await watcher.stop()
    return values
