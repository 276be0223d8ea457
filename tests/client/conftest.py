"""Client tests: the stack as processes (the end-to-end suite's fixtures) and a fresh venv with
only the client distribution installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import ready_stack, stack  # fixtures, shared with the e2e suite
from tests.support.processes import ROOT

__all__ = ["ClientVenv", "client_venv", "ready_stack", "stack"]


@dataclass(frozen=True)
class ClientVenv:
    """A virtualenv holding ``pip install ./clients/python`` and nothing of the server."""

    path: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def stellwerk(self) -> Path:
        return self.path / "bin" / "stellwerk"


@pytest.fixture(scope="session")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClientVenv]:
    """``python -m venv`` + ``pip install ./clients/python`` (dependencies resolved; pip's cache
    allowed), from a copy of the source so no build output lands in the work tree."""
    base = tmp_path_factory.mktemp("client-venv")
    source = base / "src"
    shutil.copytree(
        ROOT / "clients" / "python",
        source,
        ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"),
    )
    venv = ClientVenv(base / "venv")
    # Without its own pip: this interpreter's pip installs into it (--python), which saves
    # bootstrapping one per test run.
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv.path)], check=True, timeout=120
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv.python), "install", "-q", str(source)],
        check=True,
        timeout=300,
    )
    yield venv
