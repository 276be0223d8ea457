#!/usr/bin/env python3
"""Generate the Python code of the contracts in ``protos/`` (``make proto`` / ``make proto-check``).

Everything generated lives under one root that holds nothing else: the package ``stellwerk_api``
(``clients/python/stellwerk_api/<area>/v1/``), as ``temporalio.api`` does for Temporal. It sits
with the Python client, so that the client can ship the stubs without the server code; the
services import it too. Since the root is wholly generated, a run replaces it outright.

The proto packages stay ``stellwerk.<area>.v1`` (Buf's directory rule); the Python imports are
rewritten at generation to ``stellwerk_api.<area>.v1`` — only module paths (``..._pb2``
references and ``from ... import`` lines), never the proto names inside descriptors.

Steps: ``buf format`` (rewrite, or only check with ``--check``/``--out``), ``buf lint``,
``buf generate`` (messages ``*_pb2.py`` and the mypy stubs ``*_pb2.pyi``/``*_pb2_grpc.pyi``),
one ``grpc_tools.protoc --grpc_python_out`` call (service stubs ``*_pb2_grpc.py``: that generator
is no protoc builtin, so buf cannot run it), the import rewrite, and ``__init__.py`` files.

Go and TypeScript (``buf.gen.polyglot.yaml``): the same protos give ``clients/go/gen/`` (Go
messages and gRPC stubs, protoc-gen-go and protoc-gen-go-grpc) and ``clients/typescript/src/gen/``
(ts-proto with ``@grpc/grpc-js`` clients); each of those roots is generated only and replaced
whole too. Their plugins are pinned and installed by ``make tools`` (``.tools/go/bin``,
``clients/typescript/node_modules/.bin``); ``make proto`` and ``make proto-check`` install them
first. ``--python-only`` skips them (the unit tests of this script do).

Usage::

    python scripts/gen_protos.py            # format, lint, regenerate every generated root
    python scripts/gen_protos.py --check    # fail if unformatted or the committed files are stale
    python scripts/gen_protos.py --out DIR  # write the Python tree to DIR (DIR/stellwerk_api)

Python tools come from the virtualenv of the running interpreter (``buf`` from buf-bin,
grpcio-tools, mypy-protobuf), so the output depends only on the pinned dev dependencies.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
CLIENT = ROOT / "clients" / "python"
NAMESPACE = "stellwerk"  # the proto namespace: protos/stellwerk/<area>/v1
PACKAGE = "stellwerk_api"  # the Python root everything is generated into
# Module paths only: `from stellwerk.<area>.v1 import` and `stellwerk.<area>.v1.<name>_pb2`.
# Proto names (`stellwerk.workflow.v1.WorkflowRun`) never end in `_pb2`, so they stay.
_MODULE_PATH = re.compile(rf"\b{NAMESPACE}\.(\w+\.v\d+)(?=\.\w+_pb2\b|\s+import\b)")
# Go and TypeScript: buf's output folder (in buf.gen.polyglot.yaml) -> committed generated root.
POLYGLOT_TEMPLATE = ROOT / "buf.gen.polyglot.yaml"
POLYGLOT_ROOTS = {
    "go": ROOT / "clients" / "go" / "gen",
    "ts": ROOT / "clients" / "typescript" / "src" / "gen",
}
POLYGLOT_PLUGIN_DIRS = [
    ROOT / ".tools" / "go" / "bin",
    ROOT / "clients" / "typescript" / "node_modules" / ".bin",
]
_ROOT_DOC = (
    '"""Generated from protos/ by `make proto` (scripts/gen_protos.py); never edit by hand.\n\n'
    "One subpackage per contract area: workflow (WorkflowService), execution (ExecutorService),\n"
    'monitoring (MonitorService), events (the messages on JetStream)."""\n'
)


class GenerationError(Exception):
    """A step failed, or generating would touch hand-written code."""


def _tool_env() -> dict[str, str]:
    # buf.gen.yaml names `python` and the protoc-gen-* plugins without a path: put this
    # interpreter's scripts directory first so the pinned versions are the ones found.
    bin_dir = sysconfig.get_path("scripts")
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([bin_dir, str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _run(*args: str, env: dict[str, str]) -> None:
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise GenerationError(f"`{' '.join(args)}` failed (exit {result.returncode}):\n{output}")


def _buf(env: dict[str, str]) -> str:
    found = shutil.which("buf", path=env["PATH"])
    if found is None:
        raise GenerationError("buf not found; install the dev dependencies (buf-bin)")
    return found


def proto_areas() -> list[str]:
    """The areas of the proto tree (``protos/stellwerk/<area>/``), sorted."""
    return sorted(p.name for p in (PROTOS / NAMESPACE).iterdir() if p.is_dir())


def rewrite_imports(text: str) -> str:
    """Point the generated modules' imports at ``stellwerk_api`` instead of ``stellwerk``."""
    return _MODULE_PATH.sub(rf"{PACKAGE}.\1", text)


def generate(out: Path, *, fix_format: bool = False) -> None:
    """Check (or fix) formatting, lint, and generate the whole tree into ``out/stellwerk_api``."""
    env = _tool_env()
    buf = _buf(env)
    if fix_format:
        _run(buf, "format", "--write", env=env)
    else:
        _run(buf, "format", "--diff", "--exit-code", env=env)
    _run(buf, "lint", env=env)
    with tempfile.TemporaryDirectory(prefix="stellwerk-protos-") as tmp:
        # buf prepends --output to the template's `out: gen`.
        _run(buf, "generate", "--output", tmp, env=env)
        generated = Path(tmp) / "gen"
        protos = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
        _run(
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"--proto_path={PROTOS}",
            f"--grpc_python_out={generated}",
            *protos,
            env=env,
        )
        target = out / PACKAGE
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(generated / NAMESPACE, target)
        for path in sorted(target.rglob("*.py*")):
            path.write_text(rewrite_imports(path.read_text()))
        for directory in [target, *sorted(p for p in target.rglob("*") if p.is_dir())]:
            (directory / "__init__.py").write_bytes(b"")
        (target / "__init__.py").write_text(_ROOT_DOC)
        (target / "py.typed").write_bytes(b"")


def generate_polyglot(out: Path) -> None:
    """Generate the Go and TypeScript trees into ``out/go`` and ``out/ts`` (protos already
    formatted and linted by :func:`generate`)."""
    env = _tool_env()
    env["PATH"] = os.pathsep.join([*map(str, POLYGLOT_PLUGIN_DIRS), env["PATH"]])
    for plugin in ("protoc-gen-go", "protoc-gen-go-grpc", "protoc-gen-ts_proto"):
        if shutil.which(plugin, path=env["PATH"]) is None:
            raise GenerationError(f"{plugin} not found; run `make tools` (installs the plugins)")
    _run(
        _buf(env),
        "generate",
        "--template",
        str(POLYGLOT_TEMPLATE),
        "--output",
        str(out),
        env=env,
    )


def tree_files(root: Path) -> dict[Path, Path]:
    """Every file under ``root``, by path relative to it."""
    if not root.is_dir():
        return {}
    return {p.relative_to(root): p for p in root.rglob("*") if p.is_file()}


def stale_tree(fresh: Path, committed: Path) -> list[str]:
    """Paths (relative to the roots) that differ between two whole generated trees, sorted."""
    new, old = tree_files(fresh), tree_files(committed)
    return sorted(
        str(rel)
        for rel in new.keys() | old.keys()
        if rel not in new or rel not in old or not filecmp.cmp(new[rel], old[rel], shallow=False)
    )


def _sync_polyglot(fresh: Path, *, check: bool) -> list[str]:
    """Compare (``check``) or replace each Go/TypeScript root; the paths that differed."""
    changed: list[str] = []
    for name, target in POLYGLOT_ROOTS.items():
        diff = stale_tree(fresh / name, target)
        changed += [str((target / rel).relative_to(ROOT)) for rel in diff]
        if diff and not check:
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(fresh / name, target)
    return changed


def _files(root: Path) -> dict[Path, Path]:
    """Every file of the generated root under ``root`` (caches aside), by relative path."""
    base = root / PACKAGE
    if not base.is_dir():
        return {}
    return {
        p.relative_to(root): p
        for p in base.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def stale_files(fresh: Path, committed: Path) -> list[str]:
    """Paths (relative to the roots) that differ between two generated trees, sorted.

    A path counts when its content differs, or when only one tree has it.
    """
    new, old = _files(fresh), _files(committed)
    return sorted(
        str(rel)
        for rel in new.keys() | old.keys()
        if rel not in new or rel not in old or not filecmp.cmp(new[rel], old[rel], shallow=False)
    )


def sync(fresh: Path, target: Path) -> list[str]:
    """Replace the generated root under ``target`` by ``fresh``'s; return the paths changed."""
    changed = stale_files(fresh, target)
    if changed:
        if (target / PACKAGE).exists():
            shutil.rmtree(target / PACKAGE)
        shutil.copytree(fresh / PACKAGE, target / PACKAGE)
    return changed


def _say(text: str, *, error: bool = False) -> None:
    (sys.stderr if error else sys.stdout).write(text + "\n")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--check", action="store_true", help="fail if the committed generated files are stale"
    )
    mode.add_argument("--out", type=Path, help="write the generated tree here instead")
    parser.add_argument(
        "--python-only", action="store_true", help="leave the Go and TypeScript roots alone"
    )
    args = parser.parse_args(argv)
    polyglot: list[str] = []
    try:
        if args.out is not None:
            generate(args.out.resolve())
            return 0
        with tempfile.TemporaryDirectory(prefix="stellwerk-gen-") as tmp:
            fresh = Path(tmp)
            generate(fresh, fix_format=not args.check)
            if not args.python_only:
                generate_polyglot(fresh / "polyglot")
                polyglot = _sync_polyglot(fresh / "polyglot", check=args.check)
            if args.check:
                stale = stale_files(fresh, CLIENT)
            else:
                changed = sync(fresh, CLIENT)
    except GenerationError as err:
        _say(f"gen_protos: {err}", error=True)
        return 1
    if args.check:
        if stale or polyglot:
            listing = "".join(f"\n  clients/python/{rel}" for rel in stale)
            listing += "".join(f"\n  {rel}" for rel in polyglot)
            _say(f"stale generated files, run `make proto`:{listing}", error=True)
            return 1
        _say("generated files are up to date")
        return 0
    _say(f"regenerated: {len(changed) + len(polyglot)} file(s) changed")
    for rel in changed:
        _say(f"  clients/python/{rel}")
    for rel in polyglot:
        _say(f"  {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
