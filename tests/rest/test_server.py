"""Server process lifecycle: a graceful stop ends commands, stops boxes, removes the socket."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import boxlite
from rest.serverproc import start_server, stop_server, wait_ready


async def test_sigterm_stops_boxes_and_cleans_up(tmp_path: Path, busybox_rootfs: Path) -> None:
    home = tmp_path / "home"
    sock = home / "boxlite.sock"
    proc = start_server(home)
    try:
        wait_ready(proc, f"unix://{sock}")
        rt = boxlite.Boxlite.rest(f"unix://{sock}")
        box = await rt.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=False))
        execution = await box.exec("sleep", ["100"])
        proc.send_signal(signal.SIGTERM)
        status = await asyncio.wait_for(execution.wait(), 10)
        assert status.exit_code == -1 and "connection" in (status.error_message or "")
        assert await asyncio.to_thread(proc.wait, 30) == 0
        assert not sock.exists()
        local = boxlite.Boxlite(boxlite.Options(home_dir=str(home)))
        info = await local.get_info(box.id)
        assert info is not None and info.status == "stopped"
        await local.shutdown()
    finally:
        if proc.poll() is None:
            stop_server(proc)


def test_a_second_server_on_the_same_socket_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = start_server(home)
    try:
        wait_ready(first, f"unix://{home / 'boxlite.sock'}")
        second = start_server(home)
        _, err = second.communicate(timeout=30)
        assert second.returncode == 2 and b"already listening" in err
    finally:
        stop_server(first)


def test_server_exits_when_stdin_closes(tmp_path: Path) -> None:
    proc = start_server(tmp_path / "home", "--exit-on-stdin-eof")
    try:
        wait_ready(proc, f"unix://{tmp_path / 'home' / 'boxlite.sock'}")
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(15) == 0
        assert not (tmp_path / "home" / "boxlite.sock").exists()
    finally:
        if proc.poll() is None:
            stop_server(proc)
