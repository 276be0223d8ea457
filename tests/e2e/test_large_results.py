"""Large results (issue 10): a result larger than a NATS message is stored in chunks
(STELLWERK_BLOBS, core/blobs.py), passed intact to its dependents, and read back by GetRun;
above STELLWERK_MAX_RESULT_BYTES its task fails naming the cap. Against a nats-server with
NATS's default ``max_payload`` of 1 MiB, services as processes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import grpc
import nats
import pytest

from stellwerk.core import names, natsd
from stellwerk.core.natsd import NatsServer
from stellwerk.core.settings import Settings
from stellwerk.monitor._janitor import Janitor
from stellwerk_api.events.v1 import events_pb2
from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2 as api
from stellwerk_api.workflow.v1 import workflow_service_pb2_grpc as wf_grpc
from stellwerk_client import Client
from tests.e2e.helpers import result, submit, tasks_by_id, wait_done
from tests.e2e.test_recovery import Cluster
from tests.support.polling import eventually

MIB = 1024 * 1024
FIVE_MIB = 5 * MIB
INLINE_LIMIT = (MIB - 1024) // 2  # core/limits at 1 MiB: larger results are stored


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """Replaces the suite's server (8 MiB) for this module: NATS's default message size."""
    with mock.patch.object(natsd, "MAX_PAYLOAD", MIB):
        server = NatsServer.start_new(tmp_path / "nats")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cluster(nats_server: NatsServer, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(nats_server, tmp_path / "ledger.jsonl")
    try:
        yield c
    finally:
        for proc in c.procs:
            proc.terminate(timeout=15)


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Any]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


def stub_for(address: str) -> Any:
    # A GetRun with a 5 MiB result exceeds gRPC's default 4 MiB: the Python client, like
    # this stub, accepts 64 MiB (core/limits.GRPC_MAX_MESSAGE_BYTES).
    channel = grpc.aio.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 64 * MIB)]
    )
    return wf_grpc.WorkflowServiceStub(channel)


def chain(size: int, seed: str | None = "stellwerk") -> str:
    produce: dict[str, Any] = {"size": size} if seed is None else {"size": size, "seed": seed}
    return json.dumps({"name": "large", "tasks": [
        {"id": "big", "method": "test/large", "params": produce},
        {"id": "check", "method": "test/digest", "dependencies": ["big"],
         "params": {"text": "${big.result.text}"}},
    ]})  # fmt: skip


async def stored_subjects(nc: Any, run_id: str, kind: str = "") -> dict[str, int]:
    """The chunk subjects STELLWERK_BLOBS holds for ``run_id`` (``kind``: ``r``, ``p``, all)."""
    subjects = f"stellwerk.blobs.{run_id}.{kind}.>" if kind else names.run_blobs_filter(run_id)
    info = await nc.jetstream().stream_info(names.BLOBS_STREAM, subjects_filter=subjects)
    return dict(info.state.subjects or {})


def objects(subjects: dict[str, int]) -> set[str]:
    """The stored texts among chunk subjects: everything but the chunk index."""
    return {subject.rsplit(".", 1)[0] for subject in subjects}


async def sweep_janitor(nc: Any) -> None:
    js = nc.jetstream()
    janitor = Janitor(
        js=js,
        runs=await js.key_value(names.RUNS_BUCKET),
        tasks=await js.key_value(names.TASKS_BUCKET),
        executors=await js.key_value(names.EXECUTORS_BUCKET),
        settings=Settings(retention=0.001),
    )
    assert await janitor.sweep(now=time.time() + 5) >= 1


def hop_seconds(before: pb.TaskRun, after: pb.TaskRun) -> float:
    """From the end of ``before``'s attempt (its result stored) to the start of ``after``'s."""
    end = before.attempt_history[-1].end_time.ToNanoseconds()
    start = after.attempt_history[-1].start_time.ToNanoseconds()
    return (start - end) / 1e9


async def test_a_5_mib_result_flows_into_its_dependent_intact(cluster: Cluster, nc: Any) -> None:
    resolver = await cluster.start("resolver")
    await cluster.start("executor")
    stub = stub_for(resolver.address)
    small = await wait_done(stub, (await submit(stub, chain(1000), document_format="json")).run_id)
    assert small.state == pb.RUN_STATE_COMPLETED, small.error

    submitted = time.perf_counter()
    run = await submit(stub, chain(FIVE_MIB), document_format="json")
    done = await wait_done(stub, run.run_id, timeout=120)
    took = time.perf_counter() - submitted
    assert done.state == pb.RUN_STATE_COMPLETED, done.error
    tasks = tasks_by_id(done)
    text = result(tasks["big"])["text"]  # read back by GetRun, whole
    assert len(text) == FIVE_MIB
    assert text == ("stellwerk" * (FIVE_MIB // 9 + 1))[:FIVE_MIB]
    assert tasks["big"].result_size == len(tasks["big"].result_json.encode())
    assert result(tasks["check"]) == {
        "length": FIVE_MIB,
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
    assert tasks["check"].result_size == 0  # small: inline as ever
    # Nothing larger than a message travelled: the outcome refers to the stored result, and
    # the dependent's substituted parameters were stored for its dispatch.
    stored = await nc.jetstream().get_last_msg(
        names.EVENTS_STREAM, names.event_subject(run.run_id, "big", 1)
    )
    event = events_pb2.TaskEvent.FromString(stored.data)
    assert event.HasField("stored_result") and not event.result_json
    assert len(stored.data) < 1024
    assert objects(await stored_subjects(nc, run.run_id, "r")) != set()
    assert objects(await stored_subjects(nc, run.run_id, "p")) != set()
    # WatchRun-like views carry only the size.
    basic = await stub.GetRun(api.GetRunRequest(run_id=run.run_id), timeout=60)
    assert tasks_by_id(basic.run)["big"].result_json == tasks["big"].result_json
    # The typed client carries the size beside the whole result (a watch would carry the size
    # alone, with result None).
    async with await Client.connect(resolver.address) as client:
        big = (await client.get(run.run_id)).task("big")
    assert big.result_size == tasks["big"].result_size > FIVE_MIB and big.result["text"] == text
    print(
        f"\n5 MiB hop: {hop_seconds(tasks['big'], tasks['check']) * 1000:.0f} ms "
        f"(1,000 characters: {hop_seconds(*tasks_by_id(small).values()) * 1000:.1f} ms); "
        f"run submitted to read back: {took:.2f} s"
    )

    await sweep_janitor(nc)
    assert await stored_subjects(nc, run.run_id) == {}


async def test_a_result_over_the_cap_fails_its_task_naming_the_cap(
    cluster: Cluster, nc: Any
) -> None:
    cap = {"STELLWERK_MAX_RESULT_BYTES": str(2 * MIB)}
    resolver = await cluster.start("resolver", **cap)
    await cluster.start("executor", **cap)
    stub = stub_for(resolver.address)
    run = await submit(stub, chain(3 * MIB), document_format="json")
    done = await wait_done(stub, run.run_id, timeout=60)
    assert done.state == pb.RUN_STATE_FAILED
    tasks = tasks_by_id(done)
    assert tasks["big"].state == pb.TASK_STATE_FAILED
    size = len(json.dumps({"text": "x" * 3 * MIB}))
    assert tasks["big"].error == (
        f"the result is {size:,} bytes; this deployment stores at most {2 * MIB:,} bytes per "
        "task result (STELLWERK_MAX_RESULT_BYTES)"
    )
    assert tasks["big"].attempts == 1  # not retried: the same result would fail the same way
    assert tasks["check"].state == pb.TASK_STATE_BLOCKED
    assert await stored_subjects(nc, run.run_id) == {}  # nothing stored for it


async def test_an_executor_killed_between_storing_and_reporting_leaves_the_right_result(
    cluster: Cluster, nc: Any
) -> None:
    resolver = await cluster.start("resolver")
    # Drops every outcome after storing the result: as if it died right before its publish.
    doomed = await cluster.start("executor", STELLWERK_FAULT_DROP_EVENTS="1.0")
    stub = stub_for(resolver.address)
    run = await submit(stub, chain(FIVE_MIB, seed=None), document_format="json")

    async def leftover() -> bool:
        return len(objects(await stored_subjects(nc, run.run_id, "r"))) == 1

    await eventually(leftover, timeout=60, message="the first run's result stored")
    doomed.kill()
    await cluster.start("executor")
    done = await wait_done(stub, run.run_id, timeout=120)
    assert done.state == pb.RUN_STATE_COMPLETED, done.error
    tasks = tasks_by_id(done)
    text = result(tasks["big"])["text"]
    # The re-run made another (random) text; the committed outcome names it, the dependent
    # got it, and the first run's leftover object confused nobody.
    assert result(tasks["check"]) == {
        "length": FIVE_MIB,
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
    assert len(objects(await stored_subjects(nc, run.run_id, "r"))) == 2

    await sweep_janitor(nc)  # the leftover goes with the run
    assert await stored_subjects(nc, run.run_id) == {}


async def forge(nc: Any, subject: str, message: Any, msg_id: str) -> None:
    ack = await nc.jetstream().publish(
        subject, message.SerializeToString(), headers={"Nats-Msg-Id": msg_id}
    )
    assert ack.seq


WAITING = json.dumps({"name": "forged", "tasks": [
    {"id": "slow", "method": "test/nobody"},
    {"id": "after", "method": "test/digest", "dependencies": ["slow"],
     "params": {"text": "${slow.result.text}"}},
]})  # fmt: skip


@pytest.mark.parametrize(
    ("stored", "error"),
    [
        (
            events_pb2.StoredValue(size=FIVE_MIB, sha256="ab" * 32, chunk_size=512 * 1024),
            f"the outcome refers to a stored result of {FIVE_MIB:,} bytes (sha256 abababababab…) "
            "that is not stored",
        ),
        (
            events_pb2.StoredValue(size=64 * MIB, sha256="ab" * 32, chunk_size=512 * 1024),
            "the outcome's stored result cannot be used: a stored value of 67,108,864 bytes is "
            f"outside 1..{32 * MIB:,} (STELLWERK_MAX_RESULT_BYTES)",
        ),
    ],
    ids=["unknown-object", "over-the-cap"],
)
async def test_a_forged_reference_in_an_outcome_fails_its_task(
    cluster: Cluster, nc: Any, stored: Any, error: str
) -> None:
    resolver = await cluster.start("resolver")
    stub = stub_for(resolver.address)
    run = await submit(stub, WAITING, document_format="json", allow_unregistered_methods=True)
    event = events_pb2.TaskEvent(
        format_version=names.EVENT_FORMAT_VERSION,
        run_id=run.run_id,
        task_id="slow",
        attempt=1,
        outcome=events_pb2.TASK_OUTCOME_SUCCEEDED,
        stored_result=stored,
        executor_id="forger",
    )
    await forge(
        nc,
        names.event_subject(run.run_id, "slow", 1),
        event,
        names.event_msg_id(run.run_id, "slow", 1, 0),
    )
    done = await wait_done(stub, run.run_id, timeout=30)
    tasks = tasks_by_id(done)
    assert tasks["slow"].state == pb.TASK_STATE_FAILED
    assert tasks["slow"].error == error
    assert tasks["slow"].result_json == "" and tasks["slow"].result_size == 0
    assert tasks["after"].state == pb.TASK_STATE_BLOCKED


async def test_a_dispatch_referring_to_unknown_stored_parameters_fails_its_attempt(
    cluster: Cluster, nc: Any
) -> None:
    resolver = await cluster.start("resolver")
    await cluster.start("executor")
    stub = stub_for(resolver.address)
    run = await submit(stub, WAITING, document_format="json", allow_unregistered_methods=True)
    forged = events_pb2.TaskDispatch(
        format_version=names.EVENT_FORMAT_VERSION,
        run_id=run.run_id,
        task_id="slow",
        attempt=1,
        generation=1,
        method="test/identity",  # served, so an executor takes it
        idempotency_key="forged",
        stored_params=events_pb2.StoredValue(size=MIB, sha256="cd" * 32, chunk_size=512 * 1024),
    )
    await forge(
        nc,
        names.dispatch_subject("test/identity", run.run_id, "slow"),
        forged,
        names.dispatch_msg_id(run.run_id, "slow", 1, 1),
    )
    done = await wait_done(stub, run.run_id, timeout=30)
    tasks = tasks_by_id(done)
    assert tasks["slow"].state == pb.TASK_STATE_FAILED
    assert tasks["slow"].error == (
        f"the stored parameters of task 'slow' (attempt 1, {MIB:,} bytes, sha256 cdcdcdcdcdcd…) "
        "cannot be read: chunk 0 of 2 is missing (removed with its run, or the reference is "
        "forged)"
    )
    assert tasks["slow"].attempts == 1  # not retried
    assert tasks["after"].state == pb.TASK_STATE_BLOCKED
