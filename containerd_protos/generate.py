"""Regenerate the Python modules of this package from the vendored ``.proto`` files.

Usage::

    python -m containerd_protos.generate            # rewrite the committed modules in place
    python -m containerd_protos.generate --out DIR  # write them under DIR instead (drift test)

The upstream files under ``proto/`` stay byte-for-byte as containerd ships them. Their imports
are root-relative (``import "types/mount.proto"``), which would make Python modules named
``types`` that shadow the standard library, so we copy them into a scratch tree below a
``containerd_protos/`` prefix, rewrite the imports to match, and run protoc from there.

NRI's API (``proto/nri/``) is served over ttrpc, not gRPC: it gets message modules only, no
``*_pb2_grpc.py`` (a gRPC stub of a ttrpc service would look usable and never work).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "containerd_protos"
HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE / "proto"

# Only root-relative imports of vendored files are rewritten; google/protobuf/* comes from
# grpcio-tools' bundled well-known types.
_IMPORT = re.compile(r'^(import\s+(?:public\s+)?")(?!google/)([^"]+\.proto)(";)', re.MULTILINE)
#: top-level dirs under proto/ whose services speak ttrpc (NRI): compiled without gRPC stubs
TTRPC_ROOTS = frozenset({"nri"})


def vendored_protos() -> Iterator[Path]:
    """The vendored ``.proto`` files, relative to ``proto/``, in a stable order."""
    return iter(sorted(p.relative_to(PROTO_ROOT) for p in PROTO_ROOT.rglob("*.proto")))


def rewrite_imports(source: str) -> str:
    return _IMPORT.sub(lambda m: f"{m[1]}{PACKAGE}/{m[2]}{m[3]}", source)


def generate(out_dir: Path) -> list[Path]:
    """Compile every vendored proto into ``out_dir/containerd_protos/...``; return the files."""
    from grpc_tools import protoc  # dev-only dependency: imported here, not at module load

    include = Path(protoc.__file__).resolve().parent / "_proto"
    with tempfile.TemporaryDirectory() as scratch:
        src_root = Path(scratch)
        grpc_sources, ttrpc_sources = [], []
        for rel in vendored_protos():
            target = src_root / PACKAGE / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(rewrite_imports((PROTO_ROOT / rel).read_text()))
            served_by_ttrpc = rel.parts[0] in TTRPC_ROOTS
            (ttrpc_sources if served_by_ttrpc else grpc_sources).append(str(Path(PACKAGE) / rel))
        common = [
            "protoc", f"-I{src_root}", f"-I{include}",
            f"--python_out={out_dir}", f"--pyi_out={out_dir}",
        ]  # fmt: skip
        for extra, sources in (
            ([f"--grpc_python_out={out_dir}"], grpc_sources),
            ([], ttrpc_sources),
        ):
            if sources and protoc.main([*common, *extra, *sources]) != 0:
                raise SystemExit("protoc failed; see the messages above")
    written = sorted(p for p in (out_dir / PACKAGE).rglob("*") if p.suffix in {".py", ".pyi"})
    _add_init_files(out_dir / PACKAGE)
    return written


def _add_init_files(root: Path) -> None:
    # protoc writes plain directories; make each one an importable package (not the vendored
    # upstream tree under proto/, which holds .proto files only)
    vendored = root / PROTO_ROOT.name
    for directory in [root, *(d for d in root.rglob("*") if d.is_dir())]:
        if directory == vendored or vendored in directory.parents:
            continue
        init = directory / "__init__.py"
        if not init.exists():
            init.write_text("")


def generated_files(root: Path) -> list[Path]:
    """The generated modules under a package root, relative to it."""
    return sorted(
        p.relative_to(root)
        for p in root.rglob("*")
        if p.name.endswith(("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"))
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m containerd_protos.generate")
    parser.add_argument("--out", type=Path, help="write under this directory instead")
    args = parser.parse_args(argv)
    if args.out is not None:
        generate(args.out)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = Path(tmp) / PACKAGE
        for old in generated_files(HERE):
            (HERE / old).unlink()
        for rel in generated_files(fresh):
            (HERE / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fresh / rel, HERE / rel)
        _add_init_files(HERE)
    print(f"regenerated {len(generated_files(HERE))} modules under {HERE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
