"""The demo's install step leaves the distribution's containerd service as it found it.

Nothing here installs anything: `policy-rc.d`, the systemd unit dir and `systemctl` are
stand-ins in a tmp dir, and `apt-get` is a shell script that plays the package's maintainer
scripts (ask policy-rc.d, enable the unit). The real-containerd side (the demo leaves no
cgroup, process, mount or service change behind) is `tests/cli/test_demo_leaves_no_trace.py`.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

from watcher.cli import demo
from watcher.cli.args import Command, Options
from watcher.errors import UsageError

UNIT = "containerd.service"


# --- policy-rc.d --------------------------------------------------------------------------


def test_policy_written_forbids_starts_and_is_removed(tmp_path: Path) -> None:
    policy = tmp_path / "policy-rc.d"
    with demo.services_held_back(policy) as written:
        assert written
        assert stat.S_IMODE(policy.stat().st_mode) == 0o755
        # how invoke-rc.d / deb-systemd-invoke ask it: 101 means "action forbidden"
        assert subprocess.run([str(policy), UNIT, "start"], check=False).returncode == 101
    assert not policy.exists()


def test_policy_removed_when_the_install_fails(tmp_path: Path) -> None:
    policy = tmp_path / "policy-rc.d"
    with pytest.raises(RuntimeError), demo.services_held_back(policy):
        raise RuntimeError("apt-get failed")
    assert not policy.exists()


def test_an_existing_policy_is_left_alone(tmp_path: Path) -> None:
    policy = tmp_path / "policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 0\n")  # an admin's, even one that allows starts
    before = policy.stat()
    with demo.services_held_back(policy) as written:
        assert not written
    assert policy.read_text() == "#!/bin/sh\nexit 0\n"
    assert policy.stat().st_ino == before.st_ino


def test_a_symlink_is_neither_followed_nor_removed(tmp_path: Path) -> None:
    policy = tmp_path / "policy-rc.d"
    policy.symlink_to(tmp_path / "elsewhere")  # dangling: O_CREAT would write through it
    with demo.services_held_back(policy) as written:
        assert not written
    assert policy.is_symlink() and not (tmp_path / "elsewhere").exists()


def test_a_policy_replaced_meanwhile_is_not_removed(tmp_path: Path) -> None:
    policy = tmp_path / "policy-rc.d"
    with demo.services_held_back(policy):
        policy.unlink()
        policy.write_text("someone else's\n")
    assert policy.read_text() == "someone else's\n"


# --- the unit's state -------------------------------------------------------------------------


class FakeSystemctl:
    """`systemctl is-enabled/is-active/enable/disable/start/stop UNIT` on a dict."""

    def __init__(self, enabled: str, active: str, *, fail: bool = False) -> None:
        self.enabled, self.active, self.fail = enabled, active, fail
        self.changes: list[str] = []

    def __call__(self, args: Sequence[str]) -> tuple[int, str]:
        verb = args[0]
        if verb == "is-enabled":
            return (0, self.enabled) if self.enabled else (1, "Failed to get unit file state")
        if verb == "is-active":
            return (0, self.active) if self.active else (1, "System has not been booted")
        self.changes.append(" ".join(args))
        if self.fail:
            return 1, "Access denied"
        if verb in ("enable", "disable"):
            self.enabled = verb + "d"
        elif verb in ("start", "stop"):
            self.active = "active" if verb == "start" else "inactive"
        return 0, ""


@pytest.mark.parametrize(
    ("before", "install_makes", "expected"),
    [
        # a fresh host: no unit before; the postinst enabled and (policy ignored) started it
        (("", "inactive"), ("enabled", "active"), ["disable", "stop"]),
        # the usual case with policy-rc.d: enabled, not started
        (("", "inactive"), ("enabled", "inactive"), ["disable"]),
        # no systemd running (a container): only the enablement can change
        (("", ""), ("enabled", ""), ["disable"]),
        # left masked by an earlier `apt-get remove`: the postinst unmasked and enabled it
        (("masked", "inactive"), ("enabled", "inactive"), ["disable"]),
        # a node whose containerd runs (a kubelet's): the install changed nothing, nor do we
        (("enabled", "active"), ("enabled", "active"), []),
        # ... or an upgrade's prerm stopped it: running again, as it was
        (("enabled", "active"), ("enabled", "inactive"), ["start"]),
        (("disabled", "inactive"), ("disabled", "inactive"), []),
    ],
)
def test_restore_unit(
    before: tuple[str, str], install_makes: tuple[str, str], expected: list[str],
    tmp_path: Path,
) -> None:  # fmt: skip
    systemctl = FakeSystemctl(*before)
    recorded = demo.unit_state(UNIT, systemctl, tmp_path)
    systemctl.enabled, systemctl.active = install_makes
    done = demo.restore_unit(UNIT, recorded, systemctl, tmp_path)
    assert systemctl.changes == [f"{verb} {UNIT}" for verb in expected]
    assert done == [f"systemctl {verb} {UNIT}" for verb in expected]
    after = demo.unit_state(UNIT, systemctl, tmp_path)
    assert after.enabled in (before[0], "disabled") and after.active == before[1]


def test_restore_unit_says_what_failed(tmp_path: Path) -> None:
    systemctl = FakeSystemctl("", "inactive", fail=True)
    recorded = demo.unit_state(UNIT, systemctl, tmp_path)
    systemctl.enabled = "enabled"
    (done,) = demo.restore_unit(UNIT, recorded, systemctl, tmp_path)
    assert done.startswith(demo.FAILED) and "Access denied" in done


def enable_link(unit_dir: Path, target: str = "multi-user.target") -> Path:
    wants = unit_dir / f"{target}.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / UNIT
    link.symlink_to(f"/lib/systemd/system/{UNIT}")
    return link


def test_without_systemctl_new_enable_links_are_removed(tmp_path: Path) -> None:
    theirs = enable_link(tmp_path, "graphical.target")  # there before: stays
    recorded = demo.unit_state(UNIT, None, tmp_path)
    made = enable_link(tmp_path)  # what deb-systemd-helper enable does
    assert demo.restore_unit(UNIT, recorded, None, tmp_path) == [f"removed {made}"]
    assert not made.is_symlink() and theirs.is_symlink()


# --- the install step, with a fake apt-get ------------------------------------------------

FAKE_APT = """#!/bin/sh
# apt-get as the demo runs it: update, install --download-only, install (dpkg: postinst)
echo "$*" >> "$FAKE_LOG"
sleep "${FAKE_SLEEP:-0}"
case "$*" in
  update*) ;;
  *--download-only*)
    # exec: the slow download is the process apt-get's cancel kills (no orphan sleep)
    if [ -n "${FAKE_DOWNLOAD_SLEEP:-}" ]; then exec sleep "$FAKE_DOWNLOAD_SLEEP"; fi
    exit "${FAKE_DOWNLOAD_RC:-0}" ;;
  install*)
    # containerd's postinst: deb-systemd-helper enable, then deb-systemd-invoke start,
    # which asks policy-rc.d first
    mkdir -p "$FAKE_UNITS/multi-user.target.wants"
    ln -s /lib/systemd/system/containerd.service \\
        "$FAKE_UNITS/multi-user.target.wants/containerd.service"
    if [ -x "$FAKE_POLICY" ]; then "$FAKE_POLICY" containerd.service start; rc=$?; else rc=0; fi
    echo "policy-rc.d says $rc" >> "$FAKE_LOG"
    [ "$rc" = 101 ] || echo "started containerd" >> "$FAKE_LOG" ;;
esac
"""


class Host:
    """A tmp dir standing in for /usr/sbin, /etc/systemd/system and apt-get."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.policy = root / "usr-sbin" / "policy-rc.d"
        self.policy.parent.mkdir()
        self.units = root / "systemd"
        self.units.mkdir()
        self.log = root / "apt.log"
        bin_dir = root / "bin"
        bin_dir.mkdir()
        apt = bin_dir / "apt-get"
        apt.write_text(FAKE_APT)
        apt.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
        for name, value in (("LOG", self.log), ("UNITS", self.units), ("POLICY", self.policy)):
            monkeypatch.setenv(f"FAKE_{name}", str(value))
        monkeypatch.setattr(demo, "POLICY_RC_D", self.policy)
        monkeypatch.setattr(demo, "SYSTEMD_UNIT_DIR", self.units)
        monkeypatch.setattr(demo, "_find_systemctl", lambda: None)
        self.lines: list[str] = []

    @property
    def apt_log(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def narrate(self, text: str) -> None:
        self.lines.append(f"── {text}")


@pytest.fixture
def fake_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Host:
    return Host(tmp_path, monkeypatch)


async def test_install_holds_the_service_back(fake_host: Host) -> None:
    await demo._install(["containerd", "runc"], fake_host.lines.append, fake_host.narrate)
    assert fake_host.apt_log == [
        "update -q",
        "install -y -q --no-install-recommends --download-only containerd runc",
        "install -y -q --no-install-recommends containerd runc",
        "policy-rc.d says 101",  # the postinst's start was refused
    ]
    assert not fake_host.policy.exists()  # ours, removed
    assert not list(fake_host.units.rglob(UNIT))  # the postinst's enable, undone
    first, *_, last = fake_host.lines
    assert first.startswith("── installing containerd runc with apt-get")
    assert "stay installed" in first
    assert last.startswith("── installed containerd runc in ")
    assert "apt-get purge containerd runc" in last and f"{UNIT} is as it was" in last


async def test_a_failed_install_is_one_line_and_leaves_nothing(
    fake_host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_DOWNLOAD_RC", "100")
    with pytest.raises(UsageError, match="--download-only containerd failed \\(100\\)"):
        await demo._install(["containerd"], fake_host.lines.append, fake_host.narrate)
    assert not fake_host.policy.exists()
    assert not any(line.startswith("── installed") for line in fake_host.lines)


async def test_cancelled_while_downloading(
    fake_host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C (a cancel) while apt-get downloads stops it at once; nothing is left over."""
    monkeypatch.setenv("FAKE_DOWNLOAD_SLEEP", "30")
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(demo._install, ["containerd"], fake_host.lines.append,
                           fake_host.narrate)  # fmt: skip
        # written by the fake apt-get, another process: no event to wait on but the file
        while not any("--download-only" in line for line in fake_host.apt_log):  # noqa: ASYNC110
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert trio.current_time() - started < 10  # trio's SIGTERM, not the 30 s download
    assert not fake_host.policy.exists()
    assert "policy-rc.d says" not in fake_host.log.read_text()  # dpkg never ran
    assert not any(line.startswith("── installed") for line in fake_host.lines)


async def test_the_install_is_outside_the_story_deadline(
    fake_host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An install longer than the story's deadline does not time the demo out."""

    class Reached(Exception):
        pass

    def private_containerd() -> None:
        raise Reached  # the story starts: the install is behind us

    monkeypatch.setenv("FAKE_SLEEP", "0.3")  # each of 3 apt-get runs: 0.9 s in all
    monkeypatch.setattr(demo, "DEADLINE", 0.5)
    monkeypatch.setattr(demo, "missing_packages", lambda: ["containerd"])
    monkeypatch.setattr(demo, "PrivateContainerd", private_containerd)
    lines: list[str] = []
    with pytest.RaisesGroup(Reached, flatten_subgroups=True, allow_unwrapped=True):
        await demo.demo(Options(command=Command.DEMO), emit=lines.append)
    assert any(line.startswith("── installed containerd") for line in lines), lines
