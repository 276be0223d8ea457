"""The contracts: protos are lint-clean, committed stubs are fresh, every stub imports."""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
CLIENT = ROOT / "clients" / "python"
SCRIPT = ROOT / "scripts" / "gen_protos.py"
PROTO_FILES = sorted(p.relative_to(PROTOS) for p in PROTOS.rglob("*.proto"))

needs_grpc_tools = pytest.mark.skipif(
    importlib.util.find_spec("grpc_tools") is None,
    reason="grpcio-tools (a dev dependency) is not installed, so the stubs cannot be regenerated",
)


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_protos", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_protos = _load_script()


def _buf() -> str:
    found = shutil.which("buf", path=sysconfig.get_path("scripts"))
    assert found is not None, "buf not found next to the interpreter; install the dev dependencies"
    return found


@pytest.fixture(scope="module")
def fresh_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated tree, made from the protos now (DIR/stellwerk_api/...)."""
    out = tmp_path_factory.mktemp("generated")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


@needs_grpc_tools
def test_committed_stubs_match_a_fresh_generation(fresh_tree: Path) -> None:
    stale = gen_protos.stale_files(fresh_tree, CLIENT)
    assert stale == [], f"stale generated files, run `make proto`: {stale}"


_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


@needs_grpc_tools
def test_fresh_generation_covers_every_proto_file(fresh_tree: Path) -> None:
    root = fresh_tree / "stellwerk_api"
    for proto in PROTO_FILES:
        stem = root / proto.relative_to("stellwerk").parent / proto.stem
        for suffix in _SUFFIXES:
            assert Path(f"{stem}{suffix}").is_file(), f"{proto}: no {suffix}"
    assert (root / "py.typed").is_file()
    assert "never edit by hand" in (root / "__init__.py").read_text()


@needs_grpc_tools
def test_generated_imports_point_at_the_generated_root_and_proto_names_stay(
    fresh_tree: Path,
) -> None:
    texts = [p.read_text() for p in (fresh_tree / "stellwerk_api").rglob("*.py*")]
    assert not [t for t in texts if "from stellwerk.workflow" in t or "import stellwerk." in t]
    assert any("from stellwerk_api.workflow.v1 import workflow_pb2" in t for t in texts)
    # Proto names are untouched: clients in other languages see stellwerk.<area>.v1.
    from stellwerk_api.workflow.v1 import workflow_pb2, workflow_service_pb2

    assert workflow_pb2.WorkflowSpec.DESCRIPTOR.full_name == "stellwerk.workflow.v1.WorkflowSpec"
    service = workflow_service_pb2.DESCRIPTOR.services_by_name["WorkflowService"]
    assert service.full_name == "stellwerk.workflow.v1.WorkflowService"


def test_rewrite_touches_module_paths_only() -> None:
    text = (
        "from stellwerk.workflow.v1 import workflow_pb2 as w\n"
        "x: stellwerk.events.v1.events_pb2.TaskEvent\n"
        "NAME = 'stellwerk.workflow.v1.WorkflowRun'\n"
    )
    assert gen_protos.rewrite_imports(text) == (
        "from stellwerk_api.workflow.v1 import workflow_pb2 as w\n"
        "x: stellwerk_api.events.v1.events_pb2.TaskEvent\n"
        "NAME = 'stellwerk.workflow.v1.WorkflowRun'\n"
    )


@needs_grpc_tools
def test_staleness_check_sees_changed_missing_and_extra_files(
    fresh_tree: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(fresh_tree, copy)
    assert gen_protos.stale_files(fresh_tree, copy) == []
    v1 = copy / "stellwerk_api"
    pb2 = v1 / "workflow" / "v1" / "workflow_pb2.py"
    pb2.write_text(pb2.read_text() + "# edited by hand\n")
    (v1 / "events" / "v1" / "events_pb2.pyi").unlink()
    (v1 / "events" / "v1" / "gone_pb2.py").write_text("")
    assert gen_protos.stale_files(fresh_tree, copy) == [
        "stellwerk_api/events/v1/events_pb2.pyi",
        "stellwerk_api/events/v1/gone_pb2.py",
        "stellwerk_api/workflow/v1/workflow_pb2.py",
    ]


@needs_grpc_tools
def test_sync_replaces_the_generated_root_and_leaves_its_neighbours(
    fresh_tree: Path, tmp_path: Path
) -> None:
    target = tmp_path / "python"
    handwritten = target / "stellwerk_client" / "cli.py"
    handwritten.parent.mkdir(parents=True)
    handwritten.write_text("X = 1\n")
    retired = target / "stellwerk_api" / "retired" / "v1"
    retired.mkdir(parents=True)
    (retired / "retired_pb2.py").write_text("")

    gen_protos.sync(fresh_tree, target)

    assert gen_protos.stale_files(fresh_tree, target) == []
    assert not retired.parent.exists()
    assert handwritten.read_text() == "X = 1\n"


def test_buf_lint_and_format_pass() -> None:
    for args in (["lint"], ["format", "--diff", "--exit-code"]):
        result = subprocess.run(
            [_buf(), *args], cwd=ROOT, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"buf {' '.join(args)}:\n{result.stdout}{result.stderr}"


def test_buf_lint_rejects_a_proto_that_breaks_the_style(tmp_path: Path) -> None:
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(PROTOS, tmp_path / "protos")
    bad = tmp_path / "protos" / "stellwerk" / "workflow" / "v1" / "bad.proto"
    bad.write_text(
        'syntax = "proto3";\npackage stellwerk.workflow.v1;\n'
        'import "stellwerk/workflow/v1/workflow.proto";\n'
        "enum Colour { RED = 0; }\n"
        "service Runner { rpc Run(WorkflowSpec) returns (WorkflowSpec); }\n"
    )
    result = subprocess.run(
        [_buf(), "lint"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    for finding in ('prefixed with "COLOUR_"', '"_UNSPECIFIED"', 'suffixed with "Service"'):
        assert finding in result.stdout


def _module_name(proto: Path, suffix: str) -> str:
    """protos/stellwerk/<area>/v1/x.proto -> stellwerk_api.<area>.v1.x<suffix>."""
    return ".".join(["stellwerk_api", *proto.parent.parts[1:], proto.stem + suffix])


@pytest.mark.parametrize("proto", PROTO_FILES, ids=str)
@pytest.mark.parametrize("suffix", ["_pb2", "_pb2_grpc"])
def test_every_generated_module_imports(proto: Path, suffix: str) -> None:
    module = importlib.import_module(_module_name(proto, suffix))
    if suffix == "_pb2":
        assert module.DESCRIPTOR.name == proto.as_posix()
        assert module.DESCRIPTOR.package == ".".join(proto.parent.parts)


def test_services_have_their_decided_full_names() -> None:
    from stellwerk_api.execution.v1 import executor_service_pb2
    from stellwerk_api.monitoring.v1 import monitor_service_pb2
    from stellwerk_api.workflow.v1 import workflow_service_pb2

    names = {
        service.full_name
        for module in (workflow_service_pb2, executor_service_pb2, monitor_service_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
    }
    assert names == {
        "stellwerk.workflow.v1.WorkflowService",
        "stellwerk.execution.v1.ExecutorService",
        "stellwerk.monitoring.v1.MonitorService",
    }


def _generated_messages() -> list[Descriptor]:
    found: list[Descriptor] = []
    for proto in PROTO_FILES:
        module = importlib.import_module(_module_name(proto, "_pb2"))
        pending = list(module.DESCRIPTOR.message_types_by_name.values())
        while pending:
            message = pending.pop()
            found.append(message)
            pending.extend(message.nested_types)
    return found


def test_no_contract_uses_struct_for_json_values() -> None:
    # Struct/Value turn every number into a double (100 -> 100.0, 2**63 inexact): JSON values
    # travel as JSON text in `*_json` string fields instead.
    forbidden = {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}
    messages = _generated_messages()
    assert len(messages) > 20
    offenders = [
        f"{message.full_name}.{field.name}"
        for message in messages
        for field in message.fields
        if field.message_type is not None and field.message_type.full_name in forbidden
    ]
    assert offenders == []
    json_fields = [f for m in messages for f in m.fields if f.name.endswith("_json")]
    assert json_fields
    assert all(f.type == FieldDescriptor.TYPE_STRING for f in json_fields)


def test_every_event_carries_its_format_version_as_field_one() -> None:
    from stellwerk_api.events.v1 import events_pb2

    embedded = {"StoredValue"}  # travels inside the messages below, never on its own
    messages = list(events_pb2.DESCRIPTOR.message_types_by_name.values())
    assert {m.name for m in messages} >= {"TaskDispatch", "TaskEvent"}
    for message in (m for m in messages if m.name not in embedded):
        field = message.fields_by_number.get(1)
        assert field is not None, message.full_name
        assert (field.name, field.type) == ("format_version", FieldDescriptor.TYPE_UINT32)
