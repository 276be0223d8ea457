"""``stellwerk run`` shows a live display in a terminal and plain lines otherwise: driven for
real, through a pseudo-terminal and through a pipe, against a live stack."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from tests.e2e.conftest import Stack

STELLWERK = Path(sys.executable).parent / "stellwerk"
WORKFLOW = """\
name: live demo
tasks:
  - {id: first, method: test/sleep, params: {seconds: 0.4}}
  - {id: left, method: test/sleep, dependencies: [first], params: {seconds: 0.6}}
  - {id: right, method: test/sleep, dependencies: [first], params: {seconds: 0.6}}
  - {id: join, method: mcp/tool.echo, dependencies: [left, right], params: {message: done}}
"""
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _in_a_terminal(argv: list[str], *, columns: int = 100, lines: int = 30) -> tuple[int, str]:
    """Run ``argv`` with a pseudo-terminal as stdin, stdout and stderr; return its exit code and
    everything it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns), "LINES": str(lines)}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    return process.wait(timeout=30), b"".join(chunks).decode("utf-8", "replace")


def test_run_in_a_terminal_shows_a_live_table_and_a_progress_bar(
    ready_stack: Stack, tmp_path: Path
) -> None:
    path = tmp_path / "live.yaml"
    path.write_text(WORKFLOW, encoding="utf-8")
    code, screen = _in_a_terminal(
        [str(STELLWERK), "run", str(path), "--address", ready_stack.resolver.address]
    )
    text = _ANSI.sub("", screen)
    assert code == 0, screen
    assert "\x1b[" in screen, "a live display redraws with escape sequences"
    # The table: one row per task with state, attempt and duration; seen while running.
    for header in ("task", "state", "attempt", "duration"):
        assert header in text
    assert re.search(r"left\s*│\s*(DISPATCHED|RUNNING)\s*│\s*1\s*│", text), text
    assert re.search(r"first\s*│\s*COMPLETED\s*│\s*1\s*│\s*0\.\d\ds", text), text
    assert re.search(r"join\s*│\s*COMPLETED\s*│\s*1\s*│\s*\d+\.\d\ds", text), text
    # The progress bar of finished tasks, from its first frame to its last.
    assert "tasks finished" in text
    assert "0/4" in text and "4/4" in text
    # Then the final results, as in plain mode.
    assert re.search(r"run [0-9a-f]{22} \(live demo\): COMPLETED", text)
    assert '"response":"done"' in text.replace(" ", "")


def test_run_into_a_pipe_prints_plain_lines_one_per_change(
    ready_stack: Stack, tmp_path: Path
) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text(WORKFLOW, encoding="utf-8")
    done = subprocess.run(
        [str(STELLWERK), "run", str(path), "--address", ready_stack.resolver.address],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout
    lines = done.stdout.splitlines()
    assert lines[0].startswith("run ") and lines[0].endswith("submitted (live demo, 4 tasks)")
    started = [
        i for i, line in enumerate(lines) if re.fullmatch(r"  left: (DISPATCHED|RUNNING)", line)
    ]
    assert started and started[0] < lines.index("  left: COMPLETED"), lines
    assert lines.index("  left: COMPLETED") < lines.index("  join: COMPLETED")
    assert len(lines) == len(set(lines)), "each change once"
