"""`boxlite run` pre-starts the namespace zygote while it imports the runtime (cli/warm.py,
api/prestart.py): only when the box will use the namespace engine, and the engine adopts it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from boxlite.api.prestart import prestart_engine
from boxlite.cli.warm import engine_arg
from boxlite.engines.namespace import zygote
from boxlite.engines.vm import kvm_known, verdict


@pytest.fixture
def no_warm_zygote() -> Iterator[None]:
    """Leave no pre-started zygote behind (it would be adopted by a later test's engine)."""
    yield
    while zygote._warm:
        _, (proc, sock) = zygote._warm.popitem()
        sock.close()
        proc.wait(timeout=10)


def test_engine_arg_reads_the_verbs_options_only() -> None:
    assert engine_arg(["--rm", "--engine", "vm", "--rootfs", "R", "true"]) == "vm"
    assert engine_arg(["--engine=namespace", "img"]) == "namespace"
    assert engine_arg(["--rm", "img", "true"]) is None
    assert engine_arg(["--rm", "--", "--engine", "vm"]) is None
    assert engine_arg(["--engine"]) is None


@pytest.fixture
def fake_artifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, object], Path]:
    """An artifact manifest (never verified here) on a host whose /dev/kvm looks usable."""
    art = tmp_path / "artifact"
    art.mkdir()
    manifest: dict[str, object] = {"format": 1, "files": {"vmlinux": "ab" * 32, "initramfs.cpio": "cd" * 32}}
    (art / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("BOXLITE_RUNTIME_DIR", str(art))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # no verdict shared by the user's homes
    monkeypatch.delenv("BOXLITE_VM_ACCEL", raising=False)
    monkeypatch.delenv("BOXLITE_ENGINE", raising=False)
    monkeypatch.setattr(verdict, "kvm_device_usable", lambda: True)
    monkeypatch.setattr(verdict, "qemu_version", lambda: "q")
    return manifest, tmp_path / "home"


def _cache_verdict(manifest: dict[str, object], home: Path, name: str) -> None:
    path = verdict.verdict_path(manifest, home / "cache" / "vm")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"name": name, "reason": "test"}))


@pytest.mark.usefixtures("no_warm_zygote")
def test_auto_prestarts_only_on_a_cached_tcg_verdict(fake_artifact: tuple[dict[str, object], Path]) -> None:
    manifest, home = fake_artifact
    assert kvm_known(str(home)) is None  # no verdict yet: only a probe could tell
    assert not prestart_engine(None, str(home)) and not zygote._warm
    _cache_verdict(manifest, home, "kvm")
    assert kvm_known(str(home)) is True
    assert not prestart_engine("auto", str(home)) and not zygote._warm  # auto means vm here
    assert not prestart_engine("vm", str(home)) and not zygote._warm
    _cache_verdict(manifest, home, "tcg")
    assert kvm_known(str(home)) is False
    if os.geteuid() != 0:  # the namespace engine needs root: nothing to pre-start without it
        assert not prestart_engine(None, str(home))
        return
    assert prestart_engine(None, str(home))
    ((proc, _),) = zygote._warm.values()
    assert proc.poll() is None


ADOPT = """
import asyncio, json, sys
import boxlite
from boxlite.api.prestart import prestart_engine
from boxlite.engines.namespace import zygote
from boxlite.runtime.engines import select_engine

assert prestart_engine("namespace", sys.argv[1])
((warm, _),) = zygote._warm.values()

async def main():
    rt = boxlite.Boxlite(boxlite.Options(home_dir=sys.argv[1], engine="namespace"))
    box = await rt.create(boxlite.BoxOptions(rootfs_path=sys.argv[2], network="disabled", auto_remove=True))
    status = await (await box.exec("true", stdin=False)).wait()
    used = [z._proc.pid for z in select_engine("namespace")._zygotes.values() if z._proc is not None]
    await rt.remove(box.id, force=True)
    await rt.shutdown(timeout=2)
    return {"warm": warm.pid, "used": used, "exit": status.exit_code, "left": len(zygote._warm)}

print(json.dumps(asyncio.run(main())))
"""


def test_the_engine_adopts_the_prestarted_zygote(tmp_path: Path, busybox_rootfs: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", ADOPT, str(tmp_path / "home"), str(busybox_rootfs)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result == {"warm": result["warm"], "used": [result["warm"]], "exit": 0, "left": 0}


def test_auto_reads_the_kvm_verdict_of_the_runtimes_own_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, busybox_rootfs: Path
) -> None:
    """`Options(home_dir=...)`/`--home`: "auto" decides from the verdict cached in that home (the
    one the CLI's pre-start reads), not from `$BOXLITE_HOME`'s. (Where KVM or the artifact is
    missing both say namespace, and the box must still start.)"""
    import asyncio

    import boxlite
    from boxlite.runtime_artifact import peek_manifest

    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    manifest = peek_manifest()
    if manifest is not None:
        _cache_verdict(manifest, home, "tcg")
        _cache_verdict(manifest, elsewhere, "kvm")  # read before the fix: a vm box on a host without usable KVM
    monkeypatch.setenv("BOXLITE_HOME", str(elsewhere))
    monkeypatch.delenv("BOXLITE_ENGINE", raising=False)
    monkeypatch.delenv("BOXLITE_VM_ACCEL", raising=False)

    async def engine_of_an_auto_box() -> str:
        rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home)))
        box = await rt.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), network="disabled"))
        try:
            return box.info().engine
        finally:
            await rt.remove(box.id, force=True)
            await rt.shutdown(timeout=5)

    assert asyncio.run(engine_of_an_auto_box()) == "namespace"


def test_verdict_module_names_the_same_qemu() -> None:
    """engines/vm/verdict.py keys the cached verdict on the QEMU the engine runs."""
    from boxlite.engines.vm import qemu

    assert verdict.QEMU == qemu.QEMU


def test_asking_the_verdict_loads_no_vm_engine(tmp_path: Path) -> None:
    """``engine="auto"`` asks the cached verdict on every namespace ``boxlite run``: that must not
    import the VM engine's QEMU configuration or its probe (issue 17: lazy imports)."""
    code = (
        "import sys; from boxlite.engines.vm import kvm_known; kvm_known(sys.argv[1]); "
        "print(sorted(m for m in sys.modules if m.startswith('boxlite.engines.vm.')))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['boxlite.engines.vm.verdict']", out
