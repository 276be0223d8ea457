"""``python -m tests.cluster [PHASE ...] [--seed N]``: the failover phases on a real 3-node
cluster, with their measurements (``make cluster`` runs all of them)."""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
from pathlib import Path

from tests.cluster.failover import PHASES, run_phases


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster")
    parser.add_argument("phases", nargs="*", help=f"of {', '.join(PHASES)} (default: all)")
    parser.add_argument("--seed", type=int, default=random.SystemRandom().randrange(2**32))
    args = parser.parse_args()
    unknown = [p for p in args.phases if p not in PHASES]
    if unknown:
        parser.error(f"unknown phases {unknown}")
    workdir = Path(tempfile.mkdtemp(prefix="stellwerk-cluster-"))
    print(f"seed {args.seed}, work dir (logs, ledger; kept) {workdir}")
    results = asyncio.run(run_phases(workdir, args.phases or list(PHASES), seed=args.seed))
    for result in results:
        print(result.render())
    return 1 if any(r.problems for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
