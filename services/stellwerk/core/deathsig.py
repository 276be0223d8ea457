"""Children that die with their parent: ``prctl(PR_SET_PDEATHSIG)`` as a ``preexec_fn``.

Used for the nats-server of tests and ``stellwerk dev``, the CLI's service children and the
``python/execute`` script processes of an executor.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

__all__ = ["pdeathsig_preexec"]

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


# Loaded once, here: the hook runs between fork and exec, where as little as possible should happen.
_prctl = _load_prctl()


def pdeathsig_preexec(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``Popen(preexec_fn=...)`` making the child receive ``sig`` when its parent dies.

    Linux only; ``None`` elsewhere. The signal follows the death of the *thread* that started
    the child, so start children from the main thread (or the event loop's).
    """
    prctl = _prctl
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        if prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return preexec
