"""Generated hostile input against a live stack: hundreds of malformed documents, structured
specs, ids, page tokens, raw bytes and CLI arguments, family by family. After each family:
no call answered UNKNOWN, INTERNAL, RESOURCE_EXHAUSTED (or anything but OK, INVALID_ARGUMENT and
NOT_FOUND), every service still serves and runs a workflow, and nothing was left behind in KV
or the streams except by the submits that were accepted.

The generator is seeded (``STELLWERK_FUZZ_SEED``, printed on failure), so a failure replays.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest
from nats.aio.client import Client as NatsClient

from stellwerk.core import names
from stellwerk.core.kvscan import list_keys
from stellwerk_api.execution.v1 import executor_service_pb2 as executor_api
from stellwerk_api.execution.v1 import executor_service_pb2_grpc, worker_service_pb2_grpc
from stellwerk_api.execution.v1 import worker_service_pb2 as worker_api
from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2 as api
from stellwerk_client.cli import main
from tests.e2e.conftest import Stack, serving
from tests.e2e.helpers import wait_done
from tests.e2e.test_hostile_input import HOSTILE_IDS, TRAILER_BUDGET, served_rpcs, trailer_size

SEED = int(os.environ.get("STELLWERK_FUZZ_SEED", "20261207"))
EXAMPLE = (
    Path(__file__).resolve().parents[2] / "examples" / "simple_mcp_workflow.yaml"
).read_text()
REFUSALS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
ECHO_BOUND = 160  # a refusal of one id: its words and the id cut to 60 characters (shorten)
ALLOWED = {grpc.StatusCode.OK, *REFUSALS}

HOSTILE_STRINGS = [
    "",
    " ",
    "x" * 5000,
    "ü" * 300,
    "\x00",
    "a\tb",
    "a\nb",
    "\\",
    "%",
    '"',
    ",",
    ".",
    "..",
    "a.b",
    "*",
    ">",
    "${",
    "${a}",
    "$${a}",
    "${a.result.0}",
    "}",
    "\ud7ff",
    "\u202e",
    "🙂" * 50,
    "mcp/tool.add",
    "nope/missing",
    "0" * 22,
    "m" * 10_000,
]
SNIPPETS = [
    b"\x00",
    b"\xff\xfe",
    b"${",
    b"[" * 2000,
    b"{" * 2000,
    b"&a [*a, *a]",
    b"!!python/object:os.system",
    b"\n  - ",
    b": :",
    b"1e999",
    b"9" * 5000,
    "ü".encode(),
    b"\t",
    b"'",
    b'"',
]


@dataclass
class Outcomes:
    """What a family of requests produced."""

    codes: dict[str, int] = field(default_factory=dict)
    bad: list[str] = field(default_factory=list)
    accepted_runs: set[str] = field(default_factory=set)
    accepted_requests: set[str] = field(default_factory=set)
    sent: int = 0

    def record(
        self,
        what: str,
        code: grpc.StatusCode,
        exc: Any = None,
        allowed: set[grpc.StatusCode] = ALLOWED,
        longest: int | None = None,
    ) -> None:
        self.sent += 1
        self.codes[code.name] = self.codes.get(code.name, 0) + 1
        detail = (exc.details() or "") if exc is not None else ""
        if code not in allowed:
            self.bad.append(f"{what}: {code.name} {detail[:200]}")
        elif longest is not None and len(detail) > longest:
            self.bad.append(f"{what}: a message of {len(detail)} characters: {detail[:200]}")
        elif exc is not None and trailer_size(exc) >= TRAILER_BUDGET:
            self.bad.append(f"{what}: trailers of {trailer_size(exc)} bytes")


async def _call(
    outcomes: Outcomes,
    what: str,
    call: Any,
    allowed: set[grpc.StatusCode] = ALLOWED,
    longest: int | None = None,
) -> Any:
    try:
        reply = await call
    except grpc.aio.AioRpcError as exc:
        outcomes.record(what, exc.code(), exc, allowed, longest)
        return None
    outcomes.record(what, grpc.StatusCode.OK, None, allowed, longest)
    return reply


async def _stream(
    outcomes: Outcomes, what: str, call: Any, allowed: set[grpc.StatusCode] = ALLOWED
) -> None:
    """Read a stream's first message, then cancel it (a run may go on for a while)."""
    try:
        await call.read()
    except grpc.aio.AioRpcError as exc:
        outcomes.record(what, exc.code(), exc, allowed)
        return
    outcomes.record(what, grpc.StatusCode.OK, None, allowed)
    call.cancel()


def _mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        at = rng.randrange(len(out) + 1)
        if choice < 0.3 and out:
            out[min(at, len(out) - 1)] = rng.randrange(256)
        elif choice < 0.6:
            out[at:at] = rng.choice(SNIPPETS)
        elif choice < 0.8:
            del out[at : at + rng.randint(1, 40)]
        else:
            start = rng.randrange(len(out) or 1)
            out[at:at] = out[start : start + rng.randint(1, 200)]
    return bytes(out)


def _document_requests(rng: random.Random, count: int) -> list[tuple[str, Any, bool]]:
    """(label, StartRunRequest, validate-too) from byte mutations of real documents."""
    sources = [EXAMPLE.encode(), json.dumps(json.loads(json.dumps(_json_example()))).encode()]
    requests = []
    for i in range(count):
        data = _mutate(rng, rng.choice(sources))
        text = data.decode("utf-8", rng.choice(["replace", "ignore", "surrogateescape"]))
        text = text.encode("utf-8", "replace").decode("utf-8")
        fmt = rng.choice(["", "yaml", "json", "yml", "xml", "YAML"])
        request_id = f"fuzz-{SEED}-{i}" if rng.random() < 0.4 else ""
        requests.append(
            (
                f"document #{i}",
                api.StartRunRequest(document=text, document_format=fmt, request_id=request_id),
                rng.random() < 0.5,
            )
        )
    return requests


def _json_example() -> dict[str, Any]:
    return {
        "name": "fuzz",
        "tasks": [
            {"id": "a", "method": "mcp/tool.add", "params": {"a": 1, "b": 2}},
            {
                "id": "b",
                "dependencies": ["a"],
                "method": "mcp/tool.echo",
                "params": {"message": "sum ${a}"},
            },
            {
                "id": "c",
                "dependencies": ["a", "b"],
                "method": "mcp/tool.concat",
                "params": {"strings": ["${a.result}", "${b.response}"]},
            },
        ],
    }


def _hostile(rng: random.Random) -> str:
    return rng.choice(HOSTILE_STRINGS)


def _params_json(rng: random.Random) -> str:
    return rng.choice(
        [
            "",
            "{",
            "[" * 10_000 + "]" * 10_000,
            '{"a": NaN}',
            '{"a": 1e999}',
            '{"a": ' + "9" * 5000 + "}",
            '{"a": 1, "a": 2}',
            '"just a string"',
            "null",
            '{"a": "${missing.result}"}',
            '{"x": "\\ud800"}',
            json.dumps({"k": "v" * rng.randint(0, 2000)}),
            '{"a": 1, "b": 2}',
        ]
    )


def _structured_requests(rng: random.Random, count: int) -> list[tuple[str, Any, bool]]:
    requests = []
    for i in range(count):
        tasks = []
        for t in range(rng.randint(0, 4)):
            task = pb.TaskSpec(
                id=_hostile(rng) if rng.random() < 0.5 else f"t{t}",
                name=_hostile(rng) if rng.random() < 0.3 else "",
                method=_hostile(rng) if rng.random() < 0.5 else "mcp/tool.add",
                protocol=_hostile(rng) if rng.random() < 0.2 else "",
                params_json=_params_json(rng),
                metadata_json=_params_json(rng) if rng.random() < 0.3 else "",
                priority=rng.choice([0, 1, 2, 3, 4, 99, -5]),  # type: ignore[arg-type]
                dependencies=[_hostile(rng) for _ in range(rng.randint(0, 3))],
            )
            if rng.random() < 0.3:
                task.timeout.seconds = rng.choice([-1, 0, 1, 10**11])
            if rng.random() < 0.3:
                task.retry.max_attempts = rng.choice([-1, 0, 1, 11, 2**31 - 1])
                task.retry.backoff = rng.choice([0, 1, 2, 3, 42])  # type: ignore[assignment]
                task.retry.jitter = rng.random() < 0.5
                task.retry.base_delay.seconds = rng.choice([-5, 0, 3, 10**11])
                task.retry.max_delay.nanos = rng.choice([-1, 0, 999_999_999])
            tasks.append(task)
        spec = pb.WorkflowSpec(
            id=_hostile(rng) if rng.random() < 0.3 else "",
            name=_hostile(rng),
            description=_hostile(rng) if rng.random() < 0.3 else "",
            metadata_json=_params_json(rng) if rng.random() < 0.3 else "",
            tasks=tasks,
        )
        fmt = rng.choice(["", "xml", "json"])
        request = api.StartRunRequest(workflow=spec, document_format=fmt)
        requests.append((f"structured #{i}", request, rng.random() < 0.5))
    return requests


async def _submit_family(
    stub: Any, requests: list[tuple[str, Any, bool]], outcomes: Outcomes
) -> None:
    for label, request, validate_too in requests:
        if validate_too:
            validation = api.ValidateWorkflowRequest(
                document_format=request.document_format,
                allow_unregistered_methods=request.allow_unregistered_methods,
            )
            if request.WhichOneof("source") == "workflow":
                validation.workflow.CopyFrom(request.workflow)
            else:
                validation.document = request.document
            await _call(
                outcomes, f"validate {label}", stub.ValidateWorkflow(validation, timeout=30)
            )
        reply = await _call(outcomes, f"submit {label}", stub.StartRun(request, timeout=30))
        if reply is not None:
            outcomes.accepted_runs.add(reply.run.run_id)
            if request.request_id:
                outcomes.accepted_requests.add(request.request_id)


def _random_text(rng: random.Random) -> str:
    size = rng.choice([1, 10, 100, 5000])
    return "".join(
        chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0xD7FF)])) for _ in range(size)
    )


async def _read_family(stub: Any, rng: random.Random, outcomes: Outcomes, count: int) -> None:
    for i in range(count):
        run_id = rng.choice([*HOSTILE_IDS, _random_text(rng), _hostile(rng)])
        await _call(
            outcomes, f"get #{i}", stub.GetRun(api.GetRunRequest(run_id=run_id), timeout=10)
        )
        await _stream(
            outcomes,
            f"watch #{i}",
            stub.WatchRun(api.WatchRunRequest(run_id=run_id), timeout=10),
        )
        token = rng.choice(
            [
                _random_text(rng),
                base64.urlsafe_b64encode(_random_text(rng).encode()).decode(),
                base64.urlsafe_b64encode(
                    json.dumps({"after": _hostile(rng), "state": ""}).encode()
                ).decode(),
                base64.urlsafe_b64encode(b"[" * rng.randint(1, 10_000)).decode(),
            ]
        )
        listing = api.ListRunsRequest(
            page_size=rng.choice([-1, 0, 1, 10**6, -(2**31)]),
            page_token=token if rng.random() < 0.7 else "",
            state=rng.choice([0, 1, 2, 3, 4, 77]),  # type: ignore[arg-type]
        )
        await _call(outcomes, f"list #{i}", stub.ListRuns(listing, timeout=10))


def _hostile_id(rng: random.Random) -> str:
    """An id no run, task or checkpoint has: long (4,000+ characters, past NATS's control
    line), unicode, control characters, and every character KV keys and subjects refuse."""
    return rng.choice(
        [
            *HOSTILE_IDS,
            _hostile(rng),
            _random_text(rng),
            rng.choice(["x", "ü", "\t", "\x00", "\\", "%", '"', ","]) * rng.randint(4000, 9000),
            "0" * 21 + rng.choice(["\t", "\x00", "\\", "%", '"', ",", "ü", "."]),
        ]
    )


async def _operator_family(stub: Any, rng: random.Random, outcomes: Outcomes, count: int) -> None:
    """The id-taking operator and reading calls (cancel, retry, checkpoints, restore,
    explain) with hostile ids: each must be refused, NOT_FOUND or INVALID_ARGUMENT, and the
    run they name stays as it was."""
    reply = await stub.StartRun(
        api.StartRunRequest(document=json.dumps(_json_example()), document_format="json"),
        timeout=30,
    )
    ended = reply.run.run_id  # a real run, for the calls that name a task or a request
    outcomes.accepted_runs.add(ended)
    await wait_done(stub, ended, timeout=60)
    for i, bad in enumerate([*_every_class(), *(_hostile_id(rng) for _ in range(count))]):
        long_request = "r" * rng.randint(257, 5000) + bad
        calls = {
            "cancel": stub.CancelRun(api.CancelRunRequest(run_id=bad), timeout=10),
            "retry": stub.RetryRun(api.RetryRunRequest(run_id=bad), timeout=10),
            "retry from": stub.RetryRun(
                api.RetryRunRequest(run_id=ended, from_task_ids=["a", bad]), timeout=10
            ),
            "retry request": stub.RetryRun(
                api.RetryRunRequest(run_id=ended, request_id=long_request), timeout=10
            ),
            "checkpoint": stub.CreateCheckpoint(
                api.CreateCheckpointRequest(run_id=bad), timeout=10
            ),
            "checkpoint request": stub.CreateCheckpoint(
                api.CreateCheckpointRequest(run_id=ended, request_id=long_request), timeout=10
            ),
            "list checkpoints": stub.ListCheckpoints(
                api.ListCheckpointsRequest(run_id=bad), timeout=10
            ),
            "restore": stub.RestoreCheckpoint(
                api.RestoreCheckpointRequest(checkpoint_id=bad), timeout=10
            ),
            "explain": stub.ExplainRun(api.ExplainRunRequest(run_id=bad), timeout=10),
        }
        for name, call in calls.items():
            # Refused, and the id echoed cut short (``errors.shorten``), not in full.
            await _call(outcomes, f"{name} #{i} {bad[:40]!r}", call, REFUSALS, longest=ECHO_BOUND)
    # The run they named is as it was: ended, never restarted, no checkpoint taken.
    header = (await stub.GetRun(api.GetRunRequest(run_id=ended), timeout=30)).run
    assert header.state == pb.RUN_STATE_COMPLETED and header.restarts == 0, header
    listed = await stub.ListCheckpoints(api.ListCheckpointsRequest(run_id=ended), timeout=30)
    assert not listed.checkpoints


def _every_class() -> list[str]:
    """Ids of every hostile class, once each: long (4,000+ characters, past NATS's control
    line), unicode, tab, NUL, backslash, %, quote, comma, and the shapes KV keys refuse."""
    return [
        *HOSTILE_IDS,
        "t" * 200,  # the longest task id there can be: echoed cut short all the same
        *(c * 4500 for c in ["x", "ü", "\t", "\x00", "\\", "%", '"', ","]),
    ]


async def _executor_family(
    stack: Stack, rng: random.Random, outcomes: Outcomes, count: int
) -> None:
    """The executor's edges: ListMethods pages and tokens, and worker registrations
    (``WorkerService.Connect``) whose methods, worker id or sdk are hostile — refused, so that
    no method consumer or registration is made for them."""
    async with grpc.aio.insecure_channel(stack.executors[0].address) as channel:
        executors = executor_service_pb2_grpc.ExecutorServiceStub(channel)  # type: ignore[no-untyped-call]
        workers = worker_service_pb2_grpc.WorkerServiceStub(channel)  # type: ignore[no-untyped-call]
        for i in range(count):
            listing = executor_api.ListMethodsRequest(
                page_size=rng.choice([-1, 0, 1, 10**6, -(2**31)]),
                page_token=_hostile_id(rng) if rng.random() < 0.8 else "",
            )
            await _call(outcomes, f"list methods #{i}", executors.ListMethods(listing, timeout=10))
        hostile_methods = [m for m in _every_class() if not m.startswith("t")]  # "t" * 200: valid
        for i, bad in enumerate(hostile_methods):
            long = (bad or "w") * (201 // max(1, len(bad)) + 1)  # past 200 characters
            registrations = [
                worker_api.WorkerRegistration(methods=["ok/fuzz-never", bad]),
                worker_api.WorkerRegistration(worker_id=long, methods=["ok/fuzz-never"]),
                worker_api.WorkerRegistration(sdk=long, methods=["ok/fuzz-never"]),
            ]
            for j, registration in enumerate(registrations):
                call = workers.Connect(
                    iter([worker_api.ConnectRequest(register=registration)]), timeout=10
                )
                await _stream(outcomes, f"register #{i}.{j} {bad[:40]!r}", call, REFUSALS)


async def _raw_family(stack: Stack, rng: random.Random, outcomes: Outcomes, rounds: int) -> None:
    """Random bytes to every RPC every server serves (found by server reflection)."""
    rpcs = await served_rpcs(stack)
    for i in range(rounds):
        rpc = rng.choice(rpcs)
        data = bytes(rng.randrange(256) for _ in range(rng.choice([1, 5, 50, 500])))
        async with grpc.aio.insecure_channel(rpc.address) as channel:
            call = rpc.call(channel, data)
            if rpc.server_streaming:
                await _stream(outcomes, f"raw {rpc.method} #{i}", call)
            else:
                await _call(outcomes, f"raw {rpc.method} #{i}", call)


@dataclass
class Leftovers:
    """What KV and the streams hold, to tell what a family added."""

    runs: set[str]
    tasks: set[str]
    checkpoints: set[str]
    events: set[str]
    dispatches: set[str]
    blobs: set[str]
    consumers: set[str]


async def _holdings(nc: NatsClient) -> Leftovers:
    js = nc.jetstream()
    runs_kv = await js.key_value(names.RUNS_BUCKET)
    tasks_kv = await js.key_value(names.TASKS_BUCKET)
    checkpoints_kv = await js.key_value(names.CHECKPOINTS_BUCKET)

    async def subjects(stream: str) -> set[str]:
        info = await js.stream_info(stream, subjects_filter=">")
        return set((info.state.subjects or {}).keys())

    return Leftovers(
        runs=set(await list_keys(runs_kv, ">")),
        tasks=set(await list_keys(tasks_kv, ">")),
        checkpoints=set(await list_keys(checkpoints_kv, ">")),
        events=await subjects(names.EVENTS_STREAM),
        dispatches=await subjects(names.DISPATCH_STREAM),
        blobs=await subjects(names.BLOBS_STREAM),
        consumers={c.name for c in await js.consumers_info(names.DISPATCH_STREAM) if c.name},
    )


def _owner(key: str) -> str | None:
    """The run a key belongs to (``None``: a request-id key, checked separately, or a key of
    the installation rather than of a run: a method's breaker, a resolver's retry count)."""
    if key.startswith(("run.", "order.", "staging.", "cancel.", "restart.")):
        return key.split(".", 1)[1]
    if key.startswith(("fin.", "breaker.run.")):
        return key.split(".", 2)[2]
    if key.startswith(("req.", "breaker.method.", "resolution-retries.")):
        return None
    return key.split(".", 1)[0]


async def _check_after(
    family: str, stack: Stack, stub: Any, nc: NatsClient, before: Leftovers, outcomes: Outcomes
) -> None:
    assert not outcomes.bad, f"{family} (seed {SEED}):\n" + "\n".join(outcomes.bad[:20])
    for proc in [stack.resolver, *stack.executors, stack.monitor]:
        assert await serving(proc.address), f"{proc.service} stopped serving after {family}"
    after = await _holdings(nc)
    new_runs = after.runs - before.runs
    assert not [k for k in new_runs if k.startswith("staging.")], f"{family}: staging left"
    strays = {
        k for k in new_runs if (o := _owner(k)) is not None and o not in outcomes.accepted_runs
    }
    assert not strays, f"{family}: run keys of refused submits: {sorted(strays)[:5]}"
    requests = {names.request_key(r) for r in outcomes.accepted_requests}
    stray_requests = {k for k in new_runs if k.startswith("req.") and k not in requests}
    assert not stray_requests, f"{family}: request keys of refused submits"
    stray_tasks = {k for k in after.tasks - before.tasks if _owner(k) not in outcomes.accepted_runs}
    assert not stray_tasks, f"{family}: task documents of refused submits"
    stray_events = {
        s
        for s in after.events - before.events
        if names.run_of_event_subject(s) not in outcomes.accepted_runs
    }
    assert not stray_events, f"{family}: events of refused submits"
    stray_checkpoints = {
        k for k in after.checkpoints - before.checkpoints if _owner(k) not in outcomes.accepted_runs
    }
    assert not stray_checkpoints, f"{family}: checkpoints of refused requests"
    stray_messages = {
        s
        for s in (after.dispatches - before.dispatches) | (after.blobs - before.blobs)
        if s.split(".")[3 if s.startswith("stellwerk.dispatch.") else 2]
        not in outcomes.accepted_runs
    }
    assert not stray_messages, f"{family}: dispatches or stored values of refused requests"
    new_consumers = after.consumers - before.consumers
    assert not new_consumers, f"{family}: method consumers made: {sorted(new_consumers)[:5]}"
    # The resolver still does real work.
    reply = await stub.StartRun(
        api.StartRunRequest(document=json.dumps(_json_example()), document_format="json"),
        timeout=30,
    )
    done = await wait_done(stub, reply.run.run_id, timeout=60)
    assert done.state == pb.RUN_STATE_COMPLETED, f"after {family}: {done}"


@pytest.fixture
async def nats_client(ready_stack: Stack) -> AsyncIterator[NatsClient]:
    nc = await nats.connect(ready_stack.nats.url)
    try:
        yield nc
    finally:
        await nc.close()


Family = Callable[[Any, random.Random, Outcomes], Any]


async def test_generated_hostile_requests_change_nothing_and_disable_nothing(
    ready_stack: Stack, workflows: Any, nats_client: NatsClient
) -> None:
    rng = random.Random(SEED)
    families: dict[str, Family] = {
        "mutated documents": lambda s, r, o: _submit_family(s, _document_requests(r, 160), o),
        "structured specs": lambda s, r, o: _submit_family(s, _structured_requests(r, 120), o),
        "ids, tokens and pages": lambda s, r, o: _read_family(s, r, o, 60),
        "operator and explain ids": lambda s, r, o: _operator_family(s, r, o, 20),
        "executor edges": lambda s, r, o: _executor_family(ready_stack, r, o, 40),
        "raw bytes": lambda s, r, o: _raw_family(ready_stack, r, o, 120),
    }
    total = 0
    for family, run in families.items():
        before = await _holdings(nats_client)
        outcomes = Outcomes()
        await run(workflows, rng, outcomes)
        total += outcomes.sent
        runs = len(outcomes.accepted_runs)
        print(f"{family}: {outcomes.sent} requests, {outcomes.codes}, {runs} runs accepted")
        await _check_after(family, ready_stack, workflows, nats_client, before, outcomes)
    assert total >= 500, total


def _cli_arguments(rng: random.Random, address: str, tmp_path: Path) -> list[list[str]]:
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(rng.randrange(256) for _ in range(300)))
    directory = tmp_path / "dir.yaml"
    directory.mkdir()
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(
        "name: u\ntasks:\n" + "".join(f"  - id: t{i}\n    method: no/such{i}\n" for i in range(50))
    )
    files = [str(binary), str(directory), str(deep), str(unknown), str(tmp_path / "missing.yaml")]
    hostile_ids = [*HOSTILE_IDS[1:], "\udcff\udcfe", "-x"]
    argv: list[list[str]] = []
    operator = ["cancel", "retry", "checkpoint", "checkpoints", "restore", "explain"]
    for name in operator:  # every id-taking command with an id of every class, once
        argv.extend([name, bad, "--address", address] for bad in hostile_ids)
    for _ in range(40):
        choice = rng.randrange(5)
        if choice == 0:
            argv.append(["status", rng.choice(hostile_ids), "--address", address])
        elif choice == 1:
            argv.append(["watch", rng.choice(hostile_ids), "--address", address, "--timeout", "5"])
        elif choice == 2:
            argv.append(
                ["list", "--page-size", rng.choice(["-1", "x", "0", "1e9"]), "--address", address]
            )
        elif choice == 3:
            argv.append(
                [
                    "run",
                    rng.choice(files),
                    "--address",
                    address,
                    "--timeout",
                    rng.choice(["5", "nan", "-1", "inf"]),
                ]
            )
        else:
            argv.append(["validate", rng.choice(files), "--address", address])
    return argv


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse refusing a flag
        return int(exc.code or 0)


async def test_generated_hostile_cli_arguments_exit_2(
    ready_stack: Stack, workflows: Any, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    for argv in _cli_arguments(rng, ready_stack.resolver.address, tmp_path):
        code = await asyncio.to_thread(_exit_code, argv)
        assert code == 2, f"{argv!r} exited {code} (seed {SEED})"
    assert await serving(ready_stack.resolver.address)
