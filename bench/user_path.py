"""The user's path: a chain of built-in ``mcp/tool.add`` tasks, each taking the result of the
one before (``a: '${t<i-1>.result}'``), followed the way a user follows it — ``stellwerk run``
as a subprocess, which watches the run over ``WatchRun`` — and, beside it, the same chain polled
with ``GetRun`` (nothing watches), so that the watch's cost shows as a ratio.

Both figures subtract a 1-task run of the same kind, so that neither the CLI's start-up nor a
submit enters the per-hop figure: ``(wall of the 200-task run - wall of a 1-task run) / 199``.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.client import Client

__all__ = ["CHAIN_TASKS", "measure", "reference_chain"]

CHAIN_TASKS = 200
METHOD = "mcp/tool.add"


def reference_chain(n: int) -> str:
    """A workflow file (JSON) of ``n`` chained ``mcp/tool.add`` tasks passing results on."""
    tasks: list[dict[str, Any]] = [{"id": "t0", "method": METHOD, "params": {"a": 0, "b": 1}}]
    tasks += [
        {
            "id": f"t{i}",
            "method": METHOD,
            "params": {"a": f"${{t{i - 1}.result}}", "b": 1},
            "dependencies": [f"t{i - 1}"],
        }
        for i in range(1, n)
    ]
    return json.dumps({"name": f"add-chain-{n}", "tasks": tasks})


def _cli() -> list[str]:
    # The console script installed beside this interpreter, as a user runs it.
    script = Path(sys.executable).with_name("stellwerk")
    if script.exists():
        return [str(script)]
    return [
        sys.executable,
        "-c",
        "import sys; from stellwerk_client.cli import main; sys.exit(main())",
    ]


async def cli_seconds(address: str, path: Path) -> float:
    """Wall seconds of ``stellwerk run FILE`` (output to a pipe: one line per change)."""
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *_cli(),
        "run",
        str(path),
        "--address",
        address,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"stellwerk run exited {proc.returncode}: {(out + err).decode()[-500:]}")
    return elapsed


async def polled_seconds(client: Client, doc: str) -> float:
    """Submit to the end time the resolver stamps, the end noticed by polling ``GetRun``."""
    started = time.time()
    run_id = await client.submit(doc)
    return await client.ended(run_id, within=300, interval=0.02) - started


async def measure(client: Client, address: str, rounds: int) -> dict[str, Any]:
    """``rounds`` rounds of: a 1-task and a 200-task run through the CLI, then both polled.
    Figures are per-round pairs' medians; the raw seconds are kept."""
    cli_hops: list[float] = []
    poll_hops: list[float] = []
    raw: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        one, chain = Path(tmp) / "one.json", Path(tmp) / "chain.json"
        one.write_text(reference_chain(1))
        chain.write_text(reference_chain(CHAIN_TASKS))
        await cli_seconds(address, one)  # warm up: the CLI's imports in the page cache
        for _ in range(rounds):
            c1 = await cli_seconds(address, one)
            cn = await cli_seconds(address, chain)
            p1 = await polled_seconds(client, reference_chain(1))
            pn = await polled_seconds(client, reference_chain(CHAIN_TASKS))
            cli_hops.append((cn - c1) / (CHAIN_TASKS - 1) * 1000)
            poll_hops.append((pn - p1) / (CHAIN_TASKS - 1) * 1000)
            raw.append({"cli_1_s": c1, "cli_n_s": cn, "poll_1_s": p1, "poll_n_s": pn})
    cli_hop, poll_hop = statistics.median(cli_hops), statistics.median(poll_hops)
    return {
        "cli_hop_ms": cli_hop,
        "cli_hop_samples_ms": cli_hops,
        "polled_hop_ms": poll_hop,
        "polled_hop_samples_ms": poll_hops,
        "watch_overhead": cli_hop / poll_hop if poll_hop > 0 else None,
        "user_path_seconds": raw,
    }
