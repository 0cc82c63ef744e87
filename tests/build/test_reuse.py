"""One runtime build, reused: the Python wheel and the npm package copy the artifact, never rebuild it.

Runs `make runtime` (cached: ~2 s when the inputs are unchanged), then `make dist:python
dist:node` into a temporary directory, and checks that the artifact in target/ was left alone
and that both packages carry its exact manifest (and files). See docs/ci.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACT = REPO / "target" / "boxlite-runtime"
FILES = ["manifest.json", "vmlinux", "initramfs.cpio"]

pytestmark = [
    pytest.mark.slow,  # ~1 min: a wheel build (isolated build env) and an npm pack
    pytest.mark.timeout(900),
    pytest.mark.skipif(shutil.which("npm") is None, reason="needs npm"),
    pytest.mark.skipif(shutil.which("make") is None, reason="needs make"),
]


def make(*args: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("BOXLITE_RUNTIME_DIR", "BOXLITE_RUNTIME_ARTIFACT")}
    res = subprocess.run(
        ["make", "--no-print-directory", *args, f"PYTHON={sys.executable}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert res.returncode == 0, f"make {' '.join(args)} failed:\n{res.stdout[-4000:]}"


def snapshot(path: Path) -> dict[str, tuple[int, int, int]]:
    """(inode, mtime_ns, size) of each artifact file: a rebuild or re-install changes them."""
    out = {}
    for name in FILES:
        st = (path / name).stat()
        out[name] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


def runtime_cache_entries() -> set[str]:
    sys.path.insert(0, str(REPO / "runtime"))
    try:
        import build  # runtime/build.py

        cache = Path(build.default_cache())
    finally:
        sys.path.remove(str(REPO / "runtime"))
    return {p.name for p in cache.iterdir()} if cache.is_dir() else set()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_wheel_and_npm_package_reuse_the_runtime_artifact(tmp_path: Path) -> None:
    make("runtime")
    before = snapshot(ARTIFACT)
    manifest = (ARTIFACT / "manifest.json").read_bytes()
    digests = json.loads(manifest)["files"]
    cache_before = runtime_cache_entries()

    dist = tmp_path / "dist"
    make("dist:python", "dist:node", f"DIST={dist}")

    # Not rebuilt, not re-installed: same inodes, mtimes and sizes; same manifest bytes;
    # nothing new in the runtime build cache.
    assert snapshot(ARTIFACT) == before
    assert (ARTIFACT / "manifest.json").read_bytes() == manifest
    assert runtime_cache_entries() == cache_before

    (wheel,) = dist.glob("boxlite-*.whl")
    assert wheel.name.endswith(f"-py3-none-linux_{platform.machine()}.whl"), wheel.name
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read("boxlite/runtime/manifest.json") == manifest
        for name, digest in digests.items():
            assert sha256(zf.read(f"boxlite/runtime/{name}")) == digest, name

    (tgz,) = dist.glob("boxlite-*.tgz")
    with tarfile.open(tgz) as tf:

        def member(name: str) -> bytes:
            f = tf.extractfile(f"package/runtime/{name}")
            assert f is not None
            return f.read()

        assert member("manifest.json") == manifest
        for name, digest in digests.items():
            assert sha256(member(name)) == digest, name

    # The installed wheel finds (and verifies) its bundled artifact.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("BOXLITE_RUNTIME_DIR", "PYTHONPATH")}
    subprocess.run(
        [py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", str(wheel)],
        check=True,
        env=env,
    )
    out = subprocess.run(
        [py, "-c", "from boxlite.runtime_artifact import locate; a = locate(); print(a.path, a.key)"],
        cwd=tmp_path,
        env=env,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout.split()
    found = Path(out[0])
    assert found.is_relative_to(venv.resolve()) and found.parts[-2:] == ("boxlite", "runtime"), found
    assert out[1] == json.loads(manifest)["key"]
