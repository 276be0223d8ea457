"""The short chaos run inside ``make test``: each scenario of ``SHORT`` against real processes.

The seed is random unless ``CHAOS_SEED`` is set; it is printed (and part of the failure message)
so that a failing plan can be replayed with ``CHAOS_SEED=<seed> pytest -m chaos`` or
``python -m tests.chaos --seed <seed> --scenario <name>``. ``CHAOS_STRICT_NATS=1`` also fails
executions that overlap across a nats-server crash (reported apart by default, see ledger.py).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.chaos.harness import run_scenario
from tests.chaos.scenarios import SHORT

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]


def _seed() -> int:
    chosen = os.environ.get("CHAOS_SEED")
    return int(chosen) if chosen else random.SystemRandom().randrange(2**32)


@pytest.mark.parametrize("name", list(SHORT))
async def test_chaos_scenario(name: str, tmp_path: Path) -> None:
    seed = _seed()
    print(f"chaos scenario {name}: seed {seed}")
    strict = os.environ.get("CHAOS_STRICT_NATS") == "1"
    report = await run_scenario(SHORT[name], seed=seed, workdir=tmp_path / name, strict_nats=strict)
    print(report.render())
    assert report.ok, report.render()
    assert report.workflows_total > 0
    assert report.executions >= report.tasks_to_run > 0  # the ledger saw every task that ran
    if SHORT[name].kills:
        assert sum(report.kills.values()) == SHORT[name].kills
    if SHORT[name].drop_events:
        assert report.re_executions["dropped"] > 0, "the fault switch dropped nothing"
    if SHORT[name].fan_in:
        assert report.extra["fan-in join executions"] == "1"
