"""``python -m tests.chaos [--long] [--seed N] [--scenario NAME ...]``: run chaos scenarios and
print their reports (``make chaos`` runs the long variant). Exit status 1 if any check failed."""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
from pathlib import Path

from tests.chaos.harness import run_scenario
from tests.chaos.report import Report, combined
from tests.chaos.scenarios import LONG, SHORT


def _log(text: str) -> None:
    print(text, flush=True)


async def _main(args: argparse.Namespace) -> int:
    table = LONG if args.long else SHORT
    names = args.scenario or list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        _log(f"unknown scenario(s) {unknown}; known: {', '.join(table)}")
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="stellwerk-chaos-"))
    _log(f"chaos {'long' if args.long else 'short'} run, seed {seed}, workdir {root}")
    reports: list[Report] = []
    for offset, name in enumerate(names):
        report = await run_scenario(
            table[name],
            seed=seed + offset,
            workdir=root / name,
            log=_log,
            strict_nats=args.strict_nats,
        )
        _log(report.render())
        reports.append(report)
    _log(combined(reports))
    passed = all(r.ok for r in reports)
    if passed and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if passed else 1


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--long", action="store_true", help="the long variant (several minutes)")
    parser.add_argument("--seed", type=int, help="seed of the random plan (default: random)")
    parser.add_argument("--scenario", action="append", help="run only this scenario (repeatable)")
    parser.add_argument("--workdir", help="where ledgers, stores and logs go (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the workdir even on success")
    parser.add_argument(
        "--strict-nats",
        action="store_true",
        help="also fail on executions overlapping across a nats-server crash",
    )
    sys.exit(asyncio.run(_main(parser.parse_args())))


if __name__ == "__main__":
    main()
