"""The import graph of src/boxlite: imports only go downwards (docs/ARCHITECTURE.md).

Every ``import``/``from ... import`` of a boxlite module (at any depth, including function-level
and ``TYPE_CHECKING`` imports) is an edge between two *parts* (a top-level package or module of
boxlite). ``LAYERS`` ranks the parts (``MODULE_RANKS`` a few modules apart from their package);
an edge to a higher rank fails, as does one in ``FORBIDDEN`` or from host code into the agent
beyond the shared definitions in ``AGENT_FROM_HOST``, unless it is listed in ``KNOWN_EXCEPTIONS`` (debts, each with its
reason). Same-rank edges between parts are allowed (peers). This table is the one place that
says where a new package belongs.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "boxlite"

LAYERS: dict[str, int] = {
    # front-ends and the package facade: over the public API
    "(root)": 70,  # boxlite/__init__.py: lazy re-exports of the public API
    "__main__": 70,
    # BoxLite's submodules users import from: thin aliases of the public API, beside the root
    "sync_api": 70,
    "exec": 70,
    "simplebox": 70,
    "codebox": 70,
    "interactivebox": 70,
    "skillbox": 70,
    "browserbox": 70,
    "computerbox": 70,
    "credential": 70,
    "constants": 70,
    "orchestration": 70,
    "server": 70,
    "cli": 70,
    "mcp": 70,
    # the public API (local, and REST-backed)
    "api": 60,
    "remote": 60,
    # one interface over local and remote runtimes
    "backends": 50,
    # state + lifecycle on this machine
    "runtime": 40,
    # isolation engines
    "engines": 30,
    # independent of engines: OCI images; the host side of the agent protocol
    "images": 20,
    "client": 20,
    # the guest agent (stdlib only; the host imports only its shared definitions)
    "agent": 10,
    # small shared modules, no boxlite imports but errors (and each other)
    "wire": 5,
    "fsutil": 5,
    "procfs": 5,
    "layout": 5,
    "filenames": 5,
    "sqlite_wal": 5,
    "runtime_artifact": 5,
    "steplog": 5,
    "httpx_lean": 5,  # httpx without its command-line client (the one place httpx is imported)
    "aio": 5,  # asyncio helpers (stdlib only): within, wait_for without 3.11's lost cancellation
    "errors": 0,
}

MODULE_RANKS: dict[str, int] = {
    # the public option and result types cross the backend interface: a layer of their own,
    # between backends and runtime (they import runtime.config, images, fsutil, errors only)
    "boxlite.api.options": 45,
    "boxlite.api.results": 45,
    "boxlite.api.advanced": 45,  # what AdvancedBoxOptions does to a BoxConfig (options.py uses it)
}
"""Modules ranked apart from their package."""

FRONT_ENDS = {"server", "cli", "mcp"}
FORBIDDEN: dict[tuple[str, str], str] = {
    ("engines", "images"): "images and engines are independent (engines get unpacked layer dirs)",
    ("images", "engines"): "images and engines are independent",
    **{(f, low): "front-ends use the public API, not runtime internals" for f in FRONT_ENDS
       for low in ("runtime", "engines", "client", "agent")},
}  # fmt: skip
AGENT_FROM_HOST: dict[str, str] = {
    # The agent runs in the box (stdlib only); the host may import only the modules that define
    # something both sides must agree on, never the agent's machinery:
    "boxlite.agent.protocol": "the wire protocol, its limits and status lines",
    "boxlite.agent.leanjson": "the protocol's JSON codec (the lean `boxlite exec` reads box records with it)",
    "boxlite.agent.logfile": "the capped, rotated log format (the agent, the VM relay and the CLI write it)",
    "boxlite.agent.mainexit": "the run/main.exit record (the agent or the VM relay write it, the host reads it)",
    "boxlite.agent.tario": "the tar stream of copy_in/copy_out (the host packs copy_in with it)",
    "boxlite.agent.cgroupkill": "killing a box's cgroup (the keeper does it, the engine when the keeper could not)",
}
"""The agent modules host code may import, and why."""

KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {
    # (importing module, imported module): why it is tolerated for now.
    ("boxlite.cli.fastexec", "boxlite.agent.protocol"): "the lean `boxlite exec` speaks the wire protocol itself: "
    "importing the SDK costs ~4x the whole exec (issue 17); it falls back to the SDK for everything else",
    ("boxlite.cli.fastexec", "boxlite.agent.leanjson"): "the lean `boxlite exec` reads box records without "
    "importing `json` (~9 ms with `re`, issue 17)",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (SRC / rel).with_suffix(".py").is_file() or (SRC / rel / "__init__.py").is_file()


def imports_of(path: Path) -> set[str]:
    """The boxlite modules ``path`` imports (``from pkg import name`` counts as pkg.name when that
    is a module, else as pkg)."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "boxlite")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            elif (node.module or "").split(".")[0] == "boxlite":
                base = str(node.module)
            else:
                continue
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if is_module(f"{base}.{alias.name}") else base)
    return found


def part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "(root)"


def rank(module: str) -> int:
    return MODULE_RANKS.get(module, LAYERS.get(part(module), -1))


def all_edges() -> set[tuple[str, str]]:
    return {(module_name(p), dst) for p in PKG.rglob("*.py") for dst in imports_of(p)}


def check(edges: set[tuple[str, str]]) -> list[str]:
    out = []
    for src, dst in sorted(edges):
        a, b = part(src), part(dst)
        same = a == b and src not in MODULE_RANKS and dst not in MODULE_RANKS
        if same or (src, dst) in KNOWN_EXCEPTIONS:
            continue
        if a not in LAYERS or b not in LAYERS:
            out.append(f"{src} -> {dst}: add {a if a not in LAYERS else b!r} to LAYERS")
        elif rank(dst) > rank(src):
            out.append(f"{src} -> {dst}: upward ({rank(src)} -> {rank(dst)})")
        elif (a, b) in FORBIDDEN:
            out.append(f"{src} -> {dst}: {FORBIDDEN[(a, b)]}")
        elif b == "agent" and a != "agent" and dst not in AGENT_FROM_HOST:
            out.append(f"{src} -> {dst}: host code imports only the agent's shared definitions (AGENT_FROM_HOST)")
    return out


def test_imports_only_go_downwards() -> None:
    assert check(all_edges()) == []


def test_known_exceptions_are_still_needed() -> None:
    """A debt paid off is struck from the list (so the list stays the true set of exceptions)."""
    assert sorted(set(KNOWN_EXCEPTIONS) - all_edges()) == []


def test_the_checker_catches_what_it_should() -> None:
    # relative imports are resolved (engines/base.py: ``from ..procfs import process_start_time``)
    assert "boxlite.procfs" in imports_of(PKG / "engines" / "base.py")
    assert check({("boxlite.engines.base", "boxlite.runtime.lifecycle")})  # upward
    assert check({("boxlite.engines.vm.disks", "boxlite.images.store")})  # forbidden pair
    assert check({("boxlite.engines.vm.qemu", "boxlite.agent.server")})  # agent internals
    assert check({("boxlite.wire.exec", "boxlite.newthing.x")})  # unranked part
    assert check({("boxlite.backends.local", "boxlite.api.box")})  # only options/results are ranked low
    assert not check({("boxlite.backends.local", "boxlite.api.options"), ("boxlite.api.box", "boxlite.errors")})


def test_public_names_are_lazy_and_complete() -> None:
    """``import boxlite`` loads no other boxlite module (helper processes import submodules only);
    every name of ``__all__`` resolves and ``dir()`` lists it."""
    code = """
import sys
sys.path.insert(0, sys.argv[1])
import boxlite
loaded = sorted(m for m in sys.modules if m.startswith("boxlite."))
assert loaded == [], loaded
assert boxlite.__file__.startswith(sys.argv[1]), boxlite.__file__
missing = [n for n in boxlite.__all__ if n not in dir(boxlite)]
assert not missing, missing
assert all(getattr(boxlite, n) is not None for n in boxlite.__all__)
assert boxlite.Boxlite.__module__ == "boxlite.api.runtime"
try:
    boxlite.NoSuchName
except AttributeError:
    pass
else:
    raise SystemExit("no AttributeError")
"""
    proc = subprocess.run([sys.executable, "-I", "-c", code, str(SRC)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
