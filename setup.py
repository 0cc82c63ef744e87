"""Build hook: bundle the VM runtime artifact into the wheel (see docs/ci.md).

Metadata lives in pyproject.toml; this file only adds two command overrides.

* ``build_py`` copies the artifact built once by ``make runtime`` (``target/boxlite-runtime``, or
  the directory named by ``$BOXLITE_RUNTIME_ARTIFACT``, the variable sdks/node uses too) into
  ``<build_lib>/boxlite/runtime/{vmlinux,initramfs.cpio,manifest.json}``, where
  ``boxlite.runtime_artifact.locate()`` looks inside an installed package. The files are
  checked against the manifest's sha256 first and only read: the artifact is never rebuilt
  or modified here (its files are hard links into the runtime build cache).
* ``bdist_wheel`` tags a wheel that holds the artifact
  ``py3-none-manylinux_2_17_<arch>.manylinux2014_<arch>`` (see ``platform_tag``): pure Python
  plus platform-specific data (the guest kernel), so one wheel serves every Python >= 3.10 of that
  platform. Without an artifact the wheel is ``py3-none-any`` (namespace engine only), unless
  ``BOXLITE_REQUIRE_RUNTIME=1`` (``make dist:python``, CI), which turns that into an error.

``$BOXLITE_BUILD_BASE`` replaces setuptools' ``build/`` and ``src/boxlite.egg-info`` in the source
tree (``make dist:python`` gives each run a fresh one): two builds of one checkout then never share,
or delete, each other's ``build/bdist.*`` or file lists, and no stale module from an earlier build
can reach the wheel.

Editable installs (``pip install -e .``) copy nothing: ``locate()`` finds
``<repo>/target/boxlite-runtime`` directly, so a rebuilt artifact is used without reinstalling.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py as _build_py

try:  # setuptools >= 70.1 ships bdist_wheel; older ones use the `wheel` package's
    from setuptools.command.bdist_wheel import bdist_wheel as _bdist_wheel
except ImportError:  # pragma: no cover
    try:
        from wheel.bdist_wheel import bdist_wheel as _bdist_wheel  # type: ignore[no-redef]
    except ImportError:
        _bdist_wheel = None  # type: ignore[assignment,misc]

HERE = Path(__file__).resolve().parent
PKG_DIR = ("boxlite", "runtime")  # boxlite/runtime/ inside the wheel
ELF_MACHINES = {62: "x86_64", 183: "aarch64"}  # e_machine -> wheel platform tag suffix


def platform_tag(arch: str) -> str:
    """The wheel's platform tag for a kernel of ``arch``: ``linux_<arch>`` is refused by PyPI.

    The host side is pure Python; the only ELF files are the guest's (``vmlinux``: static, no
    interpreter, run by QEMU, never loaded by the host), so no glibc symbol versions constrain the
    host and ``auditwheel show`` reports the wheel consistent with its oldest policy. The tag is
    the oldest policy that exists for both x86_64 and aarch64 and that PyPI and pip >= 19.3 accept:
    manylinux_2_17 (PEP 600), with its PEP 599 alias manylinux2014 for older installers.
    tests/build checks the tag with auditwheel (.github/scripts/check_wheel.py).
    """
    return f"manylinux_2_17_{arch}.manylinux2014_{arch}"


def artifact_source() -> Path | None:
    env = os.environ.get("BOXLITE_RUNTIME_ARTIFACT")
    src = Path(env) if env else HERE / "target" / "boxlite-runtime"
    if (src / "manifest.json").is_file():
        return src.resolve()
    if env or os.environ.get("BOXLITE_REQUIRE_RUNTIME") == "1":
        raise SystemExit(
            f"boxlite: no VM runtime artifact at {src} (run `make runtime`, or set BOXLITE_RUNTIME_ARTIFACT)"
        )
    return None


def artifact_files(src: Path) -> list[str]:
    """manifest.json + the files it lists, each checked against its sha256."""
    manifest = json.loads((src / "manifest.json").read_text())
    names = sorted(manifest.get("files", {}))
    if not {"vmlinux", "initramfs.cpio"} <= set(names):
        raise SystemExit(f"boxlite: {src}/manifest.json lists no vmlinux/initramfs.cpio")
    for name in names:
        h = hashlib.sha256()
        with open(src / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != manifest["files"][name]:
            raise SystemExit(f"boxlite: {src}/{name} does not match its manifest (run `make runtime` again)")
    return ["manifest.json", *names]


def kernel_arch(src: Path) -> str | None:
    head = (src / "vmlinux").read_bytes()[:20]
    if head[:4] != b"\x7fELF":
        return None
    return ELF_MACHINES.get(int.from_bytes(head[18:20], "little" if head[5] == 1 else "big"))


class build_py(_build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        dest = Path(self.build_lib, *PKG_DIR)
        for stale in ["manifest.json", "vmlinux", "initramfs.cpio"]:  # from an earlier build
            (dest / stale).unlink(missing_ok=True)
        src = artifact_source()
        if src is None:
            self.announce("boxlite: no VM runtime artifact (run `make runtime`); building without it", 2)
            return
        dest.mkdir(parents=True, exist_ok=True)
        for name in artifact_files(src):
            shutil.copyfile(src / name, dest / name)  # a copy: never write through the cache's hard links
        self.announce(f"boxlite: bundled the VM runtime artifact from {src}", 2)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        dest = Path(self.build_lib, *PKG_DIR)
        return outputs + [str(dest / n) for n in ["manifest.json", "vmlinux", "initramfs.cpio"] if (dest / n).exists()]


cmdclass: dict[str, type] = {"build_py": build_py}

if _bdist_wheel is not None:

    class bdist_wheel(_bdist_wheel):  # type: ignore[misc,valid-type]
        def finalize_options(self) -> None:
            super().finalize_options()
            self._artifact = artifact_source()
            if self._artifact is not None:
                self.root_is_pure = False  # (BinaryDistribution already said so)

        def get_tag(self) -> tuple[str, str, str]:
            python, abi, plat = super().get_tag()
            if self._artifact is None:
                return python, abi, plat
            arch = kernel_arch(self._artifact)
            if arch is None:
                raise SystemExit(f"boxlite: {self._artifact}/vmlinux is not a kernel of a known architecture")
            if not plat.endswith(arch):
                raise SystemExit(f"boxlite: the runtime artifact's kernel is {arch}, the wheel platform {plat}")
            return "py3", "none", platform_tag(arch)

    cmdclass["bdist_wheel"] = bdist_wheel


class BinaryDistribution(Distribution):
    """Platform-specific when it bundles the artifact: the files then go to the wheel's root
    (platlib) instead of ``.data/purelib``, as for a package with extension modules."""

    def has_ext_modules(self) -> bool:
        try:
            return artifact_source() is not None
        except SystemExit:
            return False


def build_options() -> dict[str, dict[str, str]]:
    """With ``$BOXLITE_BUILD_BASE``, setuptools' ``build/`` and its ``<name>.egg-info`` both go
    there: in ``src/`` two builds at once rewrote one SOURCES.txt while the other read it (a
    truncated line made one build fail: ``can't copy 'src/boxlite/server'``)."""
    base = os.environ.get("BOXLITE_BUILD_BASE")
    return {"build": {"build_base": base}, "egg_info": {"egg_base": base}} if base else {}


setup(cmdclass=cmdclass, distclass=BinaryDistribution, options=build_options())
