"""`make runtime` says what it is doing: progress lines during the long kernel compile, and a
clear "waiting for another build" when another build of the same kernel holds the cache lock
(both used to be minutes of silence). Nothing is compiled here: fake commands and a fake cache."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "runtime"))
import build  # noqa: E402  (runtime/build.py)

KBUILD_LIKE = 'echo "  CC      a.o"; sleep 1; echo "  CC      b.o"; echo "  LD      vmlinux"; sleep 0.5'


def test_a_long_compile_prints_progress_with_elapsed_time(capsys: pytest.CaptureFixture[str]) -> None:
    build.run_with_progress(["sh", "-c", KBUILD_LIKE], {"PATH": "/usr/bin:/bin"}, "kernel: compiling", interval=0.3)
    lines = capsys.readouterr().err.splitlines()
    ticks = [line for line in lines if "objects built" in line and "elapsed" in line]
    assert len(ticks) >= 2, lines  # ~1.5 s at one line per 0.3 s
    assert re.fullmatch(r"\[runtime\] kernel: compiling: [0-3] objects built, \d+s elapsed", ticks[0]), ticks
    assert re.fullmatch(r"\[runtime\] kernel: compiling: done \(3 objects, \d+s\)", lines[-1]), lines


def test_a_failed_compile_shows_its_last_output_lines(capsys: pytest.CaptureFixture[str]) -> None:
    failing = 'echo "  CC      a.o"; echo "drivers/x.c:1: error: boom"; exit 2'
    with pytest.raises(subprocess.CalledProcessError):
        build.run_with_progress(["sh", "-c", failing], {"PATH": "/usr/bin:/bin"}, "kernel: compiling", interval=30)
    assert "drivers/x.c:1: error: boom" in capsys.readouterr().err


# Holds the kernel's cache lock like a running build, then "finishes" that kernel and exits.
HOLDER = """
import fcntl, sys, time
from pathlib import Path
lock, kdir = Path(sys.argv[1]), Path(sys.argv[2])
f = open(lock, "w")
fcntl.flock(f, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(1.5)
kdir.mkdir()
(kdir / "vmlinux").write_bytes(b"kernel")
"""


def test_a_second_build_of_the_same_kernel_says_it_is_waiting(tmp_path: Path) -> None:
    version = "6.1.0-test"
    kdir = tmp_path / f"kernel-{build.kernel_key(version)}"
    lock = tmp_path / "locks" / f"{kdir.name}.lock"
    lock.parent.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), str(kdir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        waiter = subprocess.run(
            [sys.executable, "-c", "import sys; from pathlib import Path; import build; "
             "print(build.build_kernel(sys.argv[1], Path(sys.argv[2]), 1))", version, str(tmp_path)],
            cwd=REPO / "runtime", capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        holder.wait(timeout=30)
    assert waiter.returncode == 0, waiter.stderr
    assert waiter.stdout.strip() == str(kdir)  # the other build's kernel, not a second compile
    err = waiter.stderr.splitlines()
    assert err[0] == f"[runtime] waiting for another build of the same kernel (lock {lock})", err
    assert err[1].startswith("[runtime] lock acquired after ")
    assert err[2] == f"[runtime] kernel: built by the other build ({kdir})", err
