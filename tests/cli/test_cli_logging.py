"""``--debug`` / ``BOXLITE_LOG``: each step of a run is logged with its duration; JSON on request."""

from __future__ import annotations

import json
import subprocess

from support.cli import Cli


def run(cli: Cli, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli.argv(*args), capture_output=True, text=True, timeout=60, env={**cli.env(), **env},
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_debug_json_log_has_each_step_with_its_duration(cli: Cli) -> None:
    proc = run(cli, "run", "--rm", "--rootfs", str(cli.rootfs), "echo", "hi", BOXLITE_LOG="debug",
               BOXLITE_LOG_FORMAT="json")  # fmt: skip
    assert proc.returncode == 0 and proc.stdout == "hi\n", proc.stderr
    records = [json.loads(line) for line in proc.stderr.splitlines()]  # every line is one JSON object
    steps = {r["step"]: r for r in records if "step" in r}
    assert {"create", "start", "exec", "stop"} <= set(steps), sorted(steps)
    for name in ("create", "start", "exec"):
        r = steps[name]
        assert r["level"] == "debug" and r["outcome"] == "ok" and r["duration_ms"] >= 0
        assert r["box"] == steps["create"]["box"] and r["logger"] == "boxlite.steps"
    assert steps["exec"]["command"] == "echo" and steps["create"]["message"].startswith("create done in ")


def test_debug_flag_logs_text_and_the_default_is_quiet(cli: Cli) -> None:
    proc = run(cli, "--debug", "run", "--rm", "--rootfs", str(cli.rootfs), "true")
    assert proc.returncode == 0
    line = next(x for x in proc.stderr.splitlines() if "start done in" in x)
    assert line.startswith("boxlite: DEBUG: boxlite.steps: start done in ") and "duration_ms=" in line
    quiet = run(cli, "run", "--rm", "--rootfs", str(cli.rootfs), "true", BOXLITE_LOG="warning")
    assert quiet.returncode == 0 and "done in" not in quiet.stderr
    default = run(cli, "run", "--rm", "--rootfs", str(cli.rootfs), "true")
    assert default.returncode == 0 and default.stderr == ""
    bad = run(cli, "run", "--rm", "--rootfs", str(cli.rootfs), "true", BOXLITE_LOG="loud")
    assert bad.returncode == 0 and bad.stderr.count("ignoring BOXLITE_LOG='loud'") == 1
