"""``stellwerk health`` and ``stellwerk explain ID``: what the installation and one run are
waiting for, asked of the resolver's address (it answers the monitor's API as well)."""

from __future__ import annotations

import argparse

from stellwerk_api.monitoring.v1 import monitor_service_pb2 as mon
from stellwerk_api.monitoring.v1 import monitor_service_pb2_grpc as mon_grpc
from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2 as api
from stellwerk_api.workflow.v1 import workflow_service_pb2_grpc as api_grpc

from .._channel import DEFAULT_TIMEOUT, call, default_address, open_channel
from ..errors import NotFoundError, StellwerkError, shorten
from ..wire import is_run_id
from ._common import EXIT_FAILED, EXIT_OK, emit_json, exit_for_error

__all__ = ["cmd_explain", "cmd_health"]


async def cmd_health(args: argparse.Namespace) -> int:
    """Print the health report; exit 0 when every check passes, 1 when one fails."""
    address = args.address or ""
    try:
        address = address or default_address()
        async with open_channel(address) as channel:
            stub = mon_grpc.MonitorServiceStub(channel)
            report = await call(
                stub.GetHealthReport(mon.GetHealthReportRequest(), timeout=DEFAULT_TIMEOUT)
            )
            overview = await call(
                stub.GetOverview(mon.GetOverviewRequest(), timeout=DEFAULT_TIMEOUT)
            )
    except StellwerkError as exc:
        return exit_for_error(exc, prog="stellwerk health", address=address, as_json=args.json)
    if args.json:
        emit_json(
            {
                "healthy": report.healthy,
                "checks": [
                    {
                        "name": c.name,
                        "ok": c.status == mon.CHECK_STATUS_OK,
                        "summary": c.summary,
                        "details": list(c.details),
                    }
                    for c in report.checks
                ],
                "queues": [
                    {
                        "stream": q.stream,
                        "consumer": q.consumer,
                        "pending": q.pending,
                        "ack_pending": q.ack_pending,
                    }
                    for q in report.queues
                ],
                "breakers": [_breaker_json(b) for b in overview.breakers],
                "resolution_retries": overview.resolution_retries,
            }
        )
    else:
        print("healthy" if report.healthy else "UNHEALTHY")
        for check in report.checks:
            mark = "ok  " if check.status == mon.CHECK_STATUS_OK else "FAIL"
            print(f"  {mark} {check.name}: {check.summary}")
            for line in check.details:
                print(f"         {line}")
        for queue in report.queues:
            print(f"  queue {queue.stream}/{queue.consumer}: {queue.pending} pending, "
                  f"{queue.ack_pending} unacknowledged")  # fmt: skip
        for breaker in overview.breakers:
            print(f"  {_breaker_line(breaker)}")
        print(f"  resolution retries: {overview.resolution_retries}")
    return EXIT_OK if report.healthy else EXIT_FAILED


def _breaker_line(breaker: pb.CircuitBreaker) -> str:
    """One breaker that is not CLOSED, for people."""
    state = pb.BreakerState.Name(breaker.state).removeprefix("BREAKER_STATE_")
    line = f"breaker {breaker.scope}: {state} ({breaker.failures} failures"
    if breaker.HasField("retry_time"):
        line += f", trial at {breaker.retry_time.ToDatetime().strftime('%H:%M:%S')}Z"
    return line + ")"


def _breaker_json(breaker: pb.CircuitBreaker) -> dict[str, object]:
    return {
        "scope": breaker.scope,
        "state": pb.BreakerState.Name(breaker.state).removeprefix("BREAKER_STATE_"),
        "failures": breaker.failures,
        "retry_time": breaker.retry_time.ToJsonString() if breaker.HasField("retry_time") else None,
    }


async def cmd_explain(args: argparse.Namespace) -> int:
    """Print, for every task of the run that has not ended, what it waits for."""
    prog = "stellwerk explain"
    if not is_run_id(args.id):
        error = NotFoundError(f"no run {shorten(args.id)} (run ids are 22 lowercase hex digits)")
        return exit_for_error(error, prog=prog, address="", as_json=args.json)
    address = args.address or ""
    try:
        address = address or default_address()
        async with open_channel(address) as channel:
            stub = api_grpc.WorkflowServiceStub(channel)
            reply = await call(
                stub.ExplainRun(api.ExplainRunRequest(run_id=args.id), timeout=DEFAULT_TIMEOUT)
            )
    except StellwerkError as exc:
        return exit_for_error(exc, prog=prog, address=address, as_json=args.json)
    reasons = api.WaitReason
    if args.json:
        emit_json(
            {
                "run_id": reply.run.run_id,
                "tasks": {
                    t.task_id: {
                        "reason": reasons.Name(t.reason).removeprefix("WAIT_REASON_"),
                        "summary": t.summary,
                        "waiting_for": list(t.waiting_for),
                        "executor": t.executor_id or None,
                        "queue_position": t.queue_position,
                    }
                    for t in reply.tasks
                },
                "breakers": [_breaker_json(b) for b in reply.breakers],
            }
        )
        return EXIT_OK
    state = pb.RunState.Name(reply.run.state).removeprefix("RUN_STATE_")
    print(f"run {reply.run.run_id} ({reply.run.workflow_name}): {state}")
    for breaker in reply.breakers:
        print(f"  {_breaker_line(breaker)}")
    if not reply.tasks:
        print("  every task has ended")
    width = max((len(t.task_id) for t in reply.tasks), default=0)
    for task in reply.tasks:
        reason = reasons.Name(task.reason).removeprefix("WAIT_REASON_")
        print(f"  {task.task_id:<{width}}  {reason:<12} {task.summary}")
    return EXIT_OK
