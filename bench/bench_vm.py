"""VM engine against plain QEMU booting the same kernel and disk (the floor), under TCG here.

    python bench/bench_vm.py [--runs 5] [--quick] [--json out.json]

Comparisons (interleaved ABCD/DCBA; medians with min/max/IQR; load average printed):
  1. start + first exec of `true` + teardown: BoxLite library call restoring its snapshot
     template (the default), BoxLite with snapshots off (BOXLITE_VM_SNAPSHOT=0: cold boot), and
     the floor: `qemu-system-x86_64 -M microvm` with the same kernel, accelerator, vCPUs, RAM and
     kernel parameters as BoxLite's QEMU, and BoxLite's own read-only layer disk as root, whose
     init mounts devtmpfs, runs `true`, prints a marker and powers off. Breakdown rows give
     "to first exec result" without teardown.
  2. exec round trip of `true` in a running VM box (library call), after a warm-up of the guest's
     translation cache; no peer runs an agent.
  3. teardown of a running box: Box.stop() of a box removed when it stops and of one kept, and
     remove(force=True).
  4. idle memory, USS and PSS, of every host process of a lone box (relay, QEMU, virtiofsd when the
     box has a volume) vs plain QEMU idling on the same kernel and disk.
Templates are isolated per run (own BOXLITE_VM_TEMPLATES and home in a temp dir).
"""

from __future__ import annotations

import asyncio
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib as bl

MARKER = b"BOXLITE-BENCH-READY"
INIT = f"""#!/0/bin/sh
/0/bin/mount -t devtmpfs dev /0/dev
/0/bin/true
echo {MARKER.decode()} > /0/dev/ttyS0
[ -n "$benchidle" ] && exec /0/bin/sleep 1000000
exec /0/bin/reboot -f
"""
"""Init of the plain-QEMU floor: BoxLite's layer disk holds the rootfs under /0."""


def qemu_args(cmdline: list[str]) -> dict[str, str]:
    """Option -> value of a QEMU command line (last one wins)."""
    return {cmdline[i]: cmdline[i + 1] for i in range(len(cmdline) - 1) if cmdline[i].startswith("-")}


def read_cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [a.decode() for a in f.read().split(b"\0") if a]


class Plain:
    """Plain QEMU with BoxLite's kernel, flags and layer disk, no agent, no snapshot."""

    def __init__(self, boxlite_qemu: list[str], disk: Path) -> None:
        a = qemu_args(boxlite_qemu)
        params = [p for p in a["-append"].split() if not p.startswith("boxlite.")]
        self.argv = [
            boxlite_qemu[0],
            "-M",
            "microvm,acpi=off",
            "-global",
            "virtio-mmio.force-legacy=false",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-accel",
            a["-accel"],
            "-cpu",
            a["-cpu"],
            "-smp",
            a["-smp"],
            "-m",
            a["-m"],
            "-serial",
            "stdio",
            "-kernel",
            a["-kernel"],
            "-drive",
            f"if=none,id=root,file={disk},format=raw,readonly=on",
            "-device",
            "virtio-blk-device,drive=root",
            "-append",
            " ".join([*params, "root=/dev/vda", "rootfstype=ext4", "ro", "init=/0/bench-init"]),
        ]

    def start(self, idle: bool) -> tuple[subprocess.Popen[bytes], float]:
        """Boot; returns the process and the seconds until the guest printed the marker."""
        argv = list(self.argv)
        if idle:
            argv[-1] += " benchidle=1"  # unknown parameters reach init as environment variables
        t = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdout is not None
        buf, deadline = b"", time.monotonic() + 60
        while MARKER not in buf:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError(f"plain QEMU gave no marker: {buf[-1500:]!r}")
            if select.select([proc.stdout], [], [], 0.5)[0]:
                buf += os.read(proc.stdout.fileno(), 65536)
        return proc, time.perf_counter() - t

    def run(self) -> tuple[float, float]:
        """(to first exec, whole run including power-off)."""
        t = time.perf_counter()
        proc, first = self.start(idle=False)
        proc.wait(60)
        return first, time.perf_counter() - t


class Vm:
    def __init__(self, rootfs: Path, tmp: Path, runs: int) -> None:
        import boxlite

        self.boxlite, self.tmp, self.runs = boxlite, tmp, runs
        self.home = tmp / "home"
        self.loop = asyncio.new_event_loop()
        self.rt = boxlite.Boxlite(boxlite.Options(home_dir=str(self.home), engine="vm"))
        self.opts = boxlite.BoxOptions(rootfs_path=str(rootfs), auto_remove=True, engine="vm", network="disabled")
        self.parts: dict[str, list[tuple[float, float]]] = {}

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _box_once(self, opts: Any) -> tuple[float, float]:
        t = time.perf_counter()
        box = await self.rt.create(opts)
        await (await box.exec("true", stdin=False)).wait()
        t1 = time.perf_counter()
        await self.rt.remove(box.id, force=True)
        return t1 - t, time.perf_counter() - t

    def box_once(self, name: str, snapshot: bool) -> float:
        os.environ["BOXLITE_VM_SNAPSHOT"] = "1" if snapshot else "0"
        try:
            first, total = self.run(self._box_once(self.opts))
        finally:
            os.environ.pop("BOXLITE_VM_SNAPSHOT", None)
        self.parts.setdefault(name, []).append((first, total))
        return total

    def warm_up(self) -> tuple[list[str], Path]:
        """Untimed: a cold-booted box (builds the layer disk), then one that builds the snapshot
        template; returns the cold-booted QEMU's command line and the layer disk."""

        async def go() -> list[str]:
            box = await self.rt.create(self.opts)
            await (await box.exec("true", stdin=False)).wait()
            qemu = next(p for p in bl.descendants(box.info().state.pid or 0) if "qemu" in read_cmdline(p)[0])
            cmdline = read_cmdline(qemu)
            await self.rt.remove(box.id, force=True)
            return cmdline

        os.environ["BOXLITE_VM_SNAPSHOT"] = "0"  # a restored QEMU has no -kernel/-append
        try:
            cmdline = self.run(go())
        finally:
            os.environ.pop("BOXLITE_VM_SNAPSHOT", None)
        self.box_once("warm-up", True)  # builds the template
        self.parts.clear()
        disks = sorted((self.home / "cache").rglob("layers-*.ext4"))
        if not disks:
            raise RuntimeError(f"no layer disk under {self.home / 'cache'}")
        return cmdline, disks[0]

    def start(self, report: bl.Report, plain: Plain) -> None:
        s = report.section(
            "start + first exec of `true` + teardown",
            "BoxLite library call vs plain QEMU process "
            "(the floor: same kernel, flags and disk, no agent); teardown on every side",
            baseline="plain QEMU cold boot",
        )

        def plain_once() -> float:
            first, total = plain.run()
            self.parts.setdefault("plain QEMU cold boot", []).append((first, total))
            return total

        contenders = {
            "boxlite (snapshot restore)": lambda: self.box_once("boxlite (snapshot restore)", True),
            "boxlite (cold boot)": lambda: self.box_once("boxlite (cold boot)", False),
            "plain QEMU cold boot": plain_once,
        }
        for name, xs in bl.interleaved(contenders, self.runs).items():
            s.add(name, xs, "s")
        for name, parts in self.parts.items():
            s.add(f"{name}: to first exec result", [p[0] for p in parts], "s", "breakdown", compare=False)
        report.close(s)

    def exec_rtt(self, report: bl.Report, warmup: int) -> None:
        s = report.section("exec `true` round trip in a running VM box", "library call; no peer runs an agent")

        async def go() -> list[float]:
            box = await self.rt.create(self.opts)
            for _ in range(warmup):  # fill the translation cache
                await (await box.exec("true", stdin=False)).wait()
            out = []
            for _ in range(self.runs * 5):
                t = time.perf_counter()
                await (await box.exec("true", stdin=False)).wait()
                out.append(time.perf_counter() - t)
            await self.rt.remove(box.id, force=True)
            return out

        s.add("boxlite Box.exec (warm)", self.run(go()), "s", f"after {warmup} untimed execs", compare=False)
        report.close(s)

    def teardown(self, report: bl.Report) -> None:
        s = report.section(
            "teardown of a running VM box",
            "library calls on a box that wrote 8 MiB to its disk; interleaved",
        )
        kept = self.boxlite.BoxOptions(
            rootfs_path=self.opts.rootfs_path, auto_remove=False, engine="vm", network="disabled"
        )

        async def once(opts: Any, how: str) -> float:
            box = await self.rt.create(opts)
            write = "dd if=/dev/zero of=/written bs=1M count=8 2>/dev/null"
            await (await box.exec("sh", ["-c", write], stdin=False)).wait()
            t = time.perf_counter()
            if how == "remove":
                await self.rt.remove(box.id, force=True)
            else:
                await box.stop()
            took = time.perf_counter() - t
            if how == "stop, kept":
                await self.rt.remove(box.id)
            return took

        contenders = {
            "Box.stop(), removed when it stops": lambda: self.run(once(self.opts, "stop, removed")),
            "Box.stop(), kept (the guest syncs and powers off)": lambda: self.run(once(kept, "stop, kept")),
            "remove(force=True) of a running box": lambda: self.run(once(kept, "remove")),
        }
        for name, xs in bl.interleaved(contenders, self.runs).items():
            s.add(name, xs, "s", compare=False)
        report.close(s)

    def memory(self, report: bl.Report, plain: Plain, idle: float) -> None:
        s = report.section(
            "idle memory of a lone VM box", "memory: every host process of the box", baseline="plain QEMU (USS)"
        )
        mib = 1 / 1024
        plains, boxes, vols = [], [], []
        volume = self.tmp / "volume"
        volume.mkdir(exist_ok=True)
        vol_opts = self.boxlite.BoxOptions(
            rootfs_path=self.opts.rootfs_path,
            auto_remove=True,
            engine="vm",
            network="disabled",
            volumes=[(str(volume), "/data")],
        )

        async def box_mem(opts: Any) -> dict[str, int]:
            box = await self.rt.create(opts)
            await (await box.exec("true", stdin=False)).wait()
            await asyncio.sleep(idle)
            mem = bl.memory_of(bl.descendants(box.info().state.pid or 0) + bl.tagged_processes("virtiofsd"))
            await self.rt.remove(box.id, force=True)
            return mem

        for _ in range(min(self.runs, 3)):
            proc, _ = plain.start(idle=True)
            try:
                time.sleep(idle)
                plains.append(bl.memory_of([proc.pid]))
            finally:
                proc.kill()
                proc.wait()
            boxes.append(self.run(box_mem(self.opts)))
            for attempt in range(3):  # virtiofsd's pid file is named after the socket, host-wide:
                try:  # a volume box of another process can hold it
                    vols.append(self.run(box_mem(vol_opts)))
                    break
                except self.boxlite.BoxliteError as e:
                    s.notes.append(f"a box with a volume failed to start: {str(e).splitlines()[0][:160]}")
                    time.sleep(2 * (attempt + 1))
        s.add("plain QEMU (USS)", [m["uss"] * mib for m in plains], "MiB", "same kernel, RAM size and disk")
        s.add("boxlite box (USS)", [m["uss"] * mib for m in boxes], "MiB", "relay + QEMU (snapshot restore)")
        if vols:
            s.add(
                "boxlite box with a volume (USS)",
                [m["uss"] * mib for m in vols],
                "MiB",
                "relay + QEMU + virtiofsd (cold boot: volumes need shared RAM)",
            )
        s.add("plain QEMU (PSS)", [m["pss"] * mib for m in plains], "MiB", compare=False)
        s.add("boxlite box (PSS)", [m["pss"] * mib for m in boxes], "MiB", compare=False)
        if vols:
            s.add("boxlite box with a volume (PSS)", [m["pss"] * mib for m in vols], "MiB", compare=False)
        s.notes.append(f"measured after {idle:g} s idle; the host process's own memory is in bench_core.py")
        if vols:
            s.notes.append(
                "with a volume, guest RAM pages mapped by both QEMU and virtiofsd count once in the box's USS "
                "(pages of its processes and no other)"
            )
        report.close(s)

    def close(self) -> None:
        self.run(self.rt.shutdown(timeout=10))
        self.loop.close()


def main() -> int:
    ap = bl.common_args(__doc__, runs=5, quick_runs=1)
    ap.add_argument("--idle", type=float, default=None, help="seconds idle before memory is read (default 5; quick 1)")
    ap.add_argument("--warmup", type=int, default=20, help="untimed execs before the round trip is timed")
    args = bl.parse(ap)
    if args.idle is None:
        args.idle = 1.0 if args.quick else 5.0
    bl.require("qemu-system-x86_64")
    from boxlite import runtime_artifact
    from support.images import build_busybox_rootfs

    report = bl.Report("vm engine", args)
    art = runtime_artifact.locate()
    report.info["artifact"] = {n: (art.path / n).stat().st_size for n in ("vmlinux", "initramfs.cpio")}
    with tempfile.TemporaryDirectory(prefix="boxlite-bench-vm-") as tmpdir:
        tmp = Path(tmpdir)
        os.environ["BOXLITE_VM_TEMPLATES"] = str(tmp / "templates")  # isolated: built by this run
        rootfs = build_busybox_rootfs(tmp / "rootfs")
        init = rootfs / "bench-init"
        init.write_text(INIT)
        init.chmod(0o755)
        vm = Vm(rootfs, tmp, args.runs)
        try:
            t = time.perf_counter()
            cmdline, disk = vm.warm_up()
            report.info["first_box_with_template_build_s"] = round(time.perf_counter() - t, 2)
            plain = Plain(cmdline, disk)
            report.info["plain_qemu_argv"] = plain.argv
            plain.run()  # warm-up: page cache of kernel and disk
            vm.start(report, plain)
            vm.exec_rtt(report, args.warmup if not args.quick else 5)
            vm.teardown(report)
            vm.memory(report, plain, args.idle)
        finally:
            vm.close()
    report.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
