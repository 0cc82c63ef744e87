"""``Box.signal_main`` and ``BoxInfo.command/env`` on a local home (the REST and Ray backends
forward to this; tests/rest/test_rest_signal.py): sync API, typed refusals, masked env."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import boxlite
from boxlite.sync_api import SyncBox, SyncBoxlite

TRAPPER = "trap 'echo usr1 >> /tmp/got' USR1; touch /tmp/ready; while :; do sleep 0.1; done"


def _until(box: SyncBox, check: str) -> None:
    for _ in range(150):
        if box.exec("sh", ["-c", check]).wait().exit_code == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"never true in the box: {check}")


def test_signal_main_and_info_locally(engine: str, busybox_rootfs: Path, tmp_path: Path) -> None:
    options = boxlite.BoxOptions(
        rootfs_path=str(busybox_rootfs), cmd=["sh", "-c", TRAPPER], env={"PLAIN": "seen", "DB_PASSWORD": "pw-123"}
    )
    with SyncBoxlite(boxlite.Options(home_dir=str(tmp_path / "home"), engine=engine)) as rt:
        box = rt.create(options)
        info = box.info()
        assert info.command == ["sh", "-c", TRAPPER]
        assert info.env is not None and info.env["PLAIN"] == "seen" and info.env["DB_PASSWORD"] == "******"
        assert "pw-123" not in str(info)
        with pytest.raises(boxlite.InvalidStateError):  # not running
            box.signal_main(10)
        box.start()
        for bad in (0, 65, -1, True, "10"):
            with pytest.raises(boxlite.ConfigError):
                box.signal_main(bad)  # type: ignore[arg-type]
        _until(box, "test -e /tmp/ready")
        box.signal_main(10)
        _until(box, "grep -q usr1 /tmp/got")
        assert box.info().state.running
        idle = rt.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs)))
        assert idle.info().command is None
        idle.start()
        with pytest.raises(boxlite.InvalidStateError, match="main process"):
            idle.signal_main(10)
        rt.remove(idle.id, force=True)
        rt.remove(box.id, force=True)
