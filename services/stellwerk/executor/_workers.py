"""The worker edge: task workers in any language run this executor's attempts over a gRPC stream.

A worker calls ``WorkerService.Connect``, registers the methods it serves, then receives
attempts and answers each with a result or a failure, heartbeating all the while. The executor
keeps the claim exactly as for its own handlers: a fetch loop per remote method pulls from the
method's durable consumer (``dispatch-<method>``) only while some connected worker has room,
and the delivery, ``in_progress()``-heartbeated by the runner, stays the claim while the worker
runs the attempt. The runner publishes the outcome the worker returns (first outcome per attempt
wins, as always) and acknowledges the delivery.

A worker that disconnects, or stays silent longer than the lease, loses its session: every
attempt it held fails here with :class:`WorkerLostError`, and the runner hands the delivery back
(``nak``) so JetStream redelivers it at once, to a worker of this or another executor. That
redelivery goes through the usual checks (outcome stored? settled in KV? poison count), so an
attempt whose outcome was stored never runs again.

While at least one session serves a method, the method is part of this executor's registration
in the executors bucket (written before the worker hears ``registered``), so submits accept it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Container
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration

from stellwerk.core.errors import (
    InvalidArgumentError,
    Problem,
    StellwerkError,
    UnavailableError,
    WrongStateError,
)
from stellwerk.core.grpc_errors import status_for
from stellwerk.executor.methods import MethodInfo, MethodKind
from stellwerk_api.events.v1 import events_pb2
from stellwerk_api.execution.v1 import worker_service_pb2 as api
from stellwerk_api.execution.v1 import worker_service_pb2_grpc as api_grpc

__all__ = ["RemoteOutcome", "WorkerHub", "WorkerLostError", "WorkerServicer", "is_method_name"]

logger = logging.getLogger(__name__)

_METHOD = re.compile(r"[A-Za-z][A-Za-z0-9_./:-]*")
_MAX_NAME = 200
_MAX_METHODS = 1000
_MAX_CONCURRENCY = 1000
_DETAILS_KEY = "grpc-status-details-bin"
_LISTED_WORKERS = 5  # workers named in a remote method's description

Context = grpc.aio.ServicerContext[Any, Any]


def is_method_name(name: str) -> bool:
    """Whether a worker may register ``name`` as a method (the syntax every method name has)."""
    return len(name) <= _MAX_NAME and _METHOD.fullmatch(name) is not None and ".." not in name


class WorkerLostError(Exception):
    """The worker running an attempt went away (or none serves its method any more): the
    attempt was not run to an outcome here, and its delivery must go back to JetStream."""


@dataclass(frozen=True, slots=True)
class RemoteOutcome:
    """What a worker answered: a result (JSON text) or an error message."""

    result_json: str | None = None
    error: str | None = None


class _Session:
    """One connected worker."""

    def __init__(self, worker_id: str, methods: frozenset[str], concurrency: int, sdk: str):
        self.worker_id = worker_id
        self.methods = methods
        self.concurrency = concurrency
        self.sdk = sdk
        self.outbox: asyncio.Queue[api.ConnectResponse | None] = asyncio.Queue()
        self.inflight: dict[str, asyncio.Future[RemoteOutcome]] = {}
        self.last_heard = time.monotonic()
        self.closed = False

    @property
    def free(self) -> int:
        return 0 if self.closed else self.concurrency - len(self.inflight)

    def send(self, message: api.ConnectResponse) -> None:
        if not self.closed:
            self.outbox.put_nowait(message)


MethodsChanged = Callable[[], Awaitable[None]]


class WorkerHub:
    """The connected workers of one executor, and the attempts they run."""

    def __init__(self, *, executor_id: str, local_methods: Container[str], lease: float) -> None:
        self.executor_id = executor_id
        self._local = local_methods
        self.lease = lease
        self._sessions: set[_Session] = set()
        self._changed = asyncio.Condition()
        self._tokens = itertools.count(1)
        self._names = itertools.count(1)
        self._on_methods_changed: MethodsChanged | None = None
        self._stopping = False

    def attach(self, on_methods_changed: MethodsChanged) -> None:
        """Start accepting workers; ``on_methods_changed`` runs whenever the set of remote
        methods changes (and must leave the registration and fetch loops matching it)."""
        self._on_methods_changed = on_methods_changed

    def methods(self) -> set[str]:
        """Methods served by at least one connected worker."""
        return {m for s in self._sessions if not s.closed for m in s.methods}

    def infos(self) -> list[MethodInfo]:
        """The methods served by connected workers (kind REMOTE), sorted by name; each one's
        description names the workers serving it (``id (sdk)``)."""
        serving: dict[str, list[str]] = {}
        for session in sorted(self._sessions, key=lambda s: s.worker_id):
            if session.closed:
                continue
            label = f"{session.worker_id} ({session.sdk})" if session.sdk else session.worker_id
            for method in session.methods:
                serving.setdefault(method, []).append(label)
        infos = []
        for method in sorted(serving):
            workers = serving[method]
            listed = ", ".join(workers[:_LISTED_WORKERS])
            if len(workers) > _LISTED_WORKERS:
                listed += f" and {len(workers) - _LISTED_WORKERS} more"
            noun = "workers" if len(workers) > 1 else "worker"
            infos.append(MethodInfo(method, MethodKind.REMOTE, f"served by {noun} {listed}"))
        return infos

    @property
    def running(self) -> int:
        """Attempts handed to workers and not answered yet."""
        return sum(len(s.inflight) for s in self._sessions)

    def sessions(self) -> int:
        """Connected workers."""
        return sum(1 for s in self._sessions if not s.closed)

    # -- the runner's side -------------------------------------------------------------------

    def free(self, method: str) -> int:
        """Room for more attempts of ``method`` among the connected workers."""
        return sum(s.free for s in self._sessions if method in s.methods)

    async def wait_free(self, method: str) -> int:
        """Return once some worker serving ``method`` has room; how much room there is."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.free(method) > 0)
            return self.free(method)

    async def run(self, dispatch: events_pb2.TaskDispatch) -> RemoteOutcome:
        """Hand the attempt to the least loaded worker serving its method and await its answer.

        Raises:
            WorkerLostError: no worker serves the method (any more), or the worker went away.
        """
        session = await self._assign(dispatch.method)
        token = f"{next(self._tokens)}"
        answer: asyncio.Future[RemoteOutcome] = asyncio.get_running_loop().create_future()
        session.inflight[token] = answer
        task = api.WorkerTask(
            task_token=token,
            run_id=dispatch.run_id,
            task_id=dispatch.task_id,
            method=dispatch.method,
            params_json=dispatch.params_json or "{}",
            attempt=dispatch.attempt,
            idempotency_key=dispatch.idempotency_key,
        )
        if dispatch.HasField("timeout"):
            task.timeout.CopyFrom(dispatch.timeout)
        session.send(api.ConnectResponse(task=task))
        try:
            return await answer
        except asyncio.CancelledError:
            # The claim was lost, the task timed out or the executor is stopping.
            session.send(
                api.ConnectResponse(
                    cancellation=api.TaskCancellation(
                        task_token=token, reason="the executor gave this attempt up"
                    )
                )
            )
            raise
        finally:
            session.inflight.pop(token, None)
            await self._notify()

    async def _assign(self, method: str) -> _Session:
        async with self._changed:
            while True:
                serving = [s for s in self._sessions if method in s.methods and not s.closed]
                if not serving:
                    raise WorkerLostError(f"no connected worker serves {method}")
                best = max(serving, key=lambda s: s.free)
                if best.free > 0:
                    return best
                await self._changed.wait()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- the servicer's side ----------------------------------------------------------------

    async def open(self, registration: api.WorkerRegistration) -> _Session:
        """Validate a registration and add its session; the registration is in KV on return."""
        if self._on_methods_changed is None or self._stopping:
            raise UnavailableError("this executor is not ready for workers; retry shortly")
        problems = self._problems(registration)
        if problems:
            raise InvalidArgumentError(problems=problems)
        clash = sorted(m for m in registration.methods if m in self._local)
        if clash:
            raise WrongStateError(
                f"this executor runs {', '.join(clash[:5])} itself; "
                "a worker cannot serve its built-in or handler methods",
                metadata={"method": clash[0]},
            )
        worker_id = registration.worker_id or f"worker-{next(self._names)}"
        session = _Session(
            worker_id,
            frozenset(registration.methods),
            registration.concurrency or 1,
            registration.sdk,
        )
        new = set(session.methods) - self.methods()
        self._sessions.add(session)
        if new:
            try:
                await self._on_methods_changed()
            except BaseException:
                self._sessions.discard(session)
                raise
        await self._notify()
        logger.info(
            "worker %s (%s) connected: %s, concurrency %d",
            worker_id,
            session.sdk or "unknown sdk",
            ", ".join(sorted(session.methods)),
            session.concurrency,
        )
        return session

    @staticmethod
    def _problems(registration: api.WorkerRegistration) -> list[Problem]:
        problems: list[Problem] = []
        if not registration.methods:
            problems.append(Problem(None, "register.methods", "name at least one method"))
        if len(registration.methods) > _MAX_METHODS:
            problems.append(Problem(None, "register.methods", f"at most {_MAX_METHODS} methods"))
        for i, method in enumerate(registration.methods[:_MAX_METHODS]):
            if not is_method_name(method):
                problems.append(
                    Problem(
                        None,
                        f"register.methods[{i}]",
                        f"{method[:60]!r} is no method name: [A-Za-z][A-Za-z0-9_./:-]*, "
                        f"at most {_MAX_NAME} characters, no '..'",
                    )
                )
        if not 0 <= registration.concurrency <= _MAX_CONCURRENCY:
            problems.append(
                Problem(None, "register.concurrency", f"must be within 0..{_MAX_CONCURRENCY}")
            )
        if len(registration.worker_id) > _MAX_NAME or len(registration.sdk) > _MAX_NAME:
            problems.append(
                Problem(None, "register", f"worker_id and sdk: at most {_MAX_NAME} characters")
            )
        return problems

    def receive(self, session: _Session, request: api.ConnectRequest) -> None:
        """One message from a worker."""
        session.last_heard = time.monotonic()
        kind = request.WhichOneof("message")
        if kind == "result":
            self._answer(session, request.result.task_token, RemoteOutcome(self._json(request)))
        elif kind == "failure":
            message = request.failure.message or "the worker reported a failure without a message"
            self._answer(session, request.failure.task_token, RemoteOutcome(error=message))
        elif kind == "register":
            raise InvalidArgumentError(
                problems=[Problem(None, "register", "a session registers once, first")]
            )

    @staticmethod
    def _json(request: api.ConnectRequest) -> str | None:
        text = request.result.result_json
        try:
            json.loads(text, parse_constant=_no_constant)
        except ValueError:
            return None
        return text

    @staticmethod
    def _answer(session: _Session, token: str, outcome: RemoteOutcome) -> None:
        if outcome.result_json is None and outcome.error is None:
            outcome = RemoteOutcome(error="the worker returned a result that is not JSON text")
        answer = session.inflight.get(token)
        if answer is not None and not answer.done():
            answer.set_result(outcome)
        # An unknown token: an attempt given up here already (cancelled); its answer is moot.

    async def close(self, session: _Session, reason: str) -> None:
        """End a session: every attempt it holds is lost (handed back by the runner)."""
        if session.closed:
            return
        session.closed = True
        session.outbox.put_nowait(None)
        for answer in session.inflight.values():
            if not answer.done():
                answer.set_exception(WorkerLostError(f"worker {session.worker_id} {reason}"))
        self._sessions.discard(session)
        logger.info("worker %s gone: %s", session.worker_id, reason)
        await self._notify()
        if self._on_methods_changed is not None and not self._stopping:
            with contextlib.suppress(Exception):  # the periodic registration repairs it
                await self._on_methods_changed()

    async def watch(self, session: _Session) -> None:
        """Close the session once the worker has been silent for a lease."""
        interval = max(0.1, self.lease / 10)
        while not session.closed:
            await asyncio.sleep(interval)
            if time.monotonic() - session.last_heard > self.lease:
                await self.close(session, f"silent for more than the lease ({self.lease:g} s)")

    async def stop(self) -> None:
        """The executor is stopping: end every session (workers reconnect elsewhere)."""
        self._stopping = True
        for session in list(self._sessions):
            await self.close(session, "left: the executor is stopping")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class WorkerServicer(api_grpc.WorkerServiceServicer):
    """``stellwerk.execution.v1.WorkerService``: one ``Connect`` stream per worker."""

    def __init__(self, hub: WorkerHub) -> None:
        self._hub = hub

    async def Connect(  # noqa: N802 (gRPC method name)
        self, request_iterator: AsyncIterator[api.ConnectRequest], context: Context
    ) -> AsyncIterator[api.ConnectResponse]:
        try:
            first = await anext(aiter(request_iterator), None)
            if first is None or first.WhichOneof("message") != "register":
                raise InvalidArgumentError(
                    problems=[Problem(None, "register", "the first message must be a register")]
                )
            session = await self._hub.open(first.register)
        except StellwerkError as exc:
            code, status = status_for(exc)
            await context.abort(
                code,
                status.message,
                trailing_metadata=((_DETAILS_KEY, status.SerializeToString()),),
            )
            return
        reader = asyncio.create_task(self._read(session, request_iterator))
        watchdog = asyncio.create_task(self._hub.watch(session))
        interval = Duration()
        interval.FromNanoseconds(int(self._hub.lease / 3 * 1e9))
        lease = Duration()
        lease.FromNanoseconds(int(self._hub.lease * 1e9))
        try:
            yield api.ConnectResponse(
                registered=api.WorkerRegistered(
                    executor_id=self._hub.executor_id,
                    worker_id=session.worker_id,
                    heartbeat_interval=interval,
                    lease=lease,
                )
            )
            while (message := await session.outbox.get()) is not None:
                yield message
        finally:
            reader.cancel()
            watchdog.cancel()
            for task in (reader, watchdog):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._hub.close(session, "disconnected")

    async def _read(self, session: _Session, requests: AsyncIterator[api.ConnectRequest]) -> None:
        reason = "disconnected"
        try:
            async for request in requests:
                self._hub.receive(session, request)
        except StellwerkError as exc:
            reason = f"broke the protocol: {exc.message}"
        except Exception as exc:  # the stream broke (cancelled by the peer, network)
            reason = f"disconnected ({type(exc).__name__})"
        await self._hub.close(session, reason)
