"""Locate and verify the VM runtime artifact (guest kernel + initramfs + manifest).

Search order: ``$BOXLITE_RUNTIME_DIR``; the installed package's ``boxlite/runtime/``
directory (when it holds a ``manifest.json``); ``<repo>/target/boxlite-runtime`` for a source
checkout. The artifact is built by ``make runtime`` (``runtime/build.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import EngineError

ENV_VAR = "BOXLITE_RUNTIME_DIR"
MANIFEST = "manifest.json"
FORMAT = 1
BUILD_HINT = "run `make runtime` in the BoxLite source tree (or set BOXLITE_RUNTIME_DIR)"

_verified: dict[tuple[str, int, int, int], str] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class RuntimeArtifact:
    """A verified artifact directory."""

    path: Path
    manifest: dict[str, Any]

    @property
    def kernel(self) -> Path:
        return self.path / "vmlinux"

    @property
    def initramfs(self) -> Path:
        return self.path / "initramfs.cpio"

    @property
    def debug(self) -> bool:
        return bool(self.manifest.get("debug"))

    @property
    def key(self) -> str:
        return str(self.manifest.get("key", ""))


def candidates() -> list[Path]:
    """Directories searched for the artifact, in order."""
    env = os.environ.get(ENV_VAR)
    if env:
        return [Path(env)]
    pkg = Path(__file__).resolve().parent
    out = [pkg / "runtime"]
    repo = pkg.parent.parent
    if (repo / "runtime" / "build.py").exists():
        out.append(repo / "target" / "boxlite-runtime")
    return out


def locate() -> RuntimeArtifact:
    """The first artifact found, verified; ``EngineError`` naming the fix otherwise."""
    tried = candidates()
    for path in tried:
        if (path / MANIFEST).is_file():
            return verify(path)
    where = ", ".join(str(p) for p in tried)
    raise EngineError(f"the VM runtime artifact was not found (looked in {where}): {BUILD_HINT}")


def peek_manifest() -> dict[str, Any] | None:
    """The manifest of the artifact :func:`locate` would pick, NOT verified (None if none is
    readable): enough to look up a cached KVM verdict before paying for the file hashes."""
    for path in candidates():
        if (path / MANIFEST).is_file():
            try:
                manifest = json.loads((path / MANIFEST).read_text())
            except (OSError, ValueError):
                return None
            return manifest if isinstance(manifest, dict) else None
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _file_digest(path: Path) -> str:
    """sha256 of ``path``, memoized per (path, inode, size, mtime) within the process."""
    st = path.stat()
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    with _lock:
        cached = _verified.get(key)
    if cached is None:
        cached = _sha256(path)
        with _lock:
            _verified[key] = cached
    return cached


def verify(path: Path) -> RuntimeArtifact:
    """Check the manifest format and the sha256 of every listed file."""
    path = path.resolve()
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise EngineError(f"VM runtime artifact {path}: unreadable manifest ({e}); {BUILD_HINT}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise EngineError(f"VM runtime artifact {path}: unsupported manifest format; {BUILD_HINT}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not {"vmlinux", "initramfs.cpio"} <= files.keys():
        raise EngineError(f"VM runtime artifact {path}: manifest lists no kernel/initramfs; {BUILD_HINT}")
    for name, digest in files.items():
        f = path / name
        try:
            actual = _file_digest(f)
        except OSError as e:
            raise EngineError(f"VM runtime artifact {path}: {name} missing ({e.strerror}); {BUILD_HINT}") from None
        if actual != digest:
            raise EngineError(f"VM runtime artifact {path}: {name} does not match its manifest; {BUILD_HINT}")
    return RuntimeArtifact(path, manifest)


def stale_agent_files(artifact: RuntimeArtifact) -> list[str]:
    """Agent sources of this checkout that differ from the artifact's copy (empty when the
    package has no ``agent`` sources next to it, e.g. an installed wheel that matches)."""
    agent_dir = Path(__file__).resolve().parent / "agent"
    shipped = {
        name.rsplit("/", 1)[1]: digest
        for name, digest in artifact.manifest.get("initramfs", {}).items()
        if name.startswith("opt/boxlite/agent/") and name.endswith(".py") and name.count("/") == 3
    }
    stale = []
    for src in sorted(agent_dir.glob("*.py")):
        if shipped.get(src.name) != _sha256(src):
            stale.append(src.name)
    return stale
