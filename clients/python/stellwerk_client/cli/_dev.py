"""``stellwerk dev``: the whole stack on this machine — nats-server and the three services.

Needs the server distribution (``stellwerk``); the CLI imports this module only when ``dev``
runs and the server is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from pydantic import ValidationError

from stellwerk.core.natsd import NatsServer
from stellwerk.core.settings import Settings

from .._health import HealthProbe
from ..errors import InvalidArgumentError, Problem
from ._children import Child, exit_description, stop_all
from ._common import EXIT_FAILED, EXIT_OK, report_problems

__all__ = ["cmd_dev", "dev_environment", "load_settings"]

_TICK = 0.1
_GRACE_EXTRA = 5.0
_SLOW_START = 60.0


@dataclass
class _Stop:
    """Set by SIGINT/SIGTERM; checked by every loop of the supervisor."""

    signal: int | None = None

    def handler(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signum


def dev_environment(nats_url: str, cwd: Path, base: dict[str, str]) -> dict[str, str]:
    """The children's environment: ``base`` plus the NATS URL and, unless set, script dirs.

    ``python/execute`` only runs scripts from ``STELLWERK_SCRIPT_DIRS``; pointing it at the
    examples of the current directory makes the examples work out of the box.
    """
    env = dict(base)
    env["STELLWERK_NATS_URL"] = nats_url
    if "STELLWERK_SCRIPT_DIRS" not in env:
        found = [str(d) for d in (cwd / "examples" / "scripts", cwd / "examples") if d.is_dir()]
        if found:
            env["STELLWERK_SCRIPT_DIRS"] = os.pathsep.join(found)
    return env


def load_settings() -> Settings:
    """The ``STELLWERK_*`` settings; ``InvalidArgumentError`` naming each bad variable."""
    try:
        return Settings()
    except ValidationError as error:
        problems = [
            Problem(None, "STELLWERK_" + "_".join(str(p) for p in e["loc"]).upper(), e["msg"])
            for e in error.errors(include_url=False, include_input=False)
        ]
        raise InvalidArgumentError(problems=problems) from None


def _listen_addresses(settings: Settings) -> dict[str, str]:
    return {
        "resolver": settings.resolver_listen,
        "executor": settings.executor_listen,
        "monitor": settings.monitor_listen,
    }


def _metrics(settings: Settings) -> str:
    """``--metrics-listen`` of every child: the host of ``STELLWERK_METRICS_LISTEN`` (default
    127.0.0.1) with port 0, so each service picks a free port and prints it."""
    host = settings.metrics_listen.rpartition(":")[0] or "127.0.0.1"
    return f"{host}:0"


def _probe_ready(child: Child) -> bool:
    """Whether ``child`` can be probed: its address is known (port 0 is known once reported)."""
    return child.reported or not child.address.endswith(":0")


def _start_nats(args: argparse.Namespace) -> NatsServer:
    store = Path(args.data_dir) / "nats" if args.data_dir else None
    return NatsServer.start_new(store, sync_always=args.sync_always, pdeathsig=True)


async def _supervise(
    children: list[Child], nats: NatsServer | None, nats_url: str, stop: _Stop
) -> int:
    """Announce readiness once every child is SERVING; return when one dies or we are told to."""
    probes: dict[str, HealthProbe] = {}
    waiting = {child.name for child in children}
    started = time.monotonic()
    warned = False
    try:
        while stop.signal is None:
            for child in children:
                code = child.process.poll()
                if code is not None:
                    print(f"stellwerk dev: {child.name} {exit_description(code)}", file=sys.stderr)
                    return EXIT_FAILED
            nats_process = None if nats is None else nats.process
            if nats_process is not None and (code := nats_process.poll()) is not None:
                print(f"stellwerk dev: nats-server {exit_description(code)}", file=sys.stderr)
                return EXIT_FAILED
            if waiting:
                for child in children:
                    if child.name not in waiting or not _probe_ready(child):
                        continue
                    probe = probes.setdefault(child.name, HealthProbe(child.bound_address))
                    if await probe.serving(deadline=0.5):
                        waiting.discard(child.name)
                if not waiting:
                    where = ", ".join(f"{c.name} {c.bound_address}" for c in children)
                    metrics = ", ".join(f"{c.name} {c.metrics}" for c in children if c.metrics)
                    print(
                        f"stellwerk dev ready: {where}, nats {nats_url}; metrics {metrics}",
                        flush=True,
                    )
                elif not warned and time.monotonic() - started > _SLOW_START:
                    warned = True
                    names = ", ".join(sorted(waiting))
                    print(f"stellwerk dev: still waiting for {names}", file=sys.stderr)
            await asyncio.sleep(_TICK)
        return EXIT_OK
    finally:
        for probe in probes.values():
            await probe.close()


def cmd_dev(args: argparse.Namespace) -> int:
    """Run nats-server (unless ``--nats-url``) and the three services until a signal or a death."""
    try:
        settings = load_settings()
    except InvalidArgumentError as exc:
        return report_problems(exc.problems, as_json=False)
    stop = _Stop()
    previous = {sig: signal.signal(sig, stop.handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    nats: NatsServer | None = None
    children: list[Child] = []
    try:
        if args.nats_url:
            nats_url = args.nats_url
            if args.data_dir or args.sync_always:
                print(
                    "stellwerk dev: --data-dir and --sync-always apply only to the embedded "
                    "nats-server; ignored with --nats-url",
                    file=sys.stderr,
                )
        else:
            try:
                nats = _start_nats(args)
            except (OSError, RuntimeError, TimeoutError) as exc:
                print(f"stellwerk dev: cannot start nats-server: {exc}", file=sys.stderr)
                return EXIT_FAILED
            nats_url = nats.url
        env = dev_environment(nats_url, Path.cwd(), dict(os.environ))
        for name, address in _listen_addresses(settings).items():
            if stop.signal is not None:
                return EXIT_OK
            # Each service its own /metrics port (a shared STELLWERK_METRICS_LISTEN would clash).
            flags = [
                "--nats-url",
                nats_url,
                "--listen",
                address,
                "--metrics-listen",
                _metrics(settings),
            ]
            children.append(Child.spawn(name, flags, env, address))
        # Only now: threads must not exist while children are forked with a preexec_fn.
        for child in children:
            child.start_pump()
        return asyncio.run(_supervise(children, nats, nats_url, stop))
    finally:
        stop_all([c.process for c in children], grace=settings.drain_timeout + _GRACE_EXTRA)
        if nats is not None:
            nats.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
