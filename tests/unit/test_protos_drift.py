"""The committed generated code equals what the documented command generates today."""

from __future__ import annotations

import filecmp
from pathlib import Path

from containerd_protos import generate


def test_committed_code_matches_the_generator(tmp_path: Path) -> None:
    generate.generate(tmp_path)
    fresh_root = tmp_path / generate.PACKAGE
    fresh = generate.generated_files(fresh_root)
    committed = generate.generated_files(generate.HERE)
    assert fresh == committed, (
        "a proto was added or removed: run python -m containerd_protos.generate"
    )
    drifted = [
        str(rel)
        for rel in fresh
        if not filecmp.cmp(fresh_root / rel, generate.HERE / rel, shallow=False)
    ]
    assert not drifted, f"regenerate with python -m containerd_protos.generate: {drifted}"


def test_imports_are_rewritten_under_the_package() -> None:
    src = 'import "types/mount.proto";\nimport "google/protobuf/any.proto";\n'
    assert generate.rewrite_imports(src) == (
        'import "containerd_protos/types/mount.proto";\nimport "google/protobuf/any.proto";\n'
    )


def test_no_generated_module_is_named_like_the_stdlib() -> None:
    import types

    assert types.__file__ is not None and "containerd_protos" not in types.__file__
    from containerd_protos.types import mount_pb2

    assert mount_pb2.Mount.DESCRIPTOR.full_name == "containerd.types.Mount"
