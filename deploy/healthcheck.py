#!/usr/bin/env python
"""stellwerk-healthcheck [SERVICE | HOST:PORT]: exit 0 when a Stellwerk service reports SERVING
on ``grpc.health.v1``, 1 otherwise (not listening, NOT_SERVING, no answer within 2 s).

The image installs it as ``/opt/stellwerk/bin/stellwerk-healthcheck`` for Docker's
HEALTHCHECK. SERVICE (``resolver``, ``executor`` or ``monitor``) is probed where the service
listens: its ``STELLWERK_<SERVICE>_LISTEN`` variable, the same one the service reads, with a
wildcard host (``0.0.0.0``, ``::``) probed on loopback. Without an argument the service is the
one the container runs (read from PID 1's command line), so one HEALTHCHECK line in the image
fits all three. Kubernetes needs none of this: its ``grpc:`` probes speak the same protocol.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEFAULTS = {"resolver": "50051", "executor": "50052", "monitor": "50053"}
WILDCARDS = {"", "0.0.0.0", "::", "[::]"}
DEADLINE = 2.0


def service_of(cmdline: list[str]) -> str | None:
    """The service a process runs, from its argv (``python -m stellwerk.resolver`` after
    ``stellwerk serve resolver`` replaced itself, or still ``stellwerk serve resolver``)."""
    for i, arg in enumerate(cmdline):
        if arg.startswith("stellwerk.") and arg.removeprefix("stellwerk.") in DEFAULTS:
            return arg.removeprefix("stellwerk.")
        if arg == "serve" and i + 1 < len(cmdline) and cmdline[i + 1] in DEFAULTS:
            return cmdline[i + 1]
    return None


def address_of(target: str, env: dict[str, str]) -> str:
    """HOST:PORT to probe for a service name or an explicit address."""
    if target not in DEFAULTS:
        return target
    listen = env.get(f"STELLWERK_{target.upper()}_LISTEN", f"127.0.0.1:{DEFAULTS[target]}")
    host, _, port = listen.rpartition(":")
    if host in WILDCARDS:
        host = "127.0.0.1"
    return f"{host}:{port}"


def serving(address: str) -> bool:
    """Whether the server at ``address`` answers SERVING for the whole server (``""``)."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=DEADLINE
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def main(argv: list[str]) -> int:
    if len(argv) > 1 or (argv and argv[0] in ("-h", "--help")):
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    if argv:
        target = argv[0]
    else:
        try:
            raw = Path("/proc/1/cmdline").read_bytes()
        except OSError:
            raw = b""
        found = service_of([a.decode(errors="replace") for a in raw.split(b"\0") if a])
        if found is None:
            print("stellwerk-healthcheck: name a service or HOST:PORT", file=sys.stderr)
            return 2
        target = found
    address = address_of(target, dict(os.environ))
    if serving(address):
        return 0
    print(f"stellwerk-healthcheck: {address} is not SERVING", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
