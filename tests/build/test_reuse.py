"""One runtime build, reused: the Python wheel and the npm package copy the artifact, never rebuild it.

Runs `make runtime` (cached: seconds when the inputs are unchanged), then `make dist:python
dist:node` into a temporary directory once for the module, and checks that the artifact in
target/ was left alone, that both packages carry its exact manifest (and files) and the LICENSE,
and that the wheel's manylinux tag is one auditwheel agrees with. The workflow's own check steps
(.github/workflows/build-sdks.yml) run on these packages as written there. See docs/ci.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from workflow_steps import run_step, workspace

REPO = Path(__file__).resolve().parents[2]
ARTIFACT = REPO / "target" / "boxlite-runtime"
FILES = ["manifest.json", "vmlinux", "initramfs.cpio"]
ARCH = platform.machine()
NPM_CPU = {"x86_64": "x64", "aarch64": "arm64"}

pytestmark = [
    pytest.mark.slow,  # ~1 min: a wheel build (isolated build env) and an npm pack
    pytest.mark.timeout(900),
    pytest.mark.skipif(shutil.which("npm") is None, reason="needs npm"),
    pytest.mark.skipif(shutil.which("make") is None, reason="needs make"),
]


def start_make(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("BOXLITE_RUNTIME_DIR", "BOXLITE_RUNTIME_ARTIFACT")}
    return subprocess.Popen(
        ["make", "--no-print-directory", *args, f"PYTHON={sys.executable}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def make(*args: str) -> None:
    proc = start_make(*args)
    out, _ = proc.communicate()
    assert proc.returncode == 0, f"make {' '.join(args)} failed:\n{out[-4000:]}"


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


@dataclass
class Dist:
    wheel: Path
    tgz: Path
    manifest: bytes
    before: dict[str, tuple[int, int, int]]
    cache_before: set[str]

    @property
    def digests(self) -> dict[str, str]:
        return dict(json.loads(self.manifest)["files"])


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    make("runtime")
    before = snapshot(ARTIFACT)
    manifest = (ARTIFACT / "manifest.json").read_bytes()
    cache_before = runtime_cache_entries()
    out = tmp_path_factory.mktemp("dist")
    make("dist:python", "dist:node", f"DIST={out}")
    (wheel,) = out.glob("boxlite-*.whl")
    (tgz,) = out.glob("boxlite-*.tgz")
    return Dist(wheel, tgz, manifest, before, cache_before)


def tar_member(tgz: Path, name: str) -> bytes:
    with tarfile.open(tgz) as tf:
        f = tf.extractfile(f"package/{name}")
        assert f is not None, name
        return f.read()


def ci_workspace(tmp_path: Path, outdir: str, package: Path) -> Path:
    """A workspace laid out as the workflow's job has it: the package in ``outdir``, the
    downloaded runtime artifact in target/boxlite-runtime."""
    ws = workspace(tmp_path)
    (ws / outdir).mkdir()
    shutil.copy(package, ws / outdir / package.name)
    (ws / "target").mkdir()
    (ws / "target" / "boxlite-runtime").symlink_to(ARTIFACT)
    return ws


def test_packaging_neither_rebuilds_nor_touches_the_artifact(dist: Dist) -> None:
    # Same inodes, mtimes and sizes; same manifest bytes; nothing new in the runtime build cache.
    assert snapshot(ARTIFACT) == dist.before
    assert (ARTIFACT / "manifest.json").read_bytes() == dist.manifest
    assert runtime_cache_entries() == dist.cache_before


def test_wheel_carries_the_artifact(dist: Dist, tmp_path: Path) -> None:
    with zipfile.ZipFile(dist.wheel) as zf:
        assert zf.read("boxlite/runtime/manifest.json") == dist.manifest
        for name, digest in dist.digests.items():
            assert sha256(zf.read(f"boxlite/runtime/{name}")) == digest, name
    res = run_step(
        "build-python",
        "The wheel carries the runtime's exact manifest",
        ci_workspace(tmp_path, "wheelhouse", dist.wheel),
    )
    assert res.returncode == 0, res.output


def test_wheel_has_a_manylinux_tag_auditwheel_agrees_with(dist: Dist, tmp_path: Path) -> None:
    assert dist.wheel.name.endswith(f"-py3-none-manylinux_2_17_{ARCH}.manylinux2014_{ARCH}.whl"), dist.wheel.name
    step = "The wheel's platform tag is true for its contents (auditwheel show)"
    res = run_step("build-python", step, ci_workspace(tmp_path, "wheelhouse", dist.wheel))
    assert res.returncode == 0, res.output
    assert f"manylinux_2_5_{ARCH}" in res.output and "requires no external shared libraries" in res.output, res.output

    # The same check refuses what PyPI refuses: the wheel re-tagged linux_<arch>.
    bad = tmp_path / "bad" / dist.wheel.name.replace(f"manylinux_2_17_{ARCH}.manylinux2014_{ARCH}", f"linux_{ARCH}")
    bad.parent.mkdir()
    with zipfile.ZipFile(dist.wheel) as src, zipfile.ZipFile(bad, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith(".dist-info/WHEEL"):
                lines = [ln for ln in data.decode().splitlines() if not ln.startswith("Tag: ")]
                data = "\n".join([*lines, f"Tag: py3-none-linux_{ARCH}", ""]).encode()
            dst.writestr(item, data)
    (tmp_path / "b").mkdir()
    refused = run_step("build-python", step, ci_workspace(tmp_path / "b", "wheelhouse", bad))
    assert refused.returncode != 0 and "PyPI refuses" in refused.output, refused.output


def test_npm_package_carries_the_artifact(dist: Dist, tmp_path: Path) -> None:
    assert tar_member(dist.tgz, "runtime/manifest.json") == dist.manifest
    for name, digest in dist.digests.items():
        assert sha256(tar_member(dist.tgz, f"runtime/{name}")) == digest, name
    res = run_step(
        "build-node", "The package carries the runtime's exact manifest", ci_workspace(tmp_path, "npm-dist", dist.tgz)
    )
    assert res.returncode == 0, res.output
    pkg = json.loads(tar_member(dist.tgz, "package.json"))
    # The kernel is built for this machine's architecture only: npm refuses the package elsewhere.
    assert (pkg["os"], pkg["cpu"], pkg["license"]) == (["linux"], [NPM_CPU[ARCH]], "Apache-2.0")


def test_both_packages_ship_the_license(dist: Dist) -> None:
    license_text = (REPO / "LICENSE").read_bytes()
    assert b"Apache License" in license_text and b"Version 2.0, January 2004" in license_text
    with zipfile.ZipFile(dist.wheel) as zf:
        (meta,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        assert zf.read(meta.replace("METADATA", "licenses/LICENSE")) == license_text
        metadata = zf.read(meta).decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert "Project-URL: Source, https://github.com/" in metadata
    assert tar_member(dist.tgz, "LICENSE") == license_text


def test_installed_wheel_locates_its_artifact(dist: Dist, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    # The dependencies come from this interpreter's site-packages, as plain path entries: its
    # .pth files (e.g. an editable boxlite) stay unprocessed, so `boxlite` can only be the wheel's.
    site = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "_test_deps.pth").write_text("".join(f"{d}\n" for d in sorted(ours)))
    env = {k: v for k, v in os.environ.items() if k not in ("BOXLITE_RUNTIME_DIR", "PYTHONPATH")}
    subprocess.run(
        [py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", str(dist.wheel)],
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
    assert out[1] == json.loads(dist.manifest)["key"]


def test_two_wheel_builds_of_one_checkout_at_once_both_succeed(dist: Dist, tmp_path: Path) -> None:
    """Each build has a directory of its own: in a shared build/ one build's clean-up deleted the
    other's build/bdist.* before it was done (a full CI run, session 31); in a shared
    src/boxlite.egg-info one build read SOURCES.txt while the other rewrote it, and the truncated
    line it read (``src/boxlite/server``) stayed in the file and failed every later build of that
    checkout (session 37). Both kinds of leftover are planted here."""
    planted = REPO / "build" / "lib" / "boxlite" / "planted_stale_module.py"
    keep = (REPO / "build").exists()
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_text("# left by an earlier build\n")
    sources = REPO / "src" / "boxlite.egg-info" / "SOURCES.txt"
    had_egg_info = sources.parent.exists()
    old_sources = sources.read_bytes() if sources.exists() else None
    sources.parent.mkdir(exist_ok=True)
    sources.write_bytes(b"src/boxlite/server\n")  # what the race left: a directory as a file to copy
    try:
        outs = [tmp_path / "a", tmp_path / "b"]
        procs = [start_make("dist:python", f"DIST={out}") for out in outs]
        results = [(p.communicate()[0], p.wait()) for p in procs]
    finally:
        shutil.rmtree(REPO / "build") if not keep else planted.unlink(missing_ok=True)
        if not had_egg_info:
            shutil.rmtree(sources.parent)
        elif old_sources is None:
            sources.unlink()
        else:
            sources.write_bytes(old_sources)
    for out, rc in results:
        assert rc == 0, out[-4000:]
    listings = []
    for out in outs:
        (wheel,) = out.glob("boxlite-*.whl")
        with zipfile.ZipFile(wheel) as zf:
            listings.append(sorted(zf.namelist()))
    assert listings[0] == listings[1] == sorted(zipfile.ZipFile(dist.wheel).namelist())
    assert not any("planted_stale_module" in name for name in listings[0])
