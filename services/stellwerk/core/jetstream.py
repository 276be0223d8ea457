"""NATS plumbing shared by the services: connecting with retry, and the streams, consumers and
buckets they need, created idempotently and updated in place when their configuration changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats
import nats.js.errors as jserr
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RawStreamMsg,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.kv import KeyValue
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    retry_if_exception_type,
    wait_exponential_jitter,
)

from stellwerk.core import names
from stellwerk.core.errors import UnavailableError, WrongStateError
from stellwerk.core.publish import NATS_FAILURES, JetStreamWriter
from stellwerk.core.settings import Settings

__all__ = [
    "Delivery",
    "Topology",
    "cancel_requested",
    "connect",
    "delivery_of",
    "ensure_dispatch_consumer",
    "ensure_resolver_consumer",
    "ensure_topology",
    "last_message",
]

logger = logging.getLogger(__name__)


async def connect(
    settings: Settings,
    *,
    name: str,
    disconnected_cb: Callable[[], Awaitable[None]] | None = None,
    reconnected_cb: Callable[[], Awaitable[None]] | None = None,
    closed_cb: Callable[[], Awaitable[None]] | None = None,
) -> NatsClient:
    """Connect to NATS, retrying with exponential backoff until it answers (or we are cancelled).

    The first connect runs with reconnects off so that each failure surfaces here, where tenacity
    logs and backs off; once connected, reconnects are switched on for good (never give up: a
    service without NATS is useless, and its health check says so meanwhile). So ``closed_cb``
    runs only when the connection is closed for good: by ``close()``, or by nats-py itself on an
    ``-ERR`` from the server (it never reconnects after one). A failed first attempt does not
    call it.
    """
    servers = settings.nats_servers()
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(NATS_FAILURES),
        # nats-py may turn our cancellation into a TimeoutError: never retry once asked to stop.
        stop=lambda _state: cancel_requested(),
        wait=wait_exponential_jitter(multiplier=0.2, max=5.0),
        before_sleep=lambda state: logger.warning(
            "NATS at %s unreachable (%s); retrying",
            ",".join(servers),
            state.outcome.exception() if state.outcome else "?",
        ),
    ):
        with attempt:
            nc = await nats.connect(
                servers,
                name=name,
                allow_reconnect=False,
                connect_timeout=settings.connect_timeout,
                max_outstanding_pings=3,
                ping_interval=20,
                error_cb=_log_error,
                pending_size=64 * 1024 * 1024,
                disconnected_cb=disconnected_cb,
                reconnected_cb=reconnected_cb,
                closed_cb=closed_cb,
            )
    nc.options["allow_reconnect"] = True
    nc.options["max_reconnect_attempts"] = -1
    nc.options["reconnect_time_wait"] = 0.5
    return nc


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the hot path needs from a JetStream delivery's ack subject."""

    num_delivered: int
    stored_at: float | None  # epoch seconds the message was stored at


# Token positions in an ack subject, as nats-py numbers them (``Msg.Ack``) for the form with
# domain and account hash: ``$JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.
# <stream seq>.<consumer seq>.<stored ns>.<pending>[.<random>]``. The older form,
# ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<stored ns>.<pending>``,
# lacks the two tokens after ``ACK``, so each position is two less.
_ACK_TOKENS_OLD = 9
_ACK_TOKENS_NEW_MIN = 11
_ACK_DELIVERED = Msg.Ack.NumDelivered
_ACK_STORED = Msg.Ack.Timestamp
_ACK_OLD_SHIFT = Msg.Ack.Stream - Msg.Ack.Domain


def delivery_of(msg: Msg) -> Delivery:
    """``msg``'s delivery count and store time, read straight from its ack subject (either
    form, see ``_ACK_*``): ``msg.metadata`` builds timezone-aware datetimes, which showed in the
    resolver's profile. A subject of neither form counts as a first delivery of unknown age."""
    tokens = (msg.reply or "").split(".")
    if len(tokens) == _ACK_TOKENS_OLD:
        shift = _ACK_OLD_SHIFT
    elif len(tokens) >= _ACK_TOKENS_NEW_MIN:
        shift = 0
    else:
        return Delivery(1, None)
    try:
        delivered = int(tokens[_ACK_DELIVERED - shift])
        stored = int(tokens[_ACK_STORED - shift])
    except ValueError:
        return Delivery(1, None)
    return Delivery(max(1, delivered), stored / 1e9)


async def last_message(js: JetStreamContext, stream: str, subject: str) -> RawStreamMsg | None:
    """The last message on ``subject`` in ``stream`` (a direct lookup by subject), or ``None``;
    raises ``UnavailableError`` when NATS cannot answer."""
    try:
        return await js.get_last_msg(stream, subject)
    except jserr.NotFoundError:
        return None
    except NATS_FAILURES as exc:
        raise UnavailableError(f"could not look up {subject}: {exc}") from exc


def cancel_requested() -> bool:
    """Whether the running task has been asked to stop.

    Loops that retry on broad errors must check this: nats-py turns a cancelled ``fetch`` (or
    connect) into a ``TimeoutError``, so without it a cancelled loop would simply carry on.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _log_error(exc: Exception) -> None:
    logger.debug("NATS client error: %s", exc)


@dataclass(frozen=True, slots=True)
class Topology:
    """Handles on the buckets every service uses."""

    js: JetStreamContext
    runs: KeyValue
    tasks: KeyValue
    executors: KeyValue
    claims: KeyValue  # who runs a long attempt, for `explain` (never read on the hot path)
    checkpoints: KeyValue  # saved copies of runs (core/checkpoints.py), operator actions only
    writer: JetStreamWriter  # the hot path's publishes and compare-and-sets (core/publish.py)


def _outcomes(settings: Settings) -> StreamConfig:
    """Task outcomes: one message per attempt subject, and the first one stays (a competing
    outcome is refused with error 10077), so JetStream itself decides which result wins."""
    return StreamConfig(
        name=names.EVENTS_STREAM,
        subjects=[names.EVENTS_SUBJECTS],
        retention=RetentionPolicy.LIMITS,
        max_msgs_per_subject=1,
        discard=DiscardPolicy.NEW,
        discard_new_per_subject=True,
        storage=StorageType.FILE,
        num_replicas=settings.replicas,
        duplicate_window=settings.dedup_window,
    )


def _blobs(settings: Settings) -> StreamConfig:
    """Large results and parameters in chunks (``core/blobs.py``): the last message per chunk
    subject stays, so storing the same text again replaces each chunk with itself; direct gets
    read chunks without the JSON (base64) stream API."""
    return StreamConfig(
        name=names.BLOBS_STREAM,
        subjects=[names.BLOBS_SUBJECTS],
        retention=RetentionPolicy.LIMITS,
        max_msgs_per_subject=1,
        discard=DiscardPolicy.OLD,
        storage=StorageType.FILE,
        num_replicas=settings.replicas,
        duplicate_window=settings.dedup_window,
        allow_direct=True,
    )


def _work_queue(name: str, subjects: str, settings: Settings) -> StreamConfig:
    return StreamConfig(
        name=name,
        subjects=[subjects],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        num_replicas=settings.replicas,
        duplicate_window=settings.dedup_window,
    )


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        info = await js.stream_info(config.name or "")
    except jserr.NotFoundError:
        try:
            await js.add_stream(config)
        except jserr.BadRequestError:
            # Another service created it between our lookup and our add; converge below.
            info = await js.stream_info(config.name or "")
        else:
            return
    current = info.config
    if current.retention != config.retention or bool(current.discard_new_per_subject) != bool(
        config.discard_new_per_subject
    ):
        # Not changeable in place. An empty stream from an older Stellwerk is replaced; one with
        # messages in it needs an operator (drain the old version first).
        if info.state.messages:
            raise WrongStateError(
                f"stream {config.name} has the layout of another Stellwerk version and still "
                f"holds {info.state.messages} messages; drain it with that version, then delete it"
            )
        logger.warning("replacing empty stream %s with this version's layout", config.name)
        await js.delete_stream(config.name or "")
        await js.add_stream(config)
        return
    if (
        current.num_replicas != config.num_replicas
        or current.duplicate_window != config.duplicate_window
        or current.subjects != config.subjects
    ):
        logger.info("updating stream %s in place", config.name)
        await js.update_stream(
            current.evolve(
                num_replicas=config.num_replicas,
                duplicate_window=config.duplicate_window,
                subjects=config.subjects,
            )
        )


async def _ensure_bucket(
    js: JetStreamContext, bucket: str, settings: Settings, *, ttl: float | None = None
) -> KeyValue:
    try:
        kv = await js.key_value(bucket)
    except jserr.BucketNotFoundError:
        try:
            return await js.create_key_value(
                KeyValueConfig(
                    bucket=bucket,
                    history=1,
                    storage=StorageType.FILE,
                    replicas=settings.replicas,
                    direct=True,
                    ttl=ttl,
                )
            )
        except jserr.BadRequestError:
            kv = await js.key_value(bucket)
    status = await kv.status()
    current = status.stream_info.config
    if current.num_replicas != settings.replicas:
        logger.info("updating bucket %s replicas in place", bucket)
        await js.update_stream(current.evolve(num_replicas=settings.replicas))
    return kv


def _setup_may_succeed_later(exc: BaseException) -> bool:
    """Whether a failed topology call is worth repeating: no reply in time, no responders, or
    JetStream answering 5xx (a cluster still electing its meta leader, or a new R3 asset's
    first leader). A 4xx answer (a config the server refuses) will not change by waiting."""
    if isinstance(exc, jserr.APIError):
        return exc.code is None or exc.code >= 500
    return isinstance(exc, NATS_FAILURES)


async def ensure_topology(nc: NatsClient, settings: Settings) -> Topology:
    """Create (or converge) the streams and buckets; safe to run from every service at once.

    Repeated with backoff while JetStream cannot answer yet: services started together with a
    fresh cluster (compose, the cluster tests) reach it before its meta leader can create R3
    assets, and a timeout then must not end the service."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception(_setup_may_succeed_later),
        stop=lambda _state: cancel_requested(),
        wait=wait_exponential_jitter(multiplier=0.2, max=5.0),
        before_sleep=lambda state: logger.warning(
            "JetStream not ready to set up streams and buckets (%s); retrying",
            state.outcome.exception() if state.outcome else "?",
        ),
    ):
        with attempt:
            return await _ensure_topology(nc, settings)
    raise AssertionError("unreachable: tenacity either returns or raises")


async def _ensure_topology(nc: NatsClient, settings: Settings) -> Topology:
    js = nc.jetstream(timeout=10)
    await _ensure_stream(js, _work_queue(names.DISPATCH_STREAM, names.DISPATCH_SUBJECTS, settings))
    await _ensure_stream(js, _outcomes(settings))
    await _ensure_stream(js, _blobs(settings))
    runs = await _ensure_bucket(js, names.RUNS_BUCKET, settings)
    tasks = await _ensure_bucket(js, names.TASKS_BUCKET, settings)
    executors = await _ensure_bucket(js, names.EXECUTORS_BUCKET, settings)
    claims = await _ensure_bucket(js, names.CLAIMS_BUCKET, settings, ttl=names.CLAIMS_TTL)
    checkpoints = await _ensure_bucket(js, names.CHECKPOINTS_BUCKET, settings)
    writer = await JetStreamWriter.open(nc)
    return Topology(
        js=js,
        runs=runs,
        tasks=tasks,
        executors=executors,
        claims=claims,
        checkpoints=checkpoints,
        writer=writer,
    )


async def _ensure_consumer(js: JetStreamContext, stream: str, config: ConsumerConfig) -> None:
    # add_consumer on an existing durable is create-or-update for its mutable fields.
    await js.add_consumer(stream, config)


async def ensure_dispatch_consumer(js: JetStreamContext, method: str, settings: Settings) -> str:
    """The durable consumer for ``method``'s dispatches; returns its name."""
    durable = names.dispatch_consumer(method)
    await _ensure_consumer(
        js,
        names.DISPATCH_STREAM,
        ConsumerConfig(
            durable_name=durable,
            filter_subject=names.dispatch_filter(method),
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=settings.task_lease,
            # Unlimited here: the executor fails an attempt delivered more than
            # STELLWERK_MAX_DELIVERIES times itself, so it never sits undelivered in the stream.
            max_deliver=-1,
            max_ack_pending=20_000,
            inactive_threshold=None,
        ),
    )
    return durable


async def ensure_resolver_consumer(js: JetStreamContext, settings: Settings) -> str:
    """The durable consumer all resolvers share for task events; returns its name."""
    await _ensure_consumer(
        js,
        names.EVENTS_STREAM,
        ConsumerConfig(
            durable_name=names.RESOLVER_CONSUMER,
            filter_subject=names.EVENTS_SUBJECTS,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=max(settings.task_lease, 10.0),
            max_deliver=-1,
            max_ack_pending=20_000,
            inactive_threshold=None,
        ),
    )
    return names.RESOLVER_CONSUMER
