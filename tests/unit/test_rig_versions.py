"""Which containerd the rig runs, and what it renders for it: pure parts, no root, no network."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from watcher.testing import versions
from watcher.testing.config import render_config
from watcher.testing.errors import RigError
from watcher.testing.versions import Version


def _binaries(where: Path, names: tuple[str, ...] = versions.BINARIES) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    for name in names:
        (where / name).write_text("#!/bin/sh\n")
        (where / name).chmod(0o755)
    return where


# -- the version a containerd says -------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (
            "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n",
            Version(1, 6, 20),
        ),
        (
            "containerd github.com/containerd/containerd 1.7.24~ds1 1.7.24~ds1-6+deb13u1\n",
            Version(1, 7, 24),
        ),
        ("containerd github.com/containerd/containerd/v2 2.1.9+unknown \n", Version(2, 1, 9)),
        ("containerd containerd.io v1.7.27 05044ec0a9a7\n", Version(1, 7, 27)),  # upstream's
    ],
)
def test_version_of_each_output(output: str, expected: Version) -> None:
    found = versions.parse_version(output)
    assert found == expected
    assert found.series == f"{expected.major}.{expected.minor}"


def test_no_version_is_an_error() -> None:
    with pytest.raises(RigError, match="no containerd version"):
        versions.parse_version("containerd: command not found")


def test_versions_order() -> None:
    assert Version(1, 6, 20) < Version(1, 7, 0) < Version(1, 7, 24) < Version(2, 1, 9)


# -- which binaries ----------------------------------------------------------------------


def test_no_setting_means_the_systems() -> None:
    assert versions.bin_dir({}) is None
    assert versions.bin_dir({versions.BIN_ENV: ""}) is None
    assert versions.tool("ctr", None) == "ctr"  # looked up on PATH
    assert versions.tool_env(None, {"PATH": "/usr/bin"}) == {"PATH": "/usr/bin"}


def test_the_setting_names_the_binaries(tmp_path: Path) -> None:
    where = _binaries(tmp_path / "usr" / "bin")
    assert versions.bin_dir({versions.BIN_ENV: str(where)}) == where
    assert versions.tool("ctr", where) == str(where / "ctr")
    # containerd finds its shim on PATH: the same dir first, so the shim is of its version
    env = versions.tool_env(where, {"PATH": "/usr/sbin:/usr/bin", "HOME": "/root"})
    assert env == {"PATH": f"{where}:/usr/sbin:/usr/bin", "HOME": "/root"}


def test_a_setting_without_the_binaries_is_an_error(tmp_path: Path) -> None:
    where = _binaries(tmp_path, ("containerd", "ctr"))
    with pytest.raises(RigError, match="containerd-shim-runc-v2"):
        versions.bin_dir({versions.BIN_ENV: str(where)})


# -- Debian's packages -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidates", "series", "expected"),
    [
        (["2.1.9+ds1-5", "2.1.8+ds1-1"], "2.1", "2.1.9+ds1-5"),  # apt lists the newest first
        (["1.7.24~ds1-6+deb13u1"], "1.7", "1.7.24~ds1-6+deb13u1"),
        (["2.10.0-1", "2.1.9+ds1-5"], "2.1", "2.1.9+ds1-5"),  # 2.10 is not 2.1
        (["1:2.1.9-1"], "2.1", "1:2.1.9-1"),  # an epoch
        (["2.2.0-1"], "2.1", None),  # the suite moved on
        ([], "1.7", None),
    ],
)
def test_pick_a_series(candidates: list[str], series: str, expected: str | None) -> None:
    assert versions.pick(candidates, series) == expected


DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian
  http://other.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /etc/apt/keyrings/mirror.gpg
"""


def test_the_machines_mirror_from_deb822(tmp_path: Path) -> None:
    (tmp_path / "debian.sources").write_text(DEB822)
    found = versions.debian_mirror(tmp_path / "debian.sources", tmp_path / "none")
    assert found == ("http://mirror.example/debian", "/etc/apt/keyrings/mirror.gpg")


def test_the_machines_mirror_from_a_sources_list(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# a comment\n"
        "deb http://security.debian.org/debian-security bookworm-security main\n"
        "deb [arch=amd64] http://mirror.example/debian bookworm main\n"
    )
    found = versions.debian_mirror(tmp_path / "none", tmp_path / "sources.list")
    assert found == ("http://mirror.example/debian", versions.KEYRING)


def test_without_sources_deb_debian_org(tmp_path: Path) -> None:
    found = versions.debian_mirror(tmp_path / "none", tmp_path / "none")
    assert found == (versions.DEFAULT_MIRROR, versions.KEYRING)


def test_the_private_apt_dir_names_the_suite_and_touches_nothing_else(tmp_path: Path) -> None:
    apt = versions.Apt(tmp_path / "apt", "sid", "http://mirror.example/debian", "/k.gpg")
    assert (
        apt.sources.read_text() == "deb [signed-by=/k.gpg] http://mirror.example/debian sid main\n"
    )
    options = dict(o.split("=", 1) for o in apt.options if o != "-o")
    assert options["Dir::Etc::sourcelist"] == str(apt.sources)
    assert options["Dir::Etc::sourceparts"] == "-"  # not the machine's sources.list.d
    assert Path(options["Dir::State::Lists"]).is_relative_to(tmp_path)
    assert Path(options["Dir::Cache"]).is_relative_to(tmp_path)


def test_a_fetched_version_is_not_fetched_again(tmp_path: Path) -> None:
    where = _binaries(versions.fetched_dir("2.1", tmp_path))
    (tmp_path / "2.1" / versions.STAMP).write_text("2.1.9+ds1-5\n")
    assert versions.fetch("2.1", tmp_path) == where  # no apt: it would fail here


def test_an_unknown_series_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RigError, match="no Debian suite known"):
        versions.fetch("0.9", tmp_path)
    assert not os.listdir(tmp_path)


# -- the config by version ---------------------------------------------------------------


@pytest.mark.parametrize("version", [None, Version(1, 6, 20)])
def test_config_for_1_6_is_as_it_was(version: Version | None) -> None:
    base = Path("/tmp/wsw-x")
    text = render_config(base, base / "containerd.sock", restrict_oom=False, version=version)
    assert text == render_config(base, base / "containerd.sock", restrict_oom=False)
    plugins = tomllib.loads(text)["plugins"]
    assert "io.containerd.nri.v1.nri" not in plugins  # 1.6 has no NRI
    assert "io.containerd.transfer.v1.local" not in plugins


@pytest.mark.parametrize("version", [Version(1, 7, 24), Version(2, 1, 9)])
@pytest.mark.parametrize("snapshotter", ["overlayfs", "native"])
def test_config_from_1_7_keeps_nri_and_imports_in_the_base(
    version: Version, snapshotter: str
) -> None:
    base = Path("/tmp/wsw-x")
    config = tomllib.loads(
        render_config(base, base / "containerd.sock", snapshotter=snapshotter, version=version)
    )
    nri = config["plugins"]["io.containerd.nri.v1.nri"]
    # 2.x turns NRI on with its socket at /var/run/nri/nri.sock: the host's
    assert all(Path(nri[k]).is_relative_to(base) for k in ("socket_path", "plugin_path"))
    assert "disable" not in nri  # on or off as the version ships it
    # 2.x's ctr imports through the transfer service, which unpacks for overlayfs only
    (unpack,) = config["plugins"]["io.containerd.transfer.v1.local"]["unpack_config"]
    assert unpack["snapshotter"] == snapshotter
    assert unpack["platform"].startswith("linux/")
    # the rest is the same version-2 format (2.x migrates it when it loads it)
    assert config["version"] == 2
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["containerd"]["snapshotter"] == snapshotter


@pytest.mark.parametrize("version", [Version(1, 7, 24), Version(2, 1, 9)])
def test_config_turns_nri_on_when_asked(version: Version) -> None:
    base = Path("/tmp/wsw-x")
    text = render_config(
        base, base / "containerd.sock", restrict_oom=False, version=version, nri=True,
        nri_request_timeout=30,
    )  # fmt: skip
    nri = tomllib.loads(text)["plugins"]["io.containerd.nri.v1.nri"]
    # the same keys in 1.7 and 2.x (containerd's pkg/nri/config.go, internal/nri/config.go)
    assert nri["disable"] is False
    assert nri["socket_path"] == str(base / "nri-run" / "nri.sock")  # a dir a pod can mount
    assert nri["plugin_request_timeout"] == "30000ms"  # a Go duration


def test_config_refuses_nri_before_1_7() -> None:
    base = Path("/tmp/wsw-x")
    with pytest.raises(RigError, match="no NRI"):
        render_config(base, base / "s", restrict_oom=False, version=Version(1, 6, 20), nri=True)
