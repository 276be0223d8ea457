"""A real 3-node NATS JetStream cluster on loopback, started from the deployment's own
configuration (``deploy/nats/nats.conf``: ``sync_interval: always``, ``max_payload``, cluster
name) with only addresses, ports, routes, node names and store dirs overridden by flags.

Nodes keep their ports and stores across a SIGKILL and restart, as a pod or container would.
The leaders of every stream and consumer are read from each node's monitoring endpoint
(``/jsz?accounts=true&streams=true&consumers=true``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stellwerk.core.natsd import find_binary
from tests.chaos.cluster import stable_port
from tests.support.processes import ROOT

__all__ = ["DEPLOY_NATS_CONFIG", "NatsCluster", "NatsNode"]

DEPLOY_NATS_CONFIG = ROOT / "deploy" / "nats" / "nats.conf"


def _get_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return json.load(reply)


@dataclass
class NatsNode:
    """One nats-server of the cluster."""

    name: str
    store: Path
    port: int = field(default_factory=stable_port)
    http_port: int = field(default_factory=stable_port)
    cluster_port: int = field(default_factory=stable_port)
    process: subprocess.Popen[bytes] | None = None
    pids: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Client URL."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def route(self) -> str:
        """Route URL (other nodes solicit it)."""
        return f"nats://127.0.0.1:{self.cluster_port}"

    @property
    def alive(self) -> bool:
        """Whether the process runs."""
        return self.process is not None and self.process.poll() is None

    def command(self, routes: list[str], config: Path) -> list[str]:
        """The argv: the deployment's config, loopback addresses and this node's ports."""
        return [
            find_binary(),
            "-c",
            str(config),
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-m",
            str(self.http_port),
            "--cluster",
            self.route,
            "--routes",
            ",".join(routes),
            "--server_name",
            self.name,
            "-sd",
            str(self.store),
        ]

    def spawn(self, routes: list[str], config: Path) -> None:
        """Start the process (returns at once; see :meth:`NatsCluster.wait_healthy`)."""
        self.store.mkdir(parents=True, exist_ok=True)
        with (self.store.parent / f"{self.name}.log").open("ab") as log:
            self.process = subprocess.Popen(
                self.command(routes, config),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pids.append(self.process.pid)

    def healthy(self) -> bool:
        """``/healthz`` answers 200: up, JetStream on, in contact with a meta leader."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.http_port}/healthz", timeout=1
            ) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def kill(self) -> float:
        """SIGKILL and reap; returns the time (``time.time()``) it was certainly dead."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
        return time.time()

    def jsz(self) -> Any:
        """This node's view of accounts, streams and consumers."""
        return _get_json(
            f"http://127.0.0.1:{self.http_port}/jsz?accounts=true&streams=true&consumers=true"
        )


class NatsCluster:
    """Three (or ``size``) nats-server nodes with routes between them."""

    def __init__(self, workdir: Path, *, size: int = 3, config: Path = DEPLOY_NATS_CONFIG) -> None:
        self.workdir = workdir
        self.config = config
        self.nodes = {f"n{i}": NatsNode(f"n{i}", workdir / f"n{i}") for i in range(1, size + 1)}

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated (``STELLWERK_NATS_URL``)."""
        return ",".join(n.url for n in self.nodes.values())

    def _routes(self, node: NatsNode) -> list[str]:
        return [n.route for n in self.nodes.values() if n is not node]

    def start(self, *, timeout: float = 30.0) -> None:
        """Start every node and wait until all report healthy."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for node in self.nodes.values():
            node.spawn(self._routes(node), self.config)
        self.wait_healthy(timeout=timeout)

    def wait_healthy(self, names: list[str] | None = None, *, timeout: float = 30.0) -> None:
        """Until the named (default: all) nodes answer ``/healthz`` with 200."""
        wanted = [self.nodes[n] for n in (names or list(self.nodes))]
        deadline = time.monotonic() + timeout
        while True:
            for node in wanted:
                if node.process is not None and node.process.poll() is not None:
                    raise RuntimeError(f"nats-server {node.name} exited; see {self.workdir}")
            if all(node.healthy() for node in wanted):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"nats nodes {[n.name for n in wanted]} not healthy")
            time.sleep(0.05)

    def kill(self, name: str) -> float:
        """SIGKILL one node; returns when it was dead."""
        return self.nodes[name].kill()

    def restart(self, name: str, *, timeout: float = 30.0) -> float:
        """Start a killed node again on its ports and store; returns when it is healthy."""
        node = self.nodes[name]
        node.spawn(self._routes(node), self.config)
        self.wait_healthy([name], timeout=timeout)
        return time.time()

    def leaders(self) -> dict[str, str]:
        """Every stream (``S``) and durable consumer (``S/C``) with the name of its leader
        node, as the live nodes report them (a group electing a leader right now is missing)."""
        found: dict[str, str] = {}

        def one(node: NatsNode) -> dict[str, str]:
            seen: dict[str, str] = {}
            try:
                report = node.jsz()
            except (urllib.error.URLError, OSError, ValueError):
                return seen
            for account in report.get("account_details") or []:
                for stream in account.get("stream_detail") or []:
                    name = stream.get("name", "")
                    leader = (stream.get("cluster") or {}).get("leader")
                    if leader:
                        seen[name] = leader
                    for consumer in stream.get("consumer_detail") or []:
                        if not (consumer.get("config") or {}).get("durable_name"):
                            continue  # ephemeral (a KV watch): R1, lives on its own node
                        cleader = (consumer.get("cluster") or {}).get("leader")
                        if cleader:
                            seen[f"{name}/{consumer.get('name', '')}"] = cleader
            return seen

        live = [n for n in self.nodes.values() if n.alive]
        with ThreadPoolExecutor(max_workers=len(live) or 1) as pool:
            for seen in pool.map(one, live):
                found.update(seen)
        return found

    def busiest_leader(self, prefixes: tuple[str, ...] = ("STELLWERK_", "KV_stellwerk")) -> str:
        """The node that leads the most of Stellwerk's streams and consumers."""
        counts = Counter(
            leader for asset, leader in self.leaders().items() if asset.startswith(prefixes)
        )
        if not counts:
            raise RuntimeError("no leader of any Stellwerk stream found")
        return counts.most_common(1)[0][0]

    def stop(self) -> None:
        """SIGKILL every node (the stores are the test's temp dir)."""
        for node in self.nodes.values():
            node.kill()
