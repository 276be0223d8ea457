"""Scale-out and failover on a real 3-node JetStream cluster (see failover.py).

The short form (in ``make test``) kills the node that leads most of Stellwerk's streams and
consumers while workflows run. The long form (``make cluster``, or ``STELLWERK_CLUSTER_LONG=1``)
then kills a follower, then the leader together with a resolver and an executor. Each phase
prints its time without progress. ``CLUSTER_SEED`` replays a run's workflows.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.cluster.failover import run_phases

LONG = os.environ.get("STELLWERK_CLUSTER_LONG") == "1"


def _seed() -> int:
    chosen = os.environ.get("CLUSTER_SEED")
    return int(chosen) if chosen else random.SystemRandom().randrange(2**32)


async def _check(names: list[str], tmp_path: Path) -> None:
    seed = _seed()
    print(f"cluster failover: seed {seed}")
    results = await run_phases(tmp_path / "stack", names, seed=seed)
    for result in results:
        print(result.render())
    for result in results:
        assert not result.problems, result.render()
        assert result.runs > 0 and result.tasks_started > 0
        # An executor killed mid-handler explains a re-run; nothing else may.
        assert set(result.re_executions) <= {"killed", "killed_after_handler"}, result.render()


@pytest.mark.timeout(150)
async def test_stream_leader_killed_while_workflows_run(tmp_path: Path) -> None:
    await _check(["leader"], tmp_path)


@pytest.mark.timeout(400)
@pytest.mark.skipif(not LONG, reason="long form: make cluster (STELLWERK_CLUSTER_LONG=1)")
async def test_leader_follower_and_services_killed_in_turn(tmp_path: Path) -> None:
    await _check(["leader", "follower", "leader+services"], tmp_path)
