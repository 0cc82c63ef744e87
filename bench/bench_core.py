"""Namespace engine against crun, runc, bwrap and nsenter on the same busybox root filesystem.

    python bench/bench_core.py [--runs 20] [--quick] [--json out.json]

Comparisons (contenders interleaved ABCD/DCBA; medians with min/max/IQR; load average printed):
  1. start + first exec of `true` + teardown: BoxLite library call (create, exec, stop+remove)
     vs `crun run` / `runc run` / `bwrap` (whole processes: they have no Python library; each
     includes its own teardown). Baseline: crun.
  2. whole process, new box: `boxlite run --rm --rootfs R true` vs `crun run`, `runc run`, `bwrap`.
  3. whole process, exec in a running box: `boxlite exec BOX true` vs `crun exec`, `runc exec`,
     `nsenter` (into the crun container's namespaces). Baseline: crun exec.
  4. library call, exec in a running box: `Box.exec("true")` + wait vs `subprocess.run(["true"])`
     from the same Python process (the floor of spawning a process from a library).
  5. rootfs size: the library's start + first exec + teardown from the busybox rootfs and from
     the same tree with FILLER_FILES (--quick: 2,000) more files (a rootfs directory is the box's
     lower layer in place: no copy, no walk), vs `crun run` on the large tree; the fingerprint
     walk of the large tree, what each create paid before (the VM engine still pays it), beside.
  6. teardown under host writes: the library's start + first exec + teardown of a box removed
     when it stops (its writable layer volatile) and of one kept after it stops (stop + remove:
     its layer's unmount syncs the host file system) while another process keeps rewriting
     WRITER_MIB MiB without syncing; vs `crun run` under the same writer. Half the runs.
  7. idle memory, USS (private pages): the box's processes (agent and keeper once the box has been
     idle past $BOXLITE_SPAWNER_IDLE, default 30 s; agent, spawner, keeper 1 s after a command, printed too; a box
     with the default network, whose pasta is counted too, beside), the zygote
     (one per runtime, shared by its boxes) and the host process's growth from before
     `import boxlite` to one running box, measured in a fresh child process; vs the USS of an idle
     crun container running the same `sleep`.
crun needs /sys/fs/cgroup/unified hidden on this host: the whole benchmark runs in a private mount
namespace without it (BoxLite does not use that mount).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib as bl

PROBE_FLAG = "--memory-probe"
FILLER_FILES = 50_000
"""Extra files in the large rootfs (a Debian python rootfs holds ~5,000; a desktop image ~55,000)."""
WRITER_MIB = 200
WRITER = """
import sys, time
chunk = b"x" * (1 << 20)
while True:
    with open(sys.argv[1], "wb") as f:
        for _ in range(int(sys.argv[2])):
            f.write(chunk)
    time.sleep(0.2)
"""
"""The other process of ``teardown_under_writes``: dirty pages, never synced by itself."""


def add_filler(rootfs: Path, dest: Path, files: int) -> Path:
    """A copy of ``rootfs`` with ``files`` small files more, 500 per directory under /usr/share."""
    subprocess.run(["cp", "-a", str(rootfs), str(dest)], check=True)
    for i in range(files):
        d = dest / "usr" / "share" / "filler" / f"d{i // 500:03d}"
        if i % 500 == 0:
            d.mkdir(parents=True)
        (d / f"f{i % 500:03d}").write_bytes(b"x")
    return dest


def crun_state_pid(name: str) -> int:
    out = subprocess.run(["crun", "state", name], check=True, capture_output=True, text=True).stdout
    return int(json.loads(out)["pid"])


def start_sleeper(tool: str, bundle: Path, name: str) -> None:
    subprocess.run(
        [tool, "run", "-d", "-b", str(bundle), name],
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def delete_container(tool: str, name: str) -> None:
    subprocess.run([tool, "delete", "-f", name], check=False, capture_output=True)


def box_processes(home: Path, box_id: str, pid: int) -> list[int]:
    """The box's agent (PID 1) and descendants, plus its host-side keeper (and its pasta)."""
    pids = bl.descendants(pid) if pid else []
    try:
        keeper = int((home / "boxes" / box_id / "keeper.pid").read_text().split()[0])
        pids += bl.descendants(keeper)
    except (OSError, ValueError, IndexError):
        pass
    return pids


def memory_probe(rootfs: str, home: str) -> None:
    """Child process: memory before `import boxlite`, then with one idle box; prints JSON."""
    os.environ[bl.BENCH_TAG_ENV] = f"probe-{os.getpid()}-{time.time_ns()}"  # not the parent's zygote
    before = bl.smaps_kib(os.getpid())["dirty"]  # clean pages it maps alone turn shared when
    # another process maps the same files: only the dirty ones are the host's own cost
    import boxlite

    async def run() -> dict[str, Any]:
        from boxlite.engines.namespace.engine import spawner_idle

        SPAWNER_IDLE = spawner_idle() or 0.0

        rt = boxlite.Boxlite(boxlite.Options(home_dir=home, engine="namespace"))
        box = await rt.create(boxlite.BoxOptions(rootfs_path=rootfs, auto_remove=True, network="disabled"))
        await (await box.exec("true", stdin=False)).wait()
        host_growth = bl.smaps_kib(os.getpid())["dirty"] - before  # one box's, before the second
        networked = await rt.create(boxlite.BoxOptions(rootfs_path=rootfs, auto_remove=True))  # the default
        await (await networked.exec("true", stdin=False)).wait()
        await asyncio.sleep(1.0)
        used_pids = box_processes(Path(home), box.id, box.info().state.pid or 0)
        used = bl.memory_of(used_pids)
        await asyncio.sleep(SPAWNER_IDLE)  # unused for longer than that: the agent retired the spawner
        pids = box_processes(Path(home), box.id, box.info().state.pid or 0)
        net_pids = box_processes(Path(home), networked.id, networked.info().state.pid or 0)
        pastas = [pid for pid in net_pids if bl.process_name(pid).startswith(("pasta", "passt"))]
        out = {
            "networked": bl.memory_of(net_pids),
            "pasta": bl.memory_of(pastas),
            "pasta_zero": sum(bl.resident_zero_kib(pid) for pid in pastas),
            "networked_processes": len(net_pids),
            "box": bl.memory_of(pids),
            "box_processes": len(pids),
            "box_used": used,
            "box_used_processes": len(used_pids),
            "zygote": bl.memory_of(bl.zygotes()),
            "host_growth": host_growth,
        }
        await rt.shutdown(timeout=5)
        return out

    print(json.dumps(asyncio.run(run())))


class Core:
    def __init__(self, rootfs: Path, tmp: Path, runs: int) -> None:
        import boxlite

        self.boxlite = boxlite
        self.rootfs, self.tmp, self.runs = rootfs, tmp, runs
        self.home = tmp / "home"
        self.cli_home = tmp / "cli-home"
        self.env = {**os.environ, "BOXLITE_HOME": str(self.cli_home)}
        self.cli = [*bl.boxlite_cli(), "--home", str(self.cli_home)]
        self.loop = asyncio.new_event_loop()
        self.rt = boxlite.Boxlite(boxlite.Options(home_dir=str(self.home), engine="namespace"))
        self.opts = boxlite.BoxOptions(rootfs_path=str(rootfs), auto_remove=True, network="disabled")
        self.true_bundle = bl.make_bundle(rootfs, tmp / "bundle-true", ["true"])
        self.sleep_bundle = bl.make_bundle(rootfs, tmp / "bundle-sleep", ["sleep", "1000000"])
        self.n = 0

    def name(self) -> str:
        self.n += 1
        return f"blbench-{os.getpid()}-{self.n}"

    # -- contenders -------------------------------------------------------------------------
    def lib_start_exec_remove(self, opts: Any = None) -> float:
        async def go() -> float:
            t = time.perf_counter()
            box = await self.rt.create(opts or self.opts)
            await (await box.exec("true", stdin=False)).wait()
            await self.rt.remove(box.id, force=True)
            return time.perf_counter() - t

        return self.loop.run_until_complete(go())

    def lib_start_exec(self) -> tuple[float, float]:
        """(create -> first exec result, stop+remove) of one box, for the breakdown."""

        async def go() -> tuple[float, float]:
            t = time.perf_counter()
            box = await self.rt.create(self.opts)
            await (await box.exec("true", stdin=False)).wait()
            t1 = time.perf_counter()
            await self.rt.remove(box.id, force=True)
            return t1 - t, time.perf_counter() - t1

        return self.loop.run_until_complete(go())

    def crun_run(self) -> float:
        return bl.time_process(["crun", "run", "-b", str(self.true_bundle), self.name()])

    def runc_run(self) -> float:
        return bl.time_process(["runc", "run", "-b", str(self.true_bundle), self.name()])

    def bwrap(self) -> float:
        argv = [
            "bwrap",
            "--unshare-all",
            "--die-with-parent",
            "--ro-bind",
            str(self.rootfs),
            "/",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "true",
        ]
        return bl.time_process(argv)

    def cli_run(self) -> float:
        return bl.time_process(
            [*self.cli, "run", "--rm", "--network", "none", "--rootfs", str(self.rootfs), "true"], env=self.env
        )

    # -- comparisons ------------------------------------------------------------------------
    def start(self, report: bl.Report) -> None:
        s = report.section(
            "start + first exec of `true` + teardown",
            "BoxLite library call vs peer processes (crun/runc/bwrap have no Python library; all include teardown)",
            baseline="crun run",
        )
        contenders = {
            "boxlite library": self.lib_start_exec_remove,
            "crun run": self.crun_run,
            "runc run": self.runc_run,
            "bwrap": self.bwrap,
        }
        for fn in contenders.values():  # warm-up (the first create imports the rootfs into the store)
            fn()
        res = bl.interleaved(contenders, self.runs)
        for name, xs in res.items():
            s.add(name, xs, "s")
        parts = [self.lib_start_exec() for _ in range(self.runs)]
        s.add("boxlite: create → first exec result", [p[0] for p in parts], "s", "breakdown", compare=False)
        s.add("boxlite: stop + remove", [p[1] for p in parts], "s", "breakdown", compare=False)
        networked = self.boxlite.BoxOptions(rootfs_path=str(self.rootfs), auto_remove=True)  # the default network
        self.lib_start_exec_remove(networked)
        s.add(
            "boxlite library, default network",
            [self.lib_start_exec_remove(networked) for _ in range(self.runs)],
            "s",
            "with pasta and the host guard, as users run it; no peer here has a network of its own",
            compare=False,
        )
        report.close(s)

        s = report.section(
            "run `true` in a new box, removed after", "whole process vs whole process", baseline="crun run"
        )
        contenders = {
            "boxlite run --rm": self.cli_run,
            "crun run": self.crun_run,
            "runc run": self.runc_run,
            "bwrap": self.bwrap,
        }
        self.cli_run()
        for name, xs in bl.interleaved(contenders, self.runs).items():
            s.add(name, xs, "s")
        report.close(s)

    def rootfs_size(self, report: bl.Report, files: int = FILLER_FILES) -> None:
        from boxlite.images.rootfs import fingerprint

        large = add_filler(self.rootfs, self.tmp / "rootfs-large", files)
        large_opts = self.boxlite.BoxOptions(rootfs_path=str(large), auto_remove=True, network="disabled")
        large_bundle = bl.make_bundle(large, self.tmp / "bundle-large", ["true"])

        def lib_large() -> float:
            async def go() -> float:
                t = time.perf_counter()
                box = await self.rt.create(large_opts)
                await (await box.exec("true", stdin=False)).wait()
                await self.rt.remove(box.id, force=True)
                return time.perf_counter() - t

            return self.loop.run_until_complete(go())

        def walk() -> float:
            t = time.perf_counter()
            fingerprint(large)
            return time.perf_counter() - t

        contenders = {
            "boxlite library, busybox rootfs": self.lib_start_exec_remove,
            f"boxlite library, + {files:,} files": lib_large,
            f"crun run, + {files:,} files": lambda: bl.time_process(
                ["crun", "run", "-b", str(large_bundle), self.name()]
            ),
            f"fingerprint walk of the + {files:,} tree": walk,
        }
        s = report.section(
            "start + first exec + teardown by rootfs size",
            f"library; the rootfs directory with {files:,} more files",
            baseline=f"crun run, + {files:,} files",
        )
        for fn in contenders.values():
            fn()
        for name, xs in bl.interleaved(contenders, self.runs).items():
            walked = name.startswith("fingerprint")
            note = "paid by each create before; by the VM engine still (a copy's cache key)" if walked else ""
            s.add(name, xs, "s", note)
        report.close(s)

    def teardown_under_writes(self, report: bl.Report) -> None:
        """The same cycle while another process keeps the host file system's page cache dirty:
        a box whose writable layer is unmounted with a sync (one kept after it stops) waits for
        every other process's writes; one removed when it stops (volatile layer) and crun (its
        root is the directory itself, no overlay) do not."""
        kept = self.boxlite.BoxOptions(rootfs_path=str(self.rootfs), auto_remove=False, network="disabled")
        contenders = {
            "boxlite library, removed when it stops": self.lib_start_exec_remove,
            "boxlite library, a box kept after it stops (stop + remove)": lambda: self.lib_start_exec_remove(kept),
            "crun run": self.crun_run,
        }
        s = report.section(
            "start + first exec + teardown while another process writes",
            f"library vs crun; a writer rewrites {WRITER_MIB} MiB in the same file system, unsynced, every 0.2 s",
            baseline="crun run",
        )
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(self.tmp / "writer.bin"), str(WRITER_MIB)],
            stdout=subprocess.DEVNULL,
        )
        try:
            time.sleep(1)
            for fn in contenders.values():
                fn()
            for name, xs in bl.interleaved(contenders, max(1, self.runs // 2)).items():
                s.add(name, xs, "s")
        finally:
            writer.kill()
            writer.wait()
            (self.tmp / "writer.bin").unlink(missing_ok=True)
        s.notes.append("the kept box's layer stays durable (docs/performance.md: the volatile layer)")
        report.close(s)

    def exec_process(self, report: bl.Report) -> None:
        out = subprocess.run(
            [*self.cli, "run", "-d", "--network", "none", "--rootfs", str(self.rootfs), "sleep", "1000000"],
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        )
        box_id = out.stdout.strip().split()[-1]
        crun_name, runc_name = self.name(), self.name()
        start_sleeper("crun", self.sleep_bundle, crun_name)
        start_sleeper("runc", self.sleep_bundle, runc_name)
        try:
            pid = crun_state_pid(crun_name)
            ns = ["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "-r", "-w", "true"]
            contenders = {
                "boxlite exec": lambda: bl.time_process([*self.cli, "exec", box_id, "true"], env=self.env),
                "crun exec": lambda: bl.time_process(["crun", "exec", crun_name, "true"]),
                "runc exec": lambda: bl.time_process(["runc", "exec", runc_name, "true"]),
                "nsenter": lambda: bl.time_process(ns),
            }
            s = report.section(
                "exec `true` in a running box (process)", "whole process vs whole process", baseline="crun exec"
            )
            for fn in contenders.values():
                fn()
            for name, xs in bl.interleaved(contenders, self.runs).items():
                s.add(name, xs, "s")
            report.close(s)
        finally:
            subprocess.run([*self.cli, "rm", "-f", box_id], env=self.env, check=False, capture_output=True)
            delete_container("crun", crun_name)
            delete_container("runc", runc_name)

    def exec_library(self, report: bl.Report) -> None:
        box = self.loop.run_until_complete(self.rt.create(self.opts))

        def box_exec() -> float:
            async def go() -> float:
                t = time.perf_counter()
                await (await box.exec("true", stdin=False)).wait()
                return time.perf_counter() - t

            return self.loop.run_until_complete(go())

        def host_spawn() -> float:
            t = time.perf_counter()
            subprocess.run(["true"], check=True)
            return time.perf_counter() - t

        s = report.section(
            "exec `true` in a running box (library)",
            "library call vs library call",
            baseline="subprocess.run (host, no box)",
        )
        contenders = {"boxlite Box.exec": box_exec, "subprocess.run (host, no box)": host_spawn}
        for fn in contenders.values():
            fn()
        for name, xs in bl.interleaved(contenders, self.runs * 4).items():
            s.add(name, xs, "s")
        report.close(s)
        self.loop.run_until_complete(self.rt.remove(box.id, force=True))

    def memory(self, report: bl.Report) -> None:
        from boxlite.engines.namespace.engine import spawner_idle

        SPAWNER_IDLE = spawner_idle() or 0.0

        s = report.section(
            "idle box memory, private (USS)", "memory: every process a box costs", baseline="crun container (sleep)"
        )
        probes, cruns = [], []
        for i in range(min(self.runs, 3)):
            home = self.tmp / f"probe-home-{i}"
            out = subprocess.run(
                [sys.executable, __file__, PROBE_FLAG, str(self.rootfs), str(home)],
                check=True,
                capture_output=True,
                text=True,
            )
            probes.append(json.loads(out.stdout.strip().splitlines()[-1]))
            names = [self.name(), self.name()]  # two: the busybox binary's pages are shared, as the
            try:  # agent's interpreter pages are with the zygote
                for name in names:
                    start_sleeper("crun", self.sleep_bundle, name)
                time.sleep(1.0)
                cruns.append(bl.memory_of(bl.descendants(crun_state_pid(names[1]))))
            finally:
                for name in names:
                    delete_container("crun", name)
        mib = 1 / 1024
        s.add(
            "crun container (sleep)",
            [c["uss"] * mib for c in cruns],
            "MiB",
            "second of two identical containers; no runtime process stays",
        )
        s.add(
            "boxlite box processes",
            [p["box"]["uss"] * mib for p in probes],
            "MiB",
            f"{1 + SPAWNER_IDLE:g} s after its last command: agent, keeper ({probes[0]['box_processes']} processes)",
        )
        s.add(
            "boxlite box processes, 1 s after a command",
            [p["box_used"]["uss"] * mib for p in probes],
            "MiB",
            f"agent, spawner, keeper ({probes[0]['box_used_processes']} processes)",
            compare=False,
        )
        s.add(
            "boxlite zygote", [p["zygote"]["uss"] * mib for p in probes], "MiB", "one per runtime, shared by its boxes"
        )
        s.add(
            "boxlite host process growth",
            [p["host_growth"] * mib for p in probes],
            "MiB",
            "private dirty memory from before `import boxlite` to one idle box",
        )
        s.add(
            "boxlite box processes, default network",
            [p["networked"]["uss"] * mib for p in probes],
            "MiB",
            f"agent, keeper, pasta ({probes[0]['networked_processes']} processes); crun has no network of its own",
            compare=False,
        )
        s.add(
            "of which pasta / its resident pages that hold only zeros",
            [p["pasta"]["uss"] * mib for p in probes],
            "MiB",
            "zero pages: " + ", ".join(f"{p['pasta_zero'] * mib:.1f}" for p in probes) + " MiB (Debian 12's pasta "
            "zeroes its whole frame buffers at start; see docs/performance.md)",
            compare=False,
        )
        total = [(p["box"]["uss"] + p["zygote"]["uss"] + p["host_growth"]) * mib for p in probes]
        s.add("boxlite lone box, all of the above", total, "MiB")
        s.add(
            "boxlite box processes (PSS)",
            [p["box"]["pss"] * mib for p in probes],
            "MiB",
            "for reference",
            compare=False,
        )
        s.notes.append("per-box cost at N boxes (zygote and host amortised): bench_density.py")
        report.close(s)

    def close(self) -> None:
        self.loop.run_until_complete(self.rt.shutdown(timeout=5))
        self.loop.close()


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == PROBE_FLAG:
        memory_probe(sys.argv[2], sys.argv[3])
        return 0
    ap = bl.common_args(__doc__, runs=20, quick_runs=2)
    args = bl.parse(ap)
    bl.require("crun", "runc", "bwrap", "nsenter")
    mount_note = bl.hide_cgroup_unified()
    from support.images import build_busybox_rootfs

    report = bl.Report("core (namespace engine)", args)
    report.info["mount_namespace"] = mount_note
    with tempfile.TemporaryDirectory(prefix="boxlite-bench-core-") as tmpdir:
        tmp = Path(tmpdir)
        rootfs = build_busybox_rootfs(tmp / "rootfs")
        core = Core(rootfs, tmp, args.runs)
        try:
            core.start(report)
            core.exec_process(report)
            core.exec_library(report)
            core.rootfs_size(report, 2_000 if args.quick else FILLER_FILES)
            core.teardown_under_writes(report)
            core.memory(report)
        finally:
            core.close()
    report.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
