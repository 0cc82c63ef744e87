"""Running the ``boxlite`` CLI of this checkout as a subprocess (shared by CLI tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CLI = [sys.executable, "-m", "boxlite.cli"]
SRC = Path(__file__).resolve().parents[2] / "src"  # test this checkout, whatever is pip-installed


@dataclass
class Served:
    """A ``boxlite serve`` of a test: its URL and its log file."""

    url: str
    log: Path


@dataclass
class Cli:
    """Runs ``boxlite --home HOME ...`` and returns the completed process (text mode)."""

    home: Path
    rootfs: Path
    engine: str = "namespace"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BOXLITE_")}
        env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])
        env["BOXLITE_ENGINE"] = self.engine
        return env

    def argv(self, *args: str) -> list[str]:
        return [*CLI, "--home", str(self.home), *args]

    def __call__(self, *args: str, input: str | None = None, timeout: float = 60,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return subprocess.run(
            self.argv(*args), input=input, capture_output=True, text=True, timeout=timeout,
            env={**self.env(), **(env or {})}, stdin=None if input is not None else subprocess.DEVNULL,
        )  # fmt: skip

    def ok(self, *args: str, input: str | None = None) -> str:
        """Run, assert success, return stdout."""
        proc = self(*args, input=input)
        assert proc.returncode == 0, f"boxlite {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    def json(self, *args: str) -> object:
        return json.loads(self.ok(*args))


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    """A failure is exactly one 'boxlite: error: ...' line on stderr and the expected status."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("boxlite: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
