"""Resolution retry counts in ``stellwerk-runs`` do not pile up: every resolver process publishes
its count under a key of its own, and the janitor folds the keys of resolvers that are gone into
one total, so the keys stay as many as the live resolvers (plus one) while GetOverview's sum
stays the total of every retry ever counted (core/retry_counts.py)."""

from __future__ import annotations

import time
from typing import Any

from nats.aio.client import Client as NatsClient

from stellwerk.core.breaker_book import BreakerBook, resolution_retries
from stellwerk.core.breakers import RETIRED_RETRIES_KEY, resolution_retries_key
from stellwerk.core.jetstream import Topology, ensure_topology
from stellwerk.core.kvscan import list_keys
from stellwerk.core.metrics import Registry
from stellwerk.core.retry_counts import STALE_AFTER, RetryCountPublisher
from stellwerk.core.settings import Settings
from stellwerk.monitor._janitor import Janitor
from stellwerk.resolver._resilience import ResolutionGuard

FILTER = resolution_retries_key(None)


def _janitor(topology: Topology) -> Janitor:
    return Janitor(
        js=topology.js,
        runs=topology.runs,
        tasks=topology.tasks,
        executors=topology.executors,
        settings=Settings(),
    )


def _guard() -> ResolutionGuard:
    retries = Registry().counter("stellwerk_resolution_retries", "retries")
    tasks: Any = None  # not used for counting
    return ResolutionGuard(book=BreakerBook(), tasks=tasks, settings=Settings(), retries=retries)


async def _subjects(topology: Topology) -> int:
    """Messages of retry counts in the bucket's stream, delete markers included."""
    bucket = topology.runs._name
    info = await topology.js.stream_info(f"KV_{bucket}", subjects_filter=f"$KV.{bucket}.{FILTER}")
    return len(info.state.subjects or {})


async def test_counts_of_resolvers_that_are_gone_fold_into_one_key_keeping_the_total(
    nc: NatsClient,
) -> None:
    topology = await ensure_topology(nc, Settings())
    runs = topology.runs
    # 30 resolver processes that counted retries and are gone: each left a key of its own.
    for i in range(30):
        await runs.put(resolution_retries_key(f"host-{1000 + i}"), str(i + 1).encode())
    assert await resolution_retries(runs) == 465
    janitor = _janitor(topology)

    await janitor.sweep(now=time.time() + STALE_AFTER + 60)

    assert await list_keys(runs, FILTER) == [RETIRED_RETRIES_KEY]
    assert await resolution_retries(runs) == 465, "GetOverview's total is kept"
    assert await _subjects(topology) == 1, "no delete markers left behind either"
    # 30 more come and go: still one key, the total grows by theirs.
    for i in range(30):
        await runs.put(resolution_retries_key(f"host-{2000 + i}"), b"2")
    await janitor.sweep(now=time.time() + STALE_AFTER + 60)
    assert await list_keys(runs, FILTER) == [RETIRED_RETRIES_KEY]
    assert await resolution_retries(runs) == 525


async def test_a_live_resolvers_count_stays_and_one_that_comes_back_counts_nothing_twice(
    nc: NatsClient,
) -> None:
    topology = await ensure_topology(nc, Settings())
    runs = topology.runs
    janitor = _janitor(topology)
    publisher = RetryCountPublisher(runs, "host-live-1234")

    await publisher.publish(0)
    assert await list_keys(runs, FILTER) == [], "a resolver with no retries writes nothing"
    await publisher.publish(7)
    await janitor.sweep(now=time.time())  # written just now: its resolver lives
    assert await list_keys(runs, FILTER) == [publisher.key]
    assert await resolution_retries(runs) == 7

    # Silent past the stale time (say NATS was away from it): the janitor folds its count ...
    await janitor.sweep(now=time.time() + STALE_AFTER + 60)
    assert await list_keys(runs, FILTER) == [RETIRED_RETRIES_KEY]
    assert await resolution_retries(runs) == 7
    # ... and when it comes back with 2 more, the total is 9, not 7 + 9.
    await publisher.publish(9)  # finds its key folded
    await publisher.publish(9)
    assert sorted(await list_keys(runs, FILTER)) == sorted([RETIRED_RETRIES_KEY, publisher.key])
    assert await resolution_retries(runs) == 9


async def test_a_delete_marker_left_by_a_sweep_cut_short_is_removed(nc: NatsClient) -> None:
    topology = await ensure_topology(nc, Settings())
    key = resolution_retries_key("host-cut-short-1")
    await topology.runs.put(key, b"4")
    await topology.runs.delete(key)  # as a janitor that died after its delete would leave it
    assert await _subjects(topology) == 1
    await _janitor(topology).sweep()
    assert await _subjects(topology) == 0


async def test_an_unchanged_count_is_written_again_as_a_sign_of_life(nc: NatsClient) -> None:
    topology = await ensure_topology(nc, Settings())
    publisher = RetryCountPublisher(topology.runs, "host-beat-1")
    await publisher.publish(3, now=0.0)
    first = (await topology.runs.get(publisher.key)).revision
    await publisher.publish(3, now=1.0)  # unchanged, heartbeat not due
    assert (await topology.runs.get(publisher.key)).revision == first
    await publisher.publish(3, now=61.0)  # unchanged, heartbeat due
    assert (await topology.runs.get(publisher.key)).revision != first


def test_every_resolver_process_start_has_a_fresh_id() -> None:
    """Host and pid alone repeat when a container restarts (pid 1, same host name); the new
    process then overwrote its predecessor's count. Two guards in one process stand for that."""
    assert _guard().resolver_id != _guard().resolver_id
