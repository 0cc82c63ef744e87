"""The synchronous facade mirrors the async API for scripts without asyncio."""

from __future__ import annotations

from pathlib import Path

import boxlite


def test_sync_simple_box_runs_commands(home: Path, busybox_rootfs: Path) -> None:
    with boxlite.SyncBoxlite(boxlite.Options(home_dir=str(home), engine="namespace")) as runtime:
        with boxlite.SyncSimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime) as box:
            result = box.exec("sh", "-c", "echo hi; exit 4")
            assert (result.exit_code, result.stdout) == (4, "hi\n")
        assert runtime.list_info() == []  # auto_remove on exit


def test_sync_box_streams_and_reattaches(home: Path, busybox_rootfs: Path) -> None:
    with boxlite.SyncBoxlite(boxlite.Options(home_dir=str(home), engine="namespace")) as runtime:
        box = runtime.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=False), name="s1")
        with box:
            execution = box.exec("sh", ["-c", "echo a; echo b"])
            assert "".join(execution.stdout()) == "a\nb\n"
            assert execution.wait().exit_code == 0
        again = runtime.get("s1")
        assert again is not None and again.info().state.status == "stopped"
        runtime.remove("s1")
        assert runtime.get("s1") is None
