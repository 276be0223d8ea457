#!/usr/bin/env python3
"""Generate the Python code of the contracts in ``protos/`` (``make proto`` / ``make proto-check``).

The generated modules live inside the hand-written package ``stellwerk``, one subpackage per
proto area (``services/stellwerk/<area>/v1/``), so this script never wipes an output directory:
it generates into a temporary tree first and then replaces only the generated files.

Steps: ``buf format`` (rewrite, or only check with ``--check``/``--out``), ``buf lint``,
``buf generate`` (messages ``*_pb2.py`` and the mypy stubs ``*_pb2.pyi``/``*_pb2_grpc.pyi``),
one ``grpc_tools.protoc --grpc_python_out`` call (service stubs ``*_pb2_grpc.py``: that generator
is no protoc builtin, so buf cannot run it), and empty ``__init__.py`` files so every generated
package is a regular package.

Usage::

    python scripts/gen_protos.py            # format, lint, regenerate into services/
    python scripts/gen_protos.py --check    # fail if unformatted or the committed files are stale
    python scripts/gen_protos.py --out DIR  # write the generated tree to DIR (DIR/stellwerk/...)

Tools come from the virtualenv of the running interpreter (``buf`` from buf-bin, grpcio-tools,
mypy-protobuf), so the output depends only on the pinned dev dependencies.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
SERVICES = ROOT / "services"
# The proto namespace that is also the hand-written Python package the code is generated into.
NAMESPACE = "stellwerk"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


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


def is_generated(path: Path) -> bool:
    """Whether a file under ``services/stellwerk`` is one this script writes."""
    return path.name.endswith(GENERATED_SUFFIXES)


def proto_areas() -> list[str]:
    """The areas of the proto tree (``protos/stellwerk/<area>/``), sorted."""
    return sorted(p.name for p in (PROTOS / NAMESPACE).iterdir() if p.is_dir())


def generate(out: Path, *, fix_format: bool = False) -> None:
    """Check (or fix) formatting, lint, and generate the whole tree into ``out/stellwerk/...``."""
    env = _tool_env()
    buf = _buf(env)
    if fix_format:
        _run(buf, "format", "--write", env=env)
    else:
        _run(buf, "format", "--diff", "--exit-code", env=env)
    _run(buf, "lint", env=env)
    with tempfile.TemporaryDirectory(prefix="stellwerk-protos-") as tmp:
        # buf prepends --output to the template's `out: services`.
        _run(buf, "generate", "--output", tmp, env=env)
        generated = Path(tmp) / "services"
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
        for area in proto_areas():
            package = generated / NAMESPACE / area
            for directory in [package, *sorted(p for p in package.rglob("*") if p.is_dir())]:
                (directory / "__init__.py").write_bytes(b"")
        out.mkdir(parents=True, exist_ok=True)
        shutil.copytree(generated, out, dirs_exist_ok=True)


def _files(root: Path) -> dict[Path, Path]:
    """Generated files and area ``__init__.py`` files under ``root/stellwerk``, by relative path."""
    found: dict[Path, Path] = {}
    base = root / NAMESPACE
    if not base.is_dir():
        return found
    areas = {p.relative_to(base).parts[0] for p in base.rglob("*") if is_generated(p)}
    for area in sorted(areas):
        for path in (base / area).rglob("*"):
            if path.is_file() and (is_generated(path) or path.name == "__init__.py"):
                found[path.relative_to(root)] = path
    return found


def _differing(new: dict[Path, Path], old: dict[Path, Path]) -> list[Path]:
    return sorted(
        rel
        for rel in new.keys() | old.keys()
        if rel not in new or rel not in old or not filecmp.cmp(new[rel], old[rel], shallow=False)
    )


def stale_files(fresh: Path, committed: Path) -> list[str]:
    """Paths (relative to the roots) that differ between two generated trees, sorted.

    A path counts when its content differs, or when only one tree has it.
    """
    return [str(rel) for rel in _differing(_files(fresh), _files(committed))]


def _check_no_collision(target: Path) -> None:
    # An area whose directory holds hand-written code (stellwerk/core, .../resolver, ...) must
    # never receive generated files: refuse before writing anything.
    for area in proto_areas():
        package = target / NAMESPACE / area
        if not package.exists():
            continue
        for path in package.rglob("*"):
            if "__pycache__" in path.parts or path.is_dir() or is_generated(path):
                continue
            if path.name == "__init__.py" and path.stat().st_size == 0:
                continue
            raise GenerationError(
                f"protos/{NAMESPACE}/{area} would generate into {package}, which holds "
                f"hand-written code ({path.relative_to(target)}); rename the proto area"
            )


def sync(fresh: Path, target: Path) -> list[str]:
    """Make the generated files under ``target`` equal to ``fresh``; return the paths changed."""
    _check_no_collision(target)
    new, old = _files(fresh), _files(target)
    changed = _differing(new, old)
    for rel in changed:
        if rel in new:
            destination = target / rel
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(new[rel], destination)
        else:
            old[rel].unlink()
    # Drop directories left with nothing but caches (an area or version whose protos are gone).
    for directory in sorted({p.parent for p in old.values()}, key=lambda p: -len(p.parts)):
        if directory.is_dir() and all(p.name == "__pycache__" for p in directory.iterdir()):
            shutil.rmtree(directory)
    return [str(rel) for rel in changed]


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
    args = parser.parse_args(argv)
    try:
        if args.out is not None:
            generate(args.out.resolve())
            return 0
        with tempfile.TemporaryDirectory(prefix="stellwerk-gen-") as tmp:
            fresh = Path(tmp)
            generate(fresh, fix_format=not args.check)
            if args.check:
                stale = stale_files(fresh, SERVICES)
            else:
                changed = sync(fresh, SERVICES)
    except GenerationError as err:
        _say(f"gen_protos: {err}", error=True)
        return 1
    if args.check:
        if stale:
            listing = "".join(f"\n  services/{rel}" for rel in stale)
            _say(f"stale generated files, run `make proto`:{listing}", error=True)
            return 1
        _say("generated files are up to date")
        return 0
    _say(f"regenerated: {len(changed)} file(s) changed")
    for rel in changed:
        _say(f"  services/{rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
