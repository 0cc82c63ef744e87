"""The KVM probe's verdict is a fact of the host: one probe serves every home of a user
(engines/vm/verdict.py). Before, each new home booted the probe again: ~4 s before the first box
of every fresh home on a host whose KVM hangs (kvm-pvm), with ``engine="auto"``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from boxlite.engines.vm import accel, verdict
from boxlite.runtime_artifact import locate

MANIFEST = {"files": {"vmlinux": "k"}}


class _Artifact:
    manifest = MANIFEST


@pytest.fixture
def probes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Probe boots made (a fake probe answering TCG), with this test's own user cache."""
    made: list[int] = []
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("BOXLITE_VM_ACCEL", raising=False)
    monkeypatch.setattr(verdict, "kvm_device_usable", lambda: True)
    monkeypatch.setattr(verdict, "qemu_version", lambda: "q")
    monkeypatch.setattr(accel, "_probe", lambda artifact: made.append(1) or accel.Accel("tcg", "hung"))
    return made


def shared_file(tmp_path: Path) -> Path:
    return verdict.verdict_path(MANIFEST, tmp_path / "xdg" / "boxlite" / "vm-accel")


def test_one_probe_serves_every_home(tmp_path: Path, probes: list[int], capsys: pytest.CaptureFixture[str]) -> None:
    home_a, home_b = tmp_path / "a" / "cache" / "vm", tmp_path / "b" / "cache" / "vm"
    assert accel.choose(_Artifact(), home_a).name == "tcg"  # type: ignore[arg-type]
    assert probes == [1]
    assert json.loads(shared_file(tmp_path).read_text())["name"] == "tcg"
    assert oct(shared_file(tmp_path).parent.stat().st_mode & 0o777) == "0o700"
    capsys.readouterr()
    assert accel.choose(_Artifact(), home_b).name == "tcg"  # type: ignore[arg-type]
    assert probes == [1]  # no second boot for the new home
    assert "KVM cannot run guests" in capsys.readouterr().err  # the notice stays once per home


def test_the_homes_own_verdict_comes_first(tmp_path: Path, probes: list[int]) -> None:
    home = tmp_path / "a" / "cache" / "vm"
    shared_file(tmp_path).parent.mkdir(parents=True)
    shared_file(tmp_path).write_text(json.dumps({"name": "kvm", "reason": "shared"}))
    home.mkdir(parents=True)
    verdict.verdict_path(MANIFEST, home).write_text(json.dumps({"name": "tcg", "reason": "home"}))
    assert accel.choose(_Artifact(), home, announce=False).reason == "home"
    assert probes == []


@pytest.mark.parametrize("attack", ["group-writable", "symlink", "other-owner", "not-a-verdict"])
def test_a_shared_verdict_others_could_write_is_not_believed(tmp_path: Path, probes: list[int], attack: str) -> None:
    """The shared cache lies outside the home: a verdict there counts only in a regular file of
    this user that nobody else may write (a planted "kvm" would send VM boxes to a hanging KVM)."""
    path = shared_file(tmp_path)
    path.parent.mkdir(parents=True)
    planted = json.dumps({"name": "kvm", "reason": "planted"})
    if attack == "symlink":
        target = tmp_path / "elsewhere.json"
        target.write_text(planted)
        path.symlink_to(target)
    else:
        path.write_text(planted if attack != "not-a-verdict" else json.dumps({"name": "fast", "reason": "x"}))
        path.chmod(0o664 if attack == "group-writable" else 0o644)
        if attack == "other-owner":
            os.chown(path, 4242, 4242)
    assert accel.choose(_Artifact(), tmp_path / "home", announce=False).name == "tcg"
    assert probes == [1]  # probed instead


def test_an_unwritable_user_cache_leaves_the_home_verdict(tmp_path: Path, probes: list[int]) -> None:
    (tmp_path / "xdg").write_text("not a directory")
    home = tmp_path / "home"
    assert accel.choose(_Artifact(), home, announce=False).name == "tcg"
    assert json.loads(verdict.verdict_path(MANIFEST, home).read_text())["reason"] == "hung"
    assert accel.choose(_Artifact(), home, announce=False).name == "tcg"
    assert probes == [1]


def test_a_fresh_home_runs_its_first_box_without_a_probe(tmp_path: Path, busybox_rootfs: Path) -> None:
    """Real processes, real artifact, ``engine="auto"``: the first home's run probes (its cache
    and the user's get the verdict), a second fresh home's run finds it and boots no probe. (On a
    host without a usable /dev/kvm the verdict needs no probe at all: then neither home stores one.)"""
    probing = verdict.kvm_device_usable()
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    for name in ("BOXLITE_VM_ACCEL", "BOXLITE_ENGINE", "BOXLITE_HOME"):
        env.pop(name, None)
    manifest = locate().manifest
    for home in (tmp_path / "first", tmp_path / "second"):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "boxlite.cli",
                "--home",
                str(home),
                "run",
                "--rm",
                "--rootfs",
                str(busybox_rootfs),
                "true",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
    shared = verdict.verdict_path(manifest, tmp_path / "xdg" / "boxlite" / "vm-accel")
    assert shared.exists() == probing
    if probing:
        assert json.loads(shared.read_text())["name"] in ("kvm", "tcg")
    assert verdict.verdict_path(manifest, tmp_path / "first" / "cache" / "vm").exists() == probing  # probed there
    assert not verdict.verdict_path(manifest, tmp_path / "second" / "cache" / "vm").exists()  # never here
