"""Runtime artifact: build, manifest verification, lookup errors, deterministic initramfs."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from boxlite import runtime_artifact
from boxlite.errors import EngineError

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.vm


def test_artifact_built_and_verified(artifact: runtime_artifact.RuntimeArtifact) -> None:
    m = artifact.manifest
    assert m["format"] == 1
    assert m["kernel"]["release"].endswith("-boxlite")
    assert {"python3.11-minimal", "libc6", "linux-source-6.1"} <= m["packages"].keys()
    members = m["initramfs"]
    assert "init" in members
    assert "opt/boxlite/agent/vminit.py" in members
    assert "opt/boxlite/agent/server.py" in members
    assert "usr/bin/python3.11" in members
    # every shipped agent source is the one in the tree
    for name, digest in members.items():
        if name.startswith("opt/boxlite/agent/") and name.endswith(".py"):
            src = REPO / "src/boxlite/agent" / name.rsplit("/", 1)[1]
            assert hashlib.sha256(src.read_bytes()).hexdigest() == digest, name


def test_rebuild_is_cached(artifact: runtime_artifact.RuntimeArtifact, tmp_path: Path) -> None:
    out = tmp_path / "rt"
    res = subprocess.run(
        [sys.executable, str(REPO / "runtime/build.py"), "--out", str(out)], capture_output=True, text=True, check=True
    )
    assert "cached" in res.stderr
    assert runtime_artifact.verify(out).manifest["key"] == artifact.key


def test_tampered_artifact_is_rejected(artifact: runtime_artifact.RuntimeArtifact, tmp_path: Path) -> None:
    copy = tmp_path / "rt"
    shutil.copytree(artifact.path, copy)
    with open(copy / "initramfs.cpio", "r+b") as f:
        f.seek(1000)
        f.write(b"X")
    with pytest.raises(EngineError, match="does not match its manifest"):
        runtime_artifact.verify(copy)


def test_missing_artifact_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(runtime_artifact.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(EngineError, match="make runtime"):
        runtime_artifact.locate()


def test_env_var_wins(
    artifact: runtime_artifact.RuntimeArtifact, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "rt"
    shutil.copytree(artifact.path, copy)
    monkeypatch.setenv(runtime_artifact.ENV_VAR, str(copy))
    assert runtime_artifact.locate().path == copy.resolve()


def test_bad_manifest(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(EngineError, match="format"):
        runtime_artifact.verify(tmp_path)


def test_initramfs_is_deterministic(artifact: runtime_artifact.RuntimeArtifact, tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "runtime"))
    try:
        import build  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    cache = build.default_cache()
    versions = dict(artifact.manifest["packages"])
    versions.pop("linux-source-6.1")
    a, b = tmp_path / "a.cpio", tmp_path / "b.cpio"
    build.build_initramfs(versions, cache, False, a)
    build.build_initramfs(versions, cache, False, b)
    assert a.read_bytes() == b.read_bytes()
    assert hashlib.sha256(a.read_bytes()).hexdigest() == artifact.manifest["files"]["initramfs.cpio"]
