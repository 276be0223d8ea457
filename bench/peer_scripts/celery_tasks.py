"""The Celery app of the benchmark: one no-op task; broker and result backend on the harness's
Redis (``BENCH_REDIS_URL``, databases 1 and 2)."""

from __future__ import annotations

import os

from celery import Celery  # type: ignore[import-not-found]

_BASE = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")

app = Celery("bench", broker=f"{_BASE}/1", backend=f"{_BASE}/2")
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
)


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]
def noop(*_args: object, **_kwargs: object) -> int:
    """Does nothing; returns a small int like the other systems' no-op."""
    return 0
