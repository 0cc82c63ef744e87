#!/usr/bin/env python3
"""Build the BoxLite VM runtime artifact: guest kernel + initramfs + manifest.

    python3 runtime/build.py [--debug] [--out DIR] [--cache-dir DIR] [--jobs N]

Inputs are Debian packages (``linux-source-6.1`` for the kernel, Python/libc/busybox .debs
fetched with ``apt-get download``), the committed kernel config, the guest agent sources
and this script. Everything is cached under ``--cache-dir`` (default
``$BOXLITE_RUNTIME_CACHE`` or ``/var/cache/boxlite-runtime``) keyed by a hash of those
inputs, so the kernel is built once per config and an unchanged artifact is not rebuilt;
the result is then copied (hard-linked when possible) into ``--out``.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from cpio import Entry, write_cpio  # noqa: E402

FORMAT = 1
KERNEL_CONFIG = HERE / "kernel" / "config-6.1-boxlite"
KERNEL_PACKAGE = "linux-source-6.1"
AGENT_SRC = REPO / "src" / "boxlite" / "agent"
GUEST_PYTHON = "python3.11"
PACKAGES = [
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "libc6",
    "zlib1g",
    "libexpat1",
    "libffi8",
    "busybox-static",
]
LIB_DIRS = ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"]
AGENT_PARENT = "opt/boxlite"  # the agent lives at /opt/boxlite/agent, imported as `agent`
BUSYBOX_DEBUG_APPLETS = [
    "sh",
    "ls",
    "cat",
    "mount",
    "umount",
    "ps",
    "dmesg",
    "ip",
    "mkdir",
    "rm",
    "cp",
    "mv",
    "ln",
    "echo",
    "sleep",
    "grep",
    "vi",
    "df",
    "free",
    "top",
    "kill",
    "uname",
    "find",
    "stat",
]
INIT_SCRIPT = f"""#!/usr/bin/{GUEST_PYTHON} -IS
# BoxLite guest PID 1: hand over to agent.vminit.
import sys
sys.path.insert(0, "/{AGENT_PARENT}")
from agent.vminit import main
main()
"""


PROGRESS_INTERVAL = 30.0  # seconds between "still compiling" lines of a long step


def log(msg: str) -> None:
    print(f"[runtime] {msg}", file=sys.stderr, flush=True)


def elapsed(t0: float) -> str:
    s = int(time.monotonic() - t0)
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run(cmd: list[str], **kw: object) -> str:
    res = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, **kw)  # type: ignore[call-overload]
    return str(res.stdout)


@contextmanager
def locked(path: Path, what: str) -> Iterator[None]:
    """Exclusive lock on ``path``; says so when another build (of ``what``) holds it, since the
    wait can last as long as that build (minutes for a kernel) and would otherwise look hung."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            t0 = time.monotonic()
            log(f"waiting for another build of the same {what} (lock {path})")
            fcntl.flock(f, fcntl.LOCK_EX)
            log(f"lock acquired after {elapsed(t0)}")
        yield


def run_with_progress(cmd: list[str], env: dict[str, str], label: str, interval: float = PROGRESS_INTERVAL) -> None:
    """Run a kbuild ``make`` step, printing a line every ``interval`` seconds with the elapsed time
    and the number of objects built so far (kbuild's "  CC ..." lines), instead of minutes of
    silence. Its stdout is kept back; the last lines are shown if it fails (errors go to stderr)."""
    t0 = time.monotonic()
    count = 0
    tail: deque[str] = deque(maxlen=20)
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(interval):
            log(f"{label}: {count} objects built, {elapsed(t0)} elapsed")

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True, errors="replace")
    ticker = threading.Thread(target=heartbeat, daemon=True)
    ticker.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line.rstrip("\n"))
            if line.startswith(("  CC", "  AS", "  AR", "  LD")):
                count += 1
        code = proc.wait()
    finally:
        done.set()
        ticker.join()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if code != 0:
        sys.stderr.write("".join(f"  {line}\n" for line in tail))
        raise subprocess.CalledProcessError(code, cmd)
    log(f"{label}: done ({count} objects, {elapsed(t0)})")


# ---------------------------------------------------------------- inputs and cache keys


def installed_version(pkg: str) -> str | None:
    try:
        out = run(["dpkg-query", "-W", "-f", "${Status}|${Version}", pkg], stderr=subprocess.DEVNULL)
    except subprocess.CalledProcessError:
        return None
    status, _, version = out.partition("|")
    return version if status.endswith(" installed") else None


def candidate_version(pkg: str) -> str:
    for line in run(["apt-cache", "policy", pkg]).splitlines():
        key, _, value = line.strip().partition(": ")
        if key == "Candidate" and value and value != "(none)":
            return value
    raise SystemExit(f"package {pkg} not available from apt (run apt-get update?)")


def candidate_versions(pkgs: list[str]) -> dict[str, str]:
    """candidate_version() of each of ``pkgs``, with one `apt-cache policy` call for all."""
    out: dict[str, str] = {}
    current = None
    for line in run(["apt-cache", "policy", *pkgs]).splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            current = line[:-1]
            continue
        key, _, value = line.strip().partition(": ")
        if key == "Candidate" and current in pkgs and value and value != "(none)":
            out[current] = value
    for pkg in pkgs:  # a header apt spelled differently (e.g. with an architecture): ask alone
        if pkg not in out:
            out[pkg] = candidate_version(pkg)
    return out


def agent_sources() -> dict[str, bytes]:
    """The agent package's .py files (path relative to it -> content), read once per build so
    that the cache key and the initramfs see the same bytes even if the tree changes."""
    files = sorted(p for p in AGENT_SRC.rglob("*.py") if "__pycache__" not in p.parts)
    return {str(p.relative_to(AGENT_SRC)): p.read_bytes() for p in files}


def kernel_key(source_version: str) -> str:
    h = hashlib.sha256(b"boxlite-kernel-v1\0")
    h.update(KERNEL_CONFIG.read_bytes())
    h.update(source_version.encode())
    return h.hexdigest()[:16]


def artifact_key(kkey: str, versions: dict[str, str], debug: bool, agent: dict[str, bytes]) -> str:
    h = hashlib.sha256(f"boxlite-runtime-v{FORMAT}\0{kkey}\0{debug}\0".encode())
    h.update(json.dumps(versions, sort_keys=True).encode())
    for path in [Path(__file__).resolve(), HERE / "cpio.py", HERE / "modscan.py"]:
        h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    for name, data in agent.items():
        h.update(f"agent/{name}".encode() + b"\0" + data + b"\0")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Inputs:
    """Everything an artifact is built from, read once, and the cache keys derived from it."""

    kernel_version: str
    versions: dict[str, str]
    agent: dict[str, bytes]
    debug: bool
    kernel_key: str
    key: str


def inputs(debug: bool) -> Inputs:
    """The current inputs and keys (.github/scripts/runtime_key.py calls this too: one derivation)."""
    cand = candidate_versions([KERNEL_PACKAGE, *PACKAGES])
    kver = installed_version(KERNEL_PACKAGE) or cand[KERNEL_PACKAGE]
    versions = {pkg: cand[pkg] for pkg in PACKAGES}
    agent = agent_sources()
    kkey = kernel_key(kver)
    return Inputs(kver, versions, agent, debug, kkey, artifact_key(kkey, versions, debug, agent))


# ---------------------------------------------------------------- kernel


def kernel_source_tarball(version: str, cache: Path) -> Path:
    if installed_version(KERNEL_PACKAGE) == version:
        return Path("/usr/src/linux-source-6.1.tar.xz")
    deb = fetch_deb(KERNEL_PACKAGE, version, cache)
    out = cache / "src" / version
    if not out.exists():
        log(f"unpacking {deb.name}")
        tmp = Path(tempfile.mkdtemp(dir=cache))
        run(["dpkg-deb", "-x", str(deb), str(tmp)])
        tmp.rename(out)
    return out / "usr/src/linux-source-6.1.tar.xz"


def build_kernel(version: str, cache: Path, jobs: int) -> Path:
    """Return the cached vmlinux for the committed config, building it if needed."""
    kdir = cache / f"kernel-{kernel_key(version)}"
    if (kdir / "vmlinux").exists():
        log(f"kernel: cached ({kdir})")
        return kdir
    with locked(cache / "locks" / f"{kdir.name}.lock", "kernel"):
        if (kdir / "vmlinux").exists():
            log(f"kernel: built by the other build ({kdir})")
            return kdir
        t0 = time.monotonic()
        log(f"kernel: building {KERNEL_PACKAGE} {version} (5-20 minutes; once per kernel config)")
        tarball = kernel_source_tarball(version, cache)
        work = Path(tempfile.mkdtemp(prefix="kbuild-", dir=cache))
        log(f"kernel: unpacking the source into {work}")
        run(["tar", "-xf", str(tarball), "-C", str(work)])
        src = work / "linux-source-6.1"
        shutil.copy(KERNEL_CONFIG, src / ".config")
        env = dict(
            os.environ,
            ARCH="x86_64",
            KBUILD_BUILD_TIMESTAMP="1970-01-01",
            KBUILD_BUILD_USER="boxlite",
            KBUILD_BUILD_HOST="boxlite",
            KBUILD_BUILD_VERSION="1",
        )
        make = ["make", "-C", str(src), f"-j{jobs}"]
        log(f"kernel: configuring (olddefconfig), {elapsed(t0)} elapsed")
        subprocess.run([*make, "olddefconfig"], check=True, env=env, stdout=subprocess.DEVNULL)
        if (src / ".config").read_bytes() != KERNEL_CONFIG.read_bytes():
            log("warning: olddefconfig changed the committed config (different kernel version?)")
        log(f"kernel: compiling with {jobs} jobs (a line every {PROGRESS_INTERVAL:.0f}s)")
        run_with_progress([*make, "vmlinux"], env, "kernel: compiling")
        release = run([*make, "-s", "kernelrelease"], env=env).strip()
        tmp = work / "out"
        tmp.mkdir()
        run(["strip", "--strip-all", "-o", str(tmp / "vmlinux"), str(src / "vmlinux")])
        (tmp / "kernel.json").write_text(
            json.dumps({"release": release, "source": f"{KERNEL_PACKAGE} {version}"}) + "\n"
        )
        tmp.rename(kdir)
        shutil.rmtree(work)
        log(f"kernel: {release} built in {elapsed(t0)}")
    return kdir


# ---------------------------------------------------------------- packages


def fetch_deb(pkg: str, version: str, cache: Path) -> Path:
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    safe = f"{pkg}_{version.replace(':', '%3a')}_"
    found = [p for p in debs.glob(f"{safe}*.deb")]
    if found:
        return found[0]
    tmp = Path(tempfile.mkdtemp(dir=debs))
    os.chmod(tmp, 0o777)  # apt's sandbox user must be able to write here
    log(f"downloading {pkg} {version}")
    run(["apt-get", "download", "-q", f"{pkg}={version}"], cwd=tmp, stderr=subprocess.DEVNULL)
    (deb,) = tmp.glob("*.deb")
    dest = debs / deb.name
    deb.rename(dest)
    tmp.rmdir()
    return dest


def extract_packages(versions: dict[str, str], cache: Path, dest: Path) -> None:
    for pkg in PACKAGES:
        run(["dpkg-deb", "-x", str(fetch_deb(pkg, versions[pkg], cache)), str(dest)])


# ---------------------------------------------------------------- initramfs


class Tree:
    """The initramfs content as a path -> Entry map (parents created implicitly)."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    def _parents(self, path: str) -> None:
        parts = path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            self.entries.setdefault(d, Entry(d, stat.S_IFDIR | 0o755))

    def dir(self, path: str, mode: int = 0o755) -> None:
        self._parents(path)
        self.entries[path.strip("/")] = Entry(path.strip("/"), stat.S_IFDIR | mode)

    def file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._parents(path)
        self.entries[path.strip("/")] = Entry(path.strip("/"), stat.S_IFREG | mode, data)

    def symlink(self, path: str, target: str) -> None:
        self._parents(path)
        self.entries[path.strip("/")] = Entry(path.strip("/"), stat.S_IFLNK | 0o777, target.encode())

    def node(self, path: str, mode: int, major: int, minor: int) -> None:
        self._parents(path)
        self.entries[path.strip("/")] = Entry(path.strip("/"), mode, rdev=(major, minor))


def needed_libs(elf: Path) -> list[str]:
    out = run(["readelf", "-d", str(elf)])
    return [line.split("[", 1)[1].split("]", 1)[0] for line in out.splitlines() if "(NEEDED)" in line]


def add_with_libs(tree: Tree, root: Path, rel: str, mode: int = 0o755) -> None:
    """Add ELF ``rel`` from ``root`` plus the closure of its shared libraries."""
    todo, seen = [rel], set()
    while todo:
        cur = todo.pop()
        if cur in seen:
            continue
        seen.add(cur)
        path = root / cur
        tree.file(cur, path.read_bytes(), mode if cur == rel else 0o755)
        for lib in needed_libs(path):
            for d in LIB_DIRS:
                cand = root / d / lib
                if cand.exists():
                    real = cand.resolve().relative_to(root.resolve())
                    if str(real) != f"{d}/{lib}":
                        tree.symlink(f"{d}/{lib}", os.path.basename(real))
                    todo.append(str(real))
                    break
            else:
                raise SystemExit(f"{cur}: shared library {lib} not found in the packages")


def compile_pyc(python: list[str], env: dict[str, str], jobs: list[tuple[Path, Path, str]]) -> None:
    """Byte-compile (src, dst, display name) with the guest interpreter (unchecked-hash pycs)."""
    script = (
        "import json, py_compile, sys\n"
        "for src, dst, name in json.load(sys.stdin):\n"
        "    py_compile.compile(src, cfile=dst, dfile=name, doraise=True,\n"
        "        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)\n"
    )
    data = json.dumps([[str(s), str(d), n] for s, d, n in jobs])
    subprocess.run([*python, "-c", script], input=data, text=True, check=True, env=env)


def build_initramfs(
    versions: dict[str, str], cache: Path, debug: bool, out: Path, agent: dict[str, bytes] | None = None
) -> dict[str, str]:
    """Write ``out`` (newc cpio) and return {member path: sha256} of its regular files."""
    with tempfile.TemporaryDirectory(dir=cache) as tmpdir:
        tmp = Path(tmpdir)
        root = tmp / "x"
        log(f"initramfs: unpacking {len(PACKAGES)} guest packages")
        extract_packages(versions, cache, root)
        tree = Tree()
        for d in ["proc", "sys", "dev", "run", "tmp", "box", "mnt", "etc"]:
            tree.dir(d)
        tree.node("dev/console", stat.S_IFCHR | 0o600, 5, 1)
        tree.node("dev/null", stat.S_IFCHR | 0o666, 1, 3)
        tree.symlink("lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        add_with_libs(tree, root, f"usr/bin/{GUEST_PYTHON}")
        if debug:  # a shell and tools for poking at the guest; release images stay lean
            tree.file("bin/busybox", (root / "bin/busybox").read_bytes(), 0o755)
            for applet in BUSYBOX_DEBUG_APPLETS:
                tree.symlink(f"bin/{applet}", "busybox")
        tree.file("init", INIT_SCRIPT.encode(), 0o755)
        tree.file("etc/boxlite-runtime", b"debug\n" if debug else b"release\n")

        # Agent: sources + unchecked-hash pycs under __pycache__.
        agent_parent = tmp / "agent-parent"
        for name, data in (agent_sources() if agent is None else agent).items():
            dest = agent_parent / "agent" / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        py = [str(root / "usr/bin" / GUEST_PYTHON), "-I", "-S"]
        libpath = ":".join(str(root / d) for d in LIB_DIRS)
        env = {"LD_LIBRARY_PATH": libpath, "PATH": "/usr/bin:/bin", "TMPDIR": str(tmp)}
        scan = json.loads(run([*py, str(HERE / "modscan.py"), str(agent_parent)], env=env))
        if scan["missing"]:
            log(f"modules not found (ignored): {' '.join(scan['missing'])}")
        jobs: list[tuple[Path, Path, str]] = []
        pyc = tmp / "pyc"
        for src in sorted((agent_parent / "agent").glob("*.py")):
            rel = f"{AGENT_PARENT}/agent/{src.name}"
            tree.file(rel, src.read_bytes())
            jobs.append((src, pyc / f"{AGENT_PARENT}/agent/__pycache__/{src.stem}.cpython-311.pyc", "/" + rel))
        for f in scan["files"]:
            rel = str(Path(f).relative_to(root))
            if f.endswith(".so"):
                add_with_libs(tree, root, rel)
            elif debug:  # sources + __pycache__
                tree.file(rel, Path(f).read_bytes())
                cached = Path(rel).parent / "__pycache__" / (Path(f).stem + ".cpython-311.pyc")
                jobs.append((Path(f), pyc / cached, "/" + rel))
            else:  # sourceless .pyc next to where the .py would be
                jobs.append((Path(f), pyc / (rel[:-3] + ".pyc"), "/" + rel))
        log(f"initramfs: byte-compiling {len(jobs)} modules")
        compile_pyc(py, env, jobs)
        for _, dst, _ in jobs:
            tree.file(str(dst.relative_to(pyc)), dst.read_bytes())

        log(f"initramfs: writing {out.name} ({len(tree.entries)} entries)")
        with open(out, "wb") as f:
            write_cpio(f, list(tree.entries.values()))
        return {
            e.path: hashlib.sha256(e.data).hexdigest()
            for e in sorted(tree.entries.values(), key=lambda e: e.path)
            if stat.S_ISREG(e.mode)
        }


# ---------------------------------------------------------------- artifact


def build_artifact(cache: Path, debug: bool, jobs: int) -> Path:
    log("checking the inputs (Debian package versions, agent sources)")
    cur = inputs(debug)
    kver, versions, agent, key = cur.kernel_version, cur.versions, cur.agent, cur.key
    adir = cache / f"runtime-{key}{'-debug' if debug else ''}"
    if (adir / "manifest.json").exists():
        log(f"cached: {adir}")
        return adir
    log(f"building artifact {key} (kernel {cur.kernel_key}) in {cache}")
    kdir = build_kernel(kver, cache, jobs)
    with locked(cache / "locks" / f"{adir.name}.lock", "runtime artifact"):
        if (adir / "manifest.json").exists():
            return adir
        tmp = Path(tempfile.mkdtemp(prefix="runtime-", dir=cache))
        t0 = time.monotonic()
        shutil.copy(kdir / "vmlinux", tmp / "vmlinux")
        members = build_initramfs(versions, cache, debug, tmp / "initramfs.cpio", agent)
        log("writing manifest.json")
        kinfo = json.loads((kdir / "kernel.json").read_text())
        manifest = {
            "format": FORMAT,
            "key": key,
            "debug": debug,
            "kernel": {**kinfo, "config_sha256": sha256_file(KERNEL_CONFIG)},
            "packages": versions | {KERNEL_PACKAGE: kver},
            "python": f"/usr/bin/{GUEST_PYTHON}",
            "agent": f"/{AGENT_PARENT}/agent",
            "files": {name: sha256_file(tmp / name) for name in ["initramfs.cpio", "vmlinux"]},
            "initramfs": members,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        tmp.chmod(0o755)
        tmp.rename(adir)
        log(f"initramfs built in {time.monotonic() - t0:.1f}s: {adir}")
    return adir


def install(adir: Path, out: Path) -> None:
    """Replace ``out`` with hard links (or copies) of the cached artifact files."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    tmp.chmod(0o755)
    for f in sorted(adir.iterdir()):
        try:
            os.link(f, tmp / f.name)
        except OSError:
            shutil.copy2(f, tmp / f.name)
    if out.exists():
        old = out.with_name(f".{out.name}-old-{os.getpid()}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)


def default_cache() -> Path:
    env = os.environ.get("BOXLITE_RUNTIME_CACHE")
    if env:
        return Path(env)
    sys_cache = Path("/var/cache/boxlite-runtime")
    if os.access(sys_cache if sys_cache.exists() else sys_cache.parent, os.W_OK):
        return sys_cache
    return Path.home() / ".cache" / "boxlite-runtime"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--debug", action="store_true", help="keep sources, busybox applets, verbose console")
    ap.add_argument("--out", type=Path, help="default: target/boxlite-runtime[-debug]")
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    cache = (args.cache_dir or default_cache()).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    out = args.out or REPO / "target" / ("boxlite-runtime-debug" if args.debug else "boxlite-runtime")
    adir = build_artifact(cache, args.debug, args.jobs)
    install(adir, out.resolve())
    log(f"installed {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
