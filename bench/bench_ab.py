"""Before/after: the same CLI timings under two revisions of this repository, interleaved.

    python bench/bench_ab.py [--base REV] [--head REV] [--runs 20] [--quick] [--json out.json]

This machine's timings drift by 10-20 % between runs of the same code, more than many changes
are worth, so a change is measured against its parent in one run: each revision is checked out
into a temporary git worktree (``--head`` defaults to the working tree as it is) and its modules
are compiled; the same interpreter and dependencies then run each revision's ``boxlite`` with
``PYTHONPATH`` set to its ``src`` (the zygote loads that revision's agent too), in its own home,
ABAB/BABA. Contenders, on the namespace engine and the busybox test rootfs: the library's
create → ``exec("true")`` → remove (each revision's runtime lives in a worker process that times
one cycle per request), loopback-only and with the default network, and two whole processes,
``boxlite run --rm --network none --rootfs R true`` and ``boxlite exec BOX true`` into a box of
the same revision started with ``run -d``, and ``Box.exec("true")`` into a running box (warmed by
20 untimed execs). With ``--vm``, also the library cycle and the warm exec on the VM
engine: each revision's runtime artifact is built from its own tree (``runtime/build.py``, cached
by input hash) and gets its own snapshot templates, and ``fork(1)`` of a running VM box to the
first exec's result in the copy.
Ratios are head / base.
"""

from __future__ import annotations

import compileall
import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import benchlib as bl

REPO = Path(__file__).resolve().parents[1]
NETWORKS = ("disabled", "default")
VM = "vm"
"""The worker key of the VM engine's library cycle (no network)."""
LIBRARY_WORKER = """
import asyncio, sys, time
import boxlite

async def main(home, rootfs, network):
    engine = "vm" if network.startswith("vm") else "namespace"
    rt = boxlite.Boxlite(boxlite.Options(home_dir=home, engine=engine))
    extra = {} if network == "default" else {"network": "disabled"}
    opts = boxlite.BoxOptions(rootfs_path=rootfs, auto_remove=True, **extra)
    source = None
    if network in ("vmfork", "warm", "vmwarm"):  # one running box, forked or exec'd into per line
        source = await rt.create(opts)
        for _ in range(20 if network.endswith("warm") else 1):  # a VM's translation cache fills
            await (await source.exec("true", stdin=False)).wait()
    for _ in sys.stdin:
        t = time.perf_counter()
        if network.endswith("warm"):
            await (await source.exec("true", stdin=False)).wait()
            print(time.perf_counter() - t, flush=True)
            continue
        if source is None:
            box = await rt.create(opts)
        else:
            (box,) = await source.fork(1)
        await (await box.exec("true", stdin=False)).wait()
        print(time.perf_counter() - t, flush=True)
        await rt.remove(box.id, force=True)  # (a fork's copy: its removal is not timed)
    if source is not None:
        await rt.remove(source.id, force=True)
    await rt.shutdown(timeout=5)

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
"""
"""One create -> exec("true") -> remove per line read, its seconds printed (one runtime per revision
and network: "disabled", or "default", BoxLite's default outbound network through pasta; "vm": the
VM engine, no network; "vmfork": fork(1) of one running VM box -> exec("true") in the copy, the
copy's removal after the time is taken; "warm", "vmwarm": exec("true") alone, in one running box
of either engine)."""
VM_FORK = "vmfork"
WARM, VM_WARM = "warm", "vmwarm"


@contextlib.contextmanager
def checkout(rev: str | None, where: Path) -> Iterator[Path]:
    """The ``src`` directory of ``rev`` (None: this working tree), compiled to bytecode."""
    if rev is None:
        src = REPO / "src"
        compileall.compile_dir(str(src / "boxlite"), quiet=1)
        yield src
        return
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(where), rev], check=True)
    try:
        compileall.compile_dir(str(where / "src" / "boxlite"), quiet=1)
        yield where / "src"
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(where)], check=False)


class Revision:
    """One revision's CLI, home and running box."""

    def __init__(self, label: str, src: Path, tmp: Path, rootfs: Path, vm: bool = False) -> None:
        self.label, self.rootfs = label, rootfs
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.env = {**env, "PYTHONPATH": str(src), "BOXLITE_HOME": str(tmp / f"home-{label}")}
        self.cli = bl.boxlite_cli()
        out = subprocess.run(
            [*self.cli, "run", "-d", "--network", "none", "--rootfs", str(rootfs), "sleep", "1000000"],
            env=self.env, check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self.box = out.stdout.strip().splitlines()[-1]
        self.workers = {
            network: self._worker(tmp / f"lib-home-{label}-{network}", network) for network in (*NETWORKS, WARM)
        }
        if vm:
            side = label.split()[0]  # "base" or "head": each revision gets its own artifact and templates
            artifact = tmp / f"runtime-{side}"
            subprocess.run(
                [sys.executable, str(src.parent / "runtime" / "build.py"), "--out", str(artifact)], check=True
            )
            vm_env = {"BOXLITE_RUNTIME_DIR": str(artifact), "BOXLITE_VM_TEMPLATES": str(tmp / f"templates-{side}")}
            self.workers[VM] = self._worker(tmp / f"lib-home-{label}-vm", VM, vm_env)
            self.workers[VM_FORK] = self._worker(tmp / f"lib-home-{label}-vmfork", VM_FORK, vm_env)
            self.workers[VM_WARM] = self._worker(tmp / f"lib-home-{label}-vmwarm", VM_WARM, vm_env)

    def _worker(self, home: Path, network: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        argv = [sys.executable, "-c", LIBRARY_WORKER, str(home), str(self.rootfs), network]
        env = {**self.env, **(env or {})}
        return subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def _cycle(self, network: str) -> float:
        worker = self.workers[network]
        assert worker.stdin is not None and worker.stdout is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
        line = worker.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.label}: the library worker died ({worker.wait()})")
        return float(line)

    def library(self) -> float:
        return self._cycle("disabled")

    def library_networked(self) -> float:
        return self._cycle("default")

    def library_vm(self) -> float:
        return self._cycle(VM)

    def library_vm_fork(self) -> float:
        return self._cycle(VM_FORK)

    def library_exec(self) -> float:
        return self._cycle(WARM)

    def library_vm_exec(self) -> float:
        return self._cycle(VM_WARM)

    def run_rm(self) -> float:
        argv = [*self.cli, "run", "--rm", "--network", "none", "--rootfs", str(self.rootfs), "true"]
        return bl.time_process(argv, env=self.env)

    def exec_true(self) -> float:
        return bl.time_process([*self.cli, "exec", self.box, "true"], env=self.env)

    def close(self) -> None:
        for worker in self.workers.values():
            if worker.stdin is not None:
                worker.stdin.close()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        subprocess.run([*self.cli, "rm", "-f", self.box], env=self.env, capture_output=True, check=False)


def compare(report: bl.Report, title: str, base: Revision, head: Revision, what: str, runs: int) -> None:
    kind = "library call vs library call" if what.startswith("library") else "whole process vs whole process"
    section = report.section(title, f"{kind} (two revisions)", baseline=base.label)
    contenders = {base.label: getattr(base, what), head.label: getattr(head, what)}
    for fn in contenders.values():
        fn()  # untimed warm-up: page cache, the rootfs import, the zygote's first start
    for name, samples in bl.interleaved(contenders, runs).items():
        section.add(name, samples, "s")
    report.close(section)


def main() -> int:
    ap = bl.common_args(__doc__, runs=20, quick_runs=2)
    ap.add_argument("--base", default="HEAD", help="the revision measured first (default HEAD)")
    ap.add_argument("--head", default=None, help="the revision compared with it (default: the working tree)")
    ap.add_argument("--vm", action="store_true", help="also the library cycle on the VM engine (TCG here: ~1 s each)")
    args = bl.parse(ap)
    from support.images import build_busybox_rootfs

    report = bl.Report("a/b (namespace engine, CLI)", args)
    report.info.update(base=args.base, head=args.head or "working tree")
    base_label = f"base {args.base}"
    head_label = f"head {args.head or 'working tree'}"
    with tempfile.TemporaryDirectory(prefix="boxlite-bench-ab-") as tmpdir:
        tmp = Path(tmpdir)
        rootfs = build_busybox_rootfs(tmp / "rootfs")
        with checkout(args.base, tmp / "base") as base_src, checkout(args.head, tmp / "head") as head_src:
            base = Revision(base_label, base_src, tmp, rootfs, args.vm)
            try:
                head = Revision(head_label, head_src, tmp, rootfs, args.vm)
                try:
                    title = "library: create → exec(true) → remove"
                    compare(report, title, base, head, "library", args.runs * 2)
                    title = "library, default network (pasta): create → exec(true) → remove"
                    compare(report, title, base, head, "library_networked", args.runs * 2)
                    title = "library: Box.exec(true) in a running box"
                    compare(report, title, base, head, "library_exec", args.runs * 4)
                    if args.vm:
                        title = "library, VM engine (snapshot restore): create → exec(true) → remove"
                        compare(report, title, base, head, "library_vm", args.runs)
                        title = "library, VM engine: fork(1) of a running box → exec(true) in the copy"
                        compare(report, title, base, head, "library_vm_fork", args.runs)
                        title = "library, VM engine: Box.exec(true) in a running box (warm)"
                        compare(report, title, base, head, "library_vm_exec", args.runs * 4)
                    compare(report, "boxlite run --rm --rootfs R true", base, head, "run_rm", args.runs)
                    compare(report, "boxlite exec BOX true", base, head, "exec_true", args.runs)
                finally:
                    head.close()
            finally:
                base.close()
    report.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
