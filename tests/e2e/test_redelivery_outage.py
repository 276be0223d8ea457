"""A redelivered attempt whose checks meet a NATS outage is handed back at once, not left waiting
for a whole lease.

Before a redelivered attempt runs again, the executor counts the re-run in its task document
(the poison limit). In the cluster test a node's loss made that write fail; the failure escaped
the attempt ("attempt crashed the runner"), the delivery stayed unanswered, and its run stood
still until the lease ran out (20 s without progress)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from stellwerk.core import names
from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from tests.e2e.helpers import submit, tasks_by_id, wait_done
from tests.e2e.test_recovery import Cluster, cluster, js, stub_for  # noqa: F401 -- fixtures
from tests.support.polling import eventually

LEASE = 12.0


async def test_a_redelivery_that_cannot_be_counted_is_handed_back_not_held_for_a_lease(
    cluster: Cluster,  # noqa: F811
    js: Any,  # noqa: F811
) -> None:
    """What is injected: while the redelivery arrives, the task bucket's stream refuses every
    message over 64 bytes (``max_msg_size``), so the count's compare-and-set is refused by the
    server, as a write during a failover is. It is undone by restoring the stream's
    configuration; the attempt must then run within a few seconds, far less than a lease."""
    lease = {"STELLWERK_TASK_LEASE": str(LEASE)}
    resolver = await cluster.start("resolver")
    victim = await cluster.start("executor", STELLWERK_EXECUTOR_ID="victim", **lease)
    stub = await stub_for(resolver)
    run = await submit(
        stub, "tasks: [{id: slow, method: test/ledger, params: {seconds: 2, value: 2}}]"
    )

    async def started() -> bool:
        return bool(cluster.starts("slow"))

    await eventually(started, message="handler started")
    victim.kill()  # its delivery comes back after the lease, as a redelivery

    stream = f"KV_{names.TASKS_BUCKET}"
    original = (await js.stream_info(stream)).config
    await js.update_stream(dataclasses.replace(original, max_msg_size=64))
    try:
        heir = await cluster.start("executor", STELLWERK_EXECUTOR_ID="heir", **lease)

        async def refused() -> bool:
            return "cannot count the re-run" in heir.logs()

        await eventually(refused, timeout=3 * LEASE, message="the re-run count refused")
    finally:
        await js.update_stream(original)
    restored = time.monotonic()

    done = await wait_done(stub, run.run_id, timeout=60)
    waited = time.monotonic() - restored
    task = tasks_by_id(done)["slow"]
    assert done.state == pb.RUN_STATE_COMPLETED and task.executor_id == "heir"
    # Handed back with a one-second delay, then run (2 s): not held until the lease ran out.
    assert waited < LEASE / 2, f"{waited:.1f} s after the outage ended"
    assert "crashed the runner" not in heir.logs()
    starts = cluster.starts("slow")
    assert len(starts) == 2 and starts[0]["key"] == starts[1]["key"]
