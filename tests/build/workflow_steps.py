"""Run steps of .github/workflows/build-sdks.yml locally, exactly as written there.

A step's ``run:`` text is executed the way GitHub runs it (``bash --noprofile --norc -eo
pipefail``), in a scratch workspace whose ``.github`` is a link to the repository's (the scripts
resolve the repository from their own path) plus whatever the test puts there, with
``$GITHUB_OUTPUT`` pointing at a file. ``python3``/``python`` resolve to the interpreter the step
would find: Debian's ``/usr/bin/python3`` for the ``debian:12`` container job, else this one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "build-sdks.yml"
DEBIAN_PYTHON = Path("/usr/bin/python3")


def workflow() -> dict[str, Any]:
    data = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(data, dict)
    return data


def step(job: str, name: str) -> dict[str, Any]:
    """The step called ``name`` of ``job`` (fails the test if the workflow no longer has it)."""
    steps = workflow()["jobs"][job]["steps"]
    found = [s for s in steps if s.get("name") == name]
    assert len(found) == 1, f"{job}: no single step named {name!r} in {WORKFLOW.name}"
    return found[0]


@dataclass
class Result:
    returncode: int
    output: str  # stdout + stderr
    github_output: dict[str, str]


def workspace(tmp: Path) -> Path:
    ws = tmp / "workspace"
    ws.mkdir()
    (ws / ".github").symlink_to(REPO / ".github")
    return ws


def tool_dir(tmp: Path, container: bool) -> Path:
    """A PATH directory with ``python3``/``python`` as that job's runner would have them."""
    bindir = tmp / "bin"
    bindir.mkdir(exist_ok=True)
    python = DEBIAN_PYTHON if container and DEBIAN_PYTHON.exists() else Path(sys.executable)
    for name in ("python3", "python"):
        # A wrapper, not a symlink: a venv's python found through a symlink elsewhere is no venv.
        shim = bindir / name
        shim.write_text(f'#!/bin/sh\nexec "{python}" "$@"\n')
        shim.chmod(0o755)
    return bindir


def run_step(
    job: str, name: str, ws: Path, *, path: str | None = None, timeout: float = 300, env: dict[str, str] | None = None
) -> Result:
    """Run the step in ``ws``; ``path`` replaces the PATH after the python shims (default: ours)."""
    script = step(job, name)["run"]
    container = "container" in workflow()["jobs"][job]
    bindir = tool_dir(ws.parent, container)
    out_file = ws.parent / "github_output"
    out_file.write_text("")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("BOXLITE_", "PYTHON"))}
    full_env |= {
        "PATH": f"{bindir}:{os.environ['PATH'] if path is None else path}",
        "GITHUB_OUTPUT": str(out_file),
        "GITHUB_WORKSPACE": str(ws),
        **(env or {}),
    }
    bash = shutil.which("bash") or "/bin/bash"
    res = subprocess.run(
        [bash, "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=ws,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    outputs = dict(line.split("=", 1) for line in out_file.read_text().splitlines() if "=" in line)
    return Result(res.returncode, res.stdout, outputs)
