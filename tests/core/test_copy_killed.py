"""copy_out killed mid-way: its staging directory does not stay for good (fsutil/extract.py).

A module of its own: the copier is a second process on the same local home, which the Ray and
REST suites (that run tests/core/test_copy.py through their backends) do not have."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import boxlite

COPIER = """
import asyncio, sys
import boxlite

async def main(home: str, box_id: str, dest: str) -> None:
    rt = boxlite.Boxlite(boxlite.Options(home_dir=home))
    box = await rt.get(box_id)
    assert box is not None
    await box.copy_out("/big", dest)

asyncio.run(main(*sys.argv[1:]))
"""


def _stages(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.startswith(".boxlite-copy-"))


async def test_a_copy_killed_midway_leaves_nothing_once_the_next_copy_ran(
    box: boxlite.SimpleBox, home: Path, tmp_path: Path
) -> None:
    """kill -9 of a process in the middle of copy_out left its staging directory (a partial copy,
    up to the whole size) beside the user's destination for good. The next copy into the same
    directory removes it; a copy still running (here: stopped) keeps its own."""
    made = await box.exec("sh", "-c", "head -c 67108864 /dev/urandom > /big && echo small > /small")
    assert made.exit_code == 0, made
    dest = tmp_path / "out"
    dest.mkdir()
    for _attempt in range(5):
        copier = subprocess.Popen([sys.executable, "-c", COPIER, str(home), box.id, str(dest / "big")])
        while copier.poll() is None and not _stages(dest):
            await asyncio.sleep(0.0005)
        if copier.poll() is None:
            copier.send_signal(signal.SIGSTOP)  # caught in the middle of its copy
            break
        assert copier.returncode == 0
        (dest / "big").unlink()  # it finished before we looked: again
    else:
        pytest.fail("the 64 MiB copy never ran long enough to be caught")
    left = _stages(dest)
    assert len(left) == 1
    try:
        await box.copy_out("/small", str(dest / "small"))
        assert _stages(dest) == left  # a live copy's staging directory is not touched
    finally:
        copier.kill()
        copier.wait()
    assert _stages(dest) == left  # what kill -9 leaves
    await box.copy_out("/small", str(dest / "small2"))
    assert _stages(dest) == []
    assert sorted(os.listdir(dest)) == ["small", "small2"]
    assert (dest / "small2").read_text() == "small\n"
