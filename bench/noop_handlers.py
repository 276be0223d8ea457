"""Handlers of the benchmark's executors (``STELLWERK_HANDLER_MODULES=bench.noop_handlers``)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from stellwerk import handler

RELEASE_POLL_S = 0.05


@handler("bench/noop", description="Does nothing; returns 0")
async def noop(params: dict[str, Any]) -> int:
    """The no-op task of every workload. A coroutine, so it runs on the executor's event loop;
    a plain ``def`` handler runs in a worker thread (so blocking code cannot stall heartbeats),
    which costs about 0.1 ms more per task here (``python -m bench.hops --method test/noop``)."""
    del params
    return 0


@handler("bench/wait", description="Waits until the file params['release'] exists")
async def wait(params: dict[str, Any]) -> int:
    """Holds a workflow open (W5) until the harness creates the release file."""
    path = str(params["release"])
    # Polling a file (one stat per 50 ms) is the simplest thing the harness can control from
    # another process; an Event cannot cross the process boundary.
    while not os.path.exists(path):  # noqa: ASYNC110, ASYNC240
        await asyncio.sleep(RELEASE_POLL_S)
    return 0
