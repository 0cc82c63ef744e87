"""scripts/install.sh's Python step on Debian's own interpreter.

Stock Debian 12 refuses ``pip install`` into ``/usr/bin/python3`` (PEP 668), so install.sh puts
BoxLite into a dedicated venv and links the ``boxlite`` command onto PATH. These tests run
``install.sh --python-only`` (no apt, no box) from a copy of the checkout, so a concurrent build
in the real tree cannot interfere, into temporary venv and bin directories.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import boxlite

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's interpreter (python3-venv is on scripts/test.sh's apt line)
IGNORE = shutil.ignore_patterns(
    ".git", "target", "build", "dist", "node_modules", "*.egg-info", "__pycache__", ".venv", ".*_cache"
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment minus anything that would make Python find BoxLite elsewhere."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "BOXLITE_RUNTIME_DIR", "BOXLITE_RUNTIME_ARTIFACT"}
    }
    env.update(extra)
    return env


def run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd="/", env=env or clean_env(), capture_output=True, text=True, timeout=timeout)


def fake_runtime_artifact(directory: Path) -> None:
    """A manifest-consistent stand-in for ``make runtime``'s output (an x86_64 ELF header as the kernel)."""
    directory.mkdir(parents=True)
    vmlinux = b"\x7fELF\x02\x01\x01" + b"\0" * 11 + (62).to_bytes(2, "little") + b"\0" * 44
    files = {"vmlinux": vmlinux, "initramfs.cpio": b"070701 not a real initramfs"}
    for name, data in files.items():
        (directory / name).write_bytes(data)
    manifest = {"format": 1, "key": "test", "files": {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}}
    (directory / "manifest.json").write_text(json.dumps(manifest))


def install(src: Path, venv: Path, bin_dir: Path, python: str = SYSTEM_PYTHON) -> subprocess.CompletedProcess[str]:
    env = clean_env(PYTHON=python, BOXLITE_VENV=str(venv), BOXLITE_BIN_DIR=str(bin_dir))
    return run(["bash", str(src / "scripts" / "install.sh"), "--python-only"], env=env, timeout=840)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("checkout") / "boxlite"
    shutil.copytree(REPO, src, ignore=IGNORE, symlinks=True)
    fake_runtime_artifact(src / "target" / "boxlite-runtime")
    return src


@pytest.fixture(scope="module")
def installed(source: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(venv, bin dir) after one ``install.sh --python-only`` with Debian's interpreter."""
    assert run([SYSTEM_PYTHON, "-c", "import ensurepip, venv"]).returncode == 0, "apt-get install python3-venv"
    root = tmp_path_factory.mktemp("install")
    venv, bin_dir = root / "venv", root / "bin"
    proc = install(source, venv, bin_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return venv, bin_dir


def test_venv_has_a_working_command_and_package(installed: tuple[Path, Path]) -> None:
    venv, _ = installed
    assert "home = /usr/bin\n" in (venv / "pyvenv.cfg").read_text()  # made from Debian's interpreter
    help_ = run([str(venv / "bin" / "boxlite"), "--help"])
    assert help_.returncode == 0, help_.stderr
    assert "Usage: boxlite" in help_.stdout
    where = run([str(venv / "bin" / "python"), "-c", "import boxlite; print(boxlite.__file__)"])
    assert where.returncode == 0, where.stderr
    # a regular install: the venv holds its own copy, it does not point back into the checkout
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout


def test_installed_command_starts_lean(installed: tuple[Path, Path]) -> None:
    """The command pip wrote is bin/boxlite (the generated launcher would import ``re`` first)."""
    venv, _ = installed
    script = venv / "bin" / "boxlite"
    assert script.read_text().startswith(f"#!{venv}/bin/python")
    proc = run([str(venv / "bin" / "python"), "-X", "importtime", str(script), "--version"])
    assert (proc.returncode, proc.stdout) == (0, f"boxlite, version {boxlite.__version__}\n"), proc.stderr[-2000:]
    imported = {ln.rsplit("|", 1)[1].strip() for ln in proc.stderr.splitlines() if ln.startswith("import time:")}
    assert "boxlite.cli.entry" in imported and not imported & {"re", "json", "click", "asyncio"}, sorted(imported)


def test_system_interpreter_is_untouched(installed: tuple[Path, Path]) -> None:
    proc = run([SYSTEM_PYTHON, "-c", "import boxlite"])
    assert proc.returncode != 0
    assert "No module named 'boxlite'" in proc.stderr


def test_command_lands_on_path(installed: tuple[Path, Path]) -> None:
    venv, bin_dir = installed
    link = bin_dir / "boxlite"
    assert link.is_symlink() and link.resolve() == (venv / "bin" / "boxlite").resolve()
    env = clean_env(PATH=f"{bin_dir}:/usr/bin:/bin")
    proc = run(["sh", "-c", "command -v boxlite && boxlite --help"], env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == str(link)
    assert "Usage: boxlite" in proc.stdout


def test_runtime_artifact_from_target_is_bundled(installed: tuple[Path, Path]) -> None:
    """With target/boxlite-runtime present at install time, VM boxes find it from the venv alone."""
    venv, _ = installed
    code = "from boxlite.runtime_artifact import locate; print(locate().path)"
    proc = run([str(venv / "bin" / "python"), "-c", code])
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).is_relative_to(venv), proc.stdout


def test_refuses_a_directory_that_is_not_a_venv(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "data"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    proc = install(source, target, tmp_path / "bin")
    assert proc.returncode == 1
    assert "is not a virtual environment" in proc.stderr
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]
    assert not (tmp_path / "bin").exists()


def test_interpreter_without_venv_support_is_named(source: Path, tmp_path: Path) -> None:
    python = tmp_path / "python3"  # an interpreter whose ensurepip is missing, as on Debian without python3-venv
    python.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'ensurepip'\" >&2\nexit 1\n")
    python.chmod(0o755)
    proc = install(source, tmp_path / "venv", tmp_path / "bin", python=str(python))
    assert proc.returncode == 1
    assert "apt-get install python3-venv" in proc.stderr
    assert not (tmp_path / "venv").exists()
