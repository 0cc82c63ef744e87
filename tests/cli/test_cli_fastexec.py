"""The lean ``boxlite exec`` path (cli/fastexec.py): same results as the full CLI, falls back to it
for everything it does not handle, imports little, and distrusts the agent like the full client."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from boxlite import layout
from boxlite.agent import protocol as p
from boxlite.cli import fastexec
from boxlite.procfs import process_start_time
from boxlite.runtime import config as runtime_config
from boxlite.runtime.config import BoxConfig
from boxlite.runtime.home import Home
from boxlite.runtime.state import BoxRecord, StateDB, now
from support.cli import Cli

ENGINES = [e for e in os.environ.get("BOXLITE_TEST_ENGINES", "namespace").split(",") if e]  # as tests/conftest.py
IMPORT_BUDGET = 55
"""Modules ``boxlite exec`` (bin/boxlite) may import on the lean path (41 today,
interpreter start-up and the venv's .pth files included; the full path imports ~275)."""


@pytest.fixture(scope="module", params=ENGINES)
def fx(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, busybox_rootfs: Path) -> Iterator[Cli]:
    """A home with a running detached box ``fx`` (env, workdir set) and a stopped box ``st``, once
    per engine of BOXLITE_TEST_ENGINES (module-scoped: two boots per engine for the whole file)."""
    c = Cli(tmp_path_factory.mktemp("fastexec") / "home", busybox_rootfs, request.param)
    c.ok("run", "-d", "--name", "fx", "--network", "none", "-e", "FROMBOX=box", "-w", "/tmp",
         "--rootfs", str(busybox_rootfs), "sleep", "100000")  # fmt: skip
    c.ok("run", "--name", "st", "--network", "none", "--rootfs", str(busybox_rootfs), "true")
    yield c
    c("rm", "-f", "fx", "st")


def both(c: Cli, *args: str, input: str | None = None) -> tuple[tuple[int, str, str], tuple[int, str, str]]:
    """(lean, full) results of ``boxlite exec ARGS``."""
    results = []
    for fast in ("1", "0"):
        env = {**c.env(), "BOXLITE_FAST_EXEC": fast}
        proc = subprocess.run(c.argv("exec", *args), input=input, capture_output=True, text=True, timeout=60, env=env,
                              stdin=None if input is not None else subprocess.DEVNULL)  # fmt: skip
        results.append((proc.returncode, proc.stdout, proc.stderr))
    return results[0], results[1]


SCRIPT = 'echo "$FROMBOX|$A|$HOSTVAR"; pwd; id -u; echo err >&2; exit 3'


@pytest.mark.parametrize(
    ("args", "expected_code"),
    [
        (["-e", "A=1", "-e", "HOSTVAR", "fx", "sh", "-c", SCRIPT], 3),
        (["-e", "A=x", "-w", "/", "-u", "user", "fx", "sh", "-c", SCRIPT], 3),
        (["--env=A=y", "--workdir=/etc", "--user=1000", "fx", "--", "sh", "-c", SCRIPT], 3),
        (["fx", "no-such-cmd"], 127),
        (["fx", "/etc/passwd"], 126),
        (["-u", "ghost", "fx", "true"], 126),
        (["-w", "/no/such/dir", "fx", "true"], 126),
        (["fx", "sh", "-c", "kill -TERM $$"], 143),
        (["fx", "head", "-c", "3000000", "/dev/zero"], 0),  # 3 MB: more than one credit window
        (["st", "true"], 125),  # stopped: the full path's error
        (["nobox", "true"], 125),
        (["-i", "fx", "cat"], 0),  # -i: the full path
        (["-e", "=bad", "fx", "true"], 125),
        (["-d", "fx", "true"], 0),  # -d: nothing printed, at once
        (["--detach", "-e", "A=1", "fx", "sh", "-c", "echo $A"], 0),
        (["-d", "fx", "no-such-cmd"], 127),
        (["-d", "-t", "fx", "true"], 125),  # -t: the full path refuses the pair
    ],
)
def test_lean_exec_gives_what_the_full_path_gives(
    fx: Cli, monkeypatch: pytest.MonkeyPatch, args: list[str], expected_code: int
) -> None:
    monkeypatch.setenv("HOSTVAR", "from-host")
    lean, full = both(fx, *args, input="piped\n" if "-i" in args else None)
    assert lean == full
    assert lean[0] == expected_code, lean
    if args[-1] == SCRIPT:
        assert lean[2] == "err\n" and lean[1].count("\n") == 3


def test_lean_exec_detach_leaves_the_command_running(fx: Cli) -> None:
    """The lean ``exec -d`` sends what Box.exec_detached does: the command goes on after
    boxlite exited, with the box's env and the call's, its output in the box's exec.log."""
    proc = fx("exec", "-d", "-e", "A=lean", "fx", "sh", "-c", 'sleep 0.5; echo "$FROMBOX|$A" > /tmp/lean; echo logged')
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    deadline = time.monotonic() + 30
    while fx.ok("exec", "fx", "sh", "-c", "cat /tmp/lean 2>/dev/null || true") != "box|lean\n":
        assert time.monotonic() < deadline, "the detached command never ran"
        time.sleep(0.2)
    log = Path(fx.home) / "boxes" / _box_id(fx, "fx") / "run" / layout.EXEC_LOG_NAME
    deadline = time.monotonic() + 10
    while "logged" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "its output never reached exec.log"
        time.sleep(0.1)


def test_lean_exec_values_and_prefix(fx: Cli) -> None:
    out = fx.ok("exec", "-e", "A=1", "fx", "sh", "-c", 'echo "$FROMBOX|$A"; pwd; id -u')
    assert out.splitlines() == ["box|1", "/tmp", "0"]
    assert fx.ok("exec", "-u", "user", "-w", "/", "fx", "sh", "-c", "pwd; id -u").splitlines() == ["/", "1000"]
    box_id = _box_id(fx, "fx")
    assert fx.ok("exec", box_id, "echo", "by-id") == "by-id\n"
    assert fx.ok("exec", box_id[:6], "echo", "by-prefix") == "by-prefix\n"  # the full path resolves prefixes


def test_lean_exec_forwards_ctrl_c_and_sigpipe(fx: Cli) -> None:
    import shlex
    import signal

    script = "trap 'echo got-int; exit 3' INT; echo ready; while true; do sleep 0.1; done"
    proc = subprocess.Popen(fx.argv("exec", "fx", "sh", "-c", script), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=fx.env(), text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out, err) == (3, "got-int\n", "")
    cmd = shlex.join(fx.argv("exec", "fx", "yes"))
    piped = subprocess.run(["bash", "-c", f'{cmd} | head -2; echo "status=${{PIPESTATUS[0]}}"'],
                           capture_output=True, text=True, timeout=60, env=fx.env())  # fmt: skip
    assert piped.stdout == "y\ny\nstatus=141\n", piped.stderr


def _box_id(c: Cli, name: str) -> str:
    with sqlite3.connect(c.home / "state.db") as db:
        return str(db.execute("SELECT id FROM boxes WHERE name = ?", (name,)).fetchone()[0])


def test_an_exec_too_large_for_one_request_is_a_clear_error(fx: Cli) -> None:
    """Arguments whose request exceeds the protocol's frame (here ~1.1 MB, within the kernel's
    ARG_MAX): the lean path printed the protocol's traceback; now both paths say what is wrong,
    in one line, exit 125, and nothing ran."""
    lean, full = both(fx, "fx", "sh", "-c", "touch /tmp/ran", *[str(n) for n in range(140000)])
    for code, out, err in (lean, full):
        assert code == 125 and out == "", err
        assert err.startswith("boxlite: error: ") and "too large" in err and len(err.splitlines()) == 1, err
    assert fx("exec", "fx", "test", "-e", "/tmp/ran").returncode == 1


def test_lean_exec_counts_commands_and_errors(fx: Cli) -> None:
    box_id = _box_id(fx, "fx")

    def counters() -> tuple[int, int]:
        with sqlite3.connect(fx.home / "state.db") as db:
            rows = dict(db.execute("SELECT name, value FROM counters WHERE name LIKE ?", (f"box:{box_id}:%",)))
        return rows.get(f"box:{box_id}:commands", 0), rows.get(f"box:{box_id}:errors", 0)

    before = counters()
    fx.ok("exec", "fx", "true")
    assert fx("exec", "fx", "false").returncode == 1
    after = counters()
    assert (after[0] - before[0], after[1] - before[1]) == (2, 1)


def test_lean_exec_import_budget(fx: Cli) -> None:
    def modules(fast: str, *flags: str) -> list[str]:
        env = {**fx.env(), "BOXLITE_FAST_EXEC": fast}
        launcher = ["-c", "from boxlite.cli.entry import main; main()"]  # what bin/boxlite runs (not runpy's -m)
        verb = ["exec", *flags, "fx", "echo", "hi"]
        argv = [sys.executable, "-X", "importtime", *launcher, "--home", str(fx.home), *verb]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
        assert (proc.returncode, proc.stdout) == (0, "" if flags else "hi\n"), proc.stderr[-2000:]
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("import time:") and "|" in ln]
        return [ln.rsplit("|", 1)[1].strip() for ln in lines[1:]]

    lean = modules("1")
    assert not {"click", "asyncio", "boxlite.client.agent_client"} & set(lean)
    # agent/leanjson.py (re, enum), fastexec._load_sqlite (functools, collections): ~13 ms in all
    assert not {"re", "json", "enum", "functools", "collections"} & set(lean)
    assert len(lean) <= IMPORT_BUDGET, f"{len(lean)} modules: {lean}"
    assert "click" in modules("0")  # the budget measures something: the full path is the heavy one
    assert "click" not in modules("1", "-d")  # exec -d takes the lean path too


def test_lean_path_constants_match_the_runtime() -> None:
    assert fastexec.CONFIG_VERSION == runtime_config.CONFIG_VERSION
    assert fastexec.AGENT_SOCKET_NAME == layout.AGENT_SOCKET_NAME
    assert fastexec.EXEC_LOG_NAME == layout.EXEC_LOG_NAME
    from boxlite.cli import credentials

    assert fastexec.CREDENTIALS_NAME == credentials.FILE_NAME


# --- a hostile agent: a fake running box whose agent socket this test serves ---------------------


@pytest.fixture
def fake_box(tmp_path: Path) -> Iterator[tuple[str, Callable[[Callable[[socket.socket], None]], None]]]:
    """(home, serve): a record of a running detached namespace box (this process stands in for its
    supervisor) and ``serve(behaviour)``, which answers its agent socket with ``behaviour``."""
    home = Home.resolve(str(tmp_path / "home"))
    db = StateDB(home.db_path)
    box_id = "F" * 12
    me = os.getpid()
    rec = BoxRecord(id=box_id, name="fake", state="running", engine="namespace", created_at=now(),
                    config=BoxConfig(detach=True), pid=me, pid_start=process_start_time(me))  # fmt: skip
    db.insert(rec)
    db.close()
    run_dir = home.layout(box_id).run_dir
    run_dir.mkdir(parents=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(run_dir / layout.AGENT_SOCKET_NAME))
    server.listen(1)
    threads: list[threading.Thread] = []

    def serve(behaviour: Callable[[socket.socket], None]) -> None:
        def handle() -> None:
            conn, _ = server.accept()
            with conn:
                behaviour(conn)

        t = threading.Thread(target=handle, daemon=True)
        t.start()
        threads.append(t)

    yield str(home.root), serve
    server.close()
    for t in threads:
        t.join(5)


def _read_request(conn: socket.socket) -> dict[str, object]:
    frames = p.FrameReader()
    while True:
        frames.feed(conn.recv(65536))
        for kind, _channel, payload in frames:
            if kind == p.REQUEST:
                return p.decode_json(payload)


def test_oversized_frame_from_the_agent_is_a_protocol_error(fake_box, capfd: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    home, serve = fake_box

    def behaviour(conn: socket.socket) -> None:
        body = _read_request(conn)
        assert body["op"] == "exec" and body["argv"] == ["true"]
        conn.sendall(p.encode_json(p.RESPONSE, 1, {"ok": True, "pid": 5}))
        conn.sendall(p.HEADER.pack(p.MAX_PAYLOAD + 1, p.STDOUT, 1) + b"x" * 4096)
        time.sleep(0.5)

    serve(behaviour)
    assert fastexec.try_exec(["fake", "true"], home) == 125
    err = capfd.readouterr().err
    assert err.startswith("boxlite: error: the agent of box FFFFFFFFFFFF broke the protocol") and "exceeds" in err


def test_agent_that_never_answers_meets_the_deadline(
    fake_box, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    home, serve = fake_box
    monkeypatch.setattr(fastexec, "EXEC_TIMEOUT", 0.3)
    done = threading.Event()
    serve(lambda conn: (_read_request(conn), done.wait(5)))
    t0 = time.monotonic()
    assert fastexec.try_exec(["fake", "true"], home) == 125
    done.set()
    assert time.monotonic() - t0 < 3
    assert "did not answer 'exec' within 0.3s" in capfd.readouterr().err


def test_agent_going_away_mid_exec_is_an_error(fake_box, capfd: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    home, serve = fake_box

    def behaviour(conn: socket.socket) -> None:
        _read_request(conn)
        conn.sendall(p.encode_json(p.RESPONSE, 1, {"ok": True, "pid": 5}) + p.encode(p.STDOUT, 1, b"partial\n"))

    serve(behaviour)
    assert fastexec.try_exec(["fake", "true"], home) == 125
    out = capfd.readouterr()
    assert out.out == "partial\n" and out.err == "boxlite: error: the agent of box FFFFFFFFFFFF went away\n"


def test_unsound_home_or_unknown_box_falls_back(fake_box) -> None:  # type: ignore[no-untyped-def]
    home, _serve = fake_box
    assert fastexec.try_exec(["nobox", "true"], home) is None
    assert fastexec.try_exec(["-t", "fake", "true"], home) is None
    for var in ("BOXLITE_LOG", "BOXLITE_DEBUG", "BOXLITE_REST_URL"):  # logs or another backend: the full CLI
        os.environ[var] = "1"
        try:
            assert fastexec.try_exec(["fake", "true"], home) is None
        finally:
            del os.environ[var]
    os.chmod(Path(home) / "state.db", 0o644)  # readable by others: Home/StateDB would fix it, the full path runs
    assert fastexec.try_exec(["fake", "true"], home) is None


def test_help_summaries_match_the_verbs_own_help() -> None:
    """``boxlite --help`` lists verbs from cli/summaries.py (no verb module imported): the same text
    each verb's own help gives, at every width, and a summary for every verb."""
    import importlib

    import click

    from boxlite.cli.main import COMMANDS
    from boxlite.cli.summaries import SUMMARIES

    assert set(SUMMARIES) == set(COMMANDS)
    for name, (module, attr) in COMMANDS.items():
        real = getattr(importlib.import_module(f"boxlite.cli.{module}"), attr)
        for limit in (20, 45, 70, 200):
            expected = real.get_short_help_str(limit)
            assert click.Command(name, help=SUMMARIES[name]).get_short_help_str(limit) == expected, name
