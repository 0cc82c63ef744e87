#!/usr/bin/env python3
"""Check that each wheel's manylinux tags are true for what it contains, as `auditwheel show` sees it.

    check_wheel.py WHEEL...           (needs auditwheel installed in this interpreter)

setup.py tags the wheel itself (no `auditwheel repair`: there is nothing to graft, the only ELF
file is the guest kernel); this confirms the tag: every platform tag must be a manylinux policy
at least as new as the oldest one auditwheel finds the wheel consistent with, for the same
architecture, and the wheel must carry no plain `linux_*` tag (PyPI refuses those) and its
LICENSE. Exit 0 when all wheels pass, 1 otherwise. Run by the workflow after cibuildwheel and by
tests/build/test_reuse.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

LEGACY = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}  # PEP 513/571/599
# auditwheel wraps its lines at varying points: any whitespace between the words.
CONSISTENT = re.compile(r'consistent\s+with\s+the\s+following\s+platform\s+tag:\s*"(manylinux_(\d+)_(\d+)_(\w+))"')


def policy(tag: str) -> tuple[tuple[int, int], str] | None:
    """((glibc major, minor), arch) of a manylinux platform tag, None for any other tag."""
    m = re.fullmatch(r"manylinux_(\d+)_(\d+)_(\w+)", tag)
    if m:
        return (int(m[1]), int(m[2])), m[3]
    name, _, arch = tag.partition("_")
    return (LEGACY[name], arch) if name in LEGACY else None


def wheel_tags(wheel: Path) -> list[str]:
    """The platform tags of the WHEEL file's `Tag:` lines (the filename's compressed tag set)."""
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/WHEEL"))
        lines = zf.read(name).decode().splitlines()
    return [line.split(": ", 1)[1].split("-")[2] for line in lines if line.startswith("Tag: ")]


def problems(wheel: Path) -> list[str]:
    res = subprocess.run(
        [sys.executable, "-m", "auditwheel", "show", str(wheel)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    print(res.stdout.strip())
    if res.returncode != 0:
        return [f"auditwheel show failed (exit {res.returncode})"]
    m = CONSISTENT.search(res.stdout)
    if m is None:
        return ["auditwheel found no manylinux policy the wheel is consistent with"]
    oldest, arch = (int(m[2]), int(m[3])), m[4]
    out = []
    tags = wheel_tags(wheel)
    if not tags:
        out.append("the WHEEL file has no Tag lines")
    for tag in tags:
        found = policy(tag)
        if found is None:
            out.append(f"platform tag {tag} is not a manylinux tag (PyPI refuses linux_* wheels)")
        elif found[1] != arch:
            out.append(f"platform tag {tag} is for {found[1]}, the wheel's ELF files for {arch}")
        elif found[0] < oldest:
            out.append(f"platform tag {tag} claims glibc {found[0]}, auditwheel needs at least {oldest}")
    file_tags = wheel.name[: -len(".whl")].split("-")[-1].split(".")
    if sorted(file_tags) != sorted(tags):
        out.append(f"the file name's tags {file_tags} differ from the WHEEL file's {tags}")
    with zipfile.ZipFile(wheel) as zf:
        if not any(n.endswith(".dist-info/licenses/LICENSE") for n in zf.namelist()):
            out.append("no .dist-info/licenses/LICENSE in the wheel")
    return out


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 1
    failed = False
    for arg in argv:
        wheel = Path(arg)
        found = problems(wheel)
        for p in found:
            print(f"check_wheel: {wheel.name}: {p}", file=sys.stderr)
        if not found:
            print(f"check_wheel: {wheel.name}: ok")
        failed |= bool(found)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
