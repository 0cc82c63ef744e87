"""Docker habits of the CLI: ``kill``, ``wait``, ``version``, ``info``, ``cp -`` tar streams,
``rm`` past errors, shell completion with box names, ``ls``/``inspect`` details, id prefixes,
``stats --format json`` streaming."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

import boxlite
from boxlite.cli import common
from boxlite.errors import NotFoundError
from support.cli import Cli, assert_one_line_error


def _tar(*members: tuple[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _run_bytes(cli: Cli, *args: str, data: bytes | None = None, **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        cli.argv(*args), input=data, capture_output=True, timeout=120, env={**cli.env(), **env},
        stdin=None if data is not None else subprocess.DEVNULL,
    )  # fmt: skip


def _sleeper(cli: Cli, name: str, *extra: str) -> str:
    return cli.ok("run", "-d", "--name", name, *extra, "--rootfs", str(cli.rootfs), "sh", "-c", "sleep 600").strip()


def test_kill_and_wait(cli: Cli) -> None:
    box_id = _sleeper(cli, "victim")
    assert_one_line_error(cli("kill", "-s", "99", "victim"), 125, "invalid signal")
    assert_one_line_error(cli("kill", "-s", "NOSUCH", "victim"), 125, "invalid signal")
    waiter = subprocess.Popen(cli.argv("wait", "victim"), stdout=subprocess.PIPE, text=True, env=cli.env())
    try:
        time.sleep(0.5)
        assert waiter.poll() is None  # wait blocks while the box runs
        assert cli.ok("kill", "victim").strip() == "victim"
        out, _ = waiter.communicate(timeout=60)
    finally:
        waiter.kill()
    assert (waiter.returncode, out.strip()) == (0, "0")  # stopped by a signal: no main-process exit code
    assert cli.json("inspect", box_id)[0]["state"]["running"] is False  # type: ignore[index]
    assert_one_line_error(cli("kill", "victim"), 125, "not running")

    # the main process's own status, once it ended; every box is waited for, errors reported
    cli.ok("run", "-d", "--name", "job", "--rootfs", str(cli.rootfs), "sh", "-c", "sleep 1; exit 7")
    proc = cli("wait", "job", "nosuch", "victim")
    assert (proc.returncode, proc.stdout.split()) == (125, ["7", "0"])
    assert proc.stderr.count("boxlite: error: ") == 1 and "nosuch" in proc.stderr


def test_kill_term_lets_the_box_exit(cli: Cli) -> None:
    cli.ok("run", "-d", "--rm", "--name", "gone", "--rootfs", str(cli.rootfs), "sh", "-c", "sleep 600")
    assert cli.ok("kill", "-s", "SIGTERM", "gone").strip() == "gone"
    assert cli.ok("ls", "-a", "-q") == ""  # --rm boxes are removed when killed, as docker does


def test_stop_of_several_boxes_takes_one_grace_not_one_each(cli: Cli) -> None:
    """As docker: ``stop -t 4 a b c`` stops the boxes together (three boxes that ignore SIGTERM
    took 4 s each one after the other), and reports them in the order given, a failure included."""
    for name in ("a", "b", "c"):
        cli.ok("run", "-d", "--name", name, "--rootfs", str(cli.rootfs), "sh", "-c",
               "trap '' TERM; while :; do sleep 0.1; done")  # fmt: skip
    started = time.monotonic()
    out = cli("stop", "-t", "4", "a", "nope", "b", "c")
    took = time.monotonic() - started
    assert (out.returncode, out.stdout.split()) == (125, ["a", "b", "c"])
    assert "nope" in out.stderr
    assert 4 <= took < 10, took
    assert cli.ok("ps", "-q") == ""


def test_version_and_info(cli: Cli) -> None:
    version = cli.json("version", "--format", "json")
    assert version["version"] == boxlite.__version__ and version["target"] == "local"  # type: ignore[index]
    assert cli.ok("version").splitlines()[0].split() == ["Version:", boxlite.__version__]
    _sleeper(cli, "one")
    cli.ok("create", "--rootfs", str(cli.rootfs))
    info: Any = cli.json("info", "--format", "json")
    assert (info["boxesTotal"], info["boxesRunning"], info["boxesConfigured"]) == (2, 1, 1)
    assert info["homeDir"] == str(cli.home) and info["version"] == boxlite.__version__
    yaml = dict(line.split(": ", 1) for line in cli.ok("info").splitlines())
    assert yaml["boxesTotal"] == "2" and yaml["homeDir"] == f'"{cli.home}"'


def test_cp_tar_streams(cli: Cli, tmp_path: Path) -> None:
    _sleeper(cli, "files")
    cli.ok("exec", "files", "sh", "-c", "mkdir -p /data/sub && echo payload > /data/sub/f.txt")
    # BOX:PATH -  : a tar on stdout, member names rooted at the path's base name
    out = _run_bytes(cli, "cp", "files:/data", "-")
    assert out.returncode == 0, out.stderr
    with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tar:
        member = tar.extractfile("data/sub/f.txt")
        assert member is not None and member.read() == b"payload\n"
    # - BOX:DIR  : a tar from stdin extracted into the directory
    proc = _run_bytes(cli, "cp", "-", "files:/root", data=_tar(("in/a.txt", b"from stdin\n")))
    assert proc.returncode == 0, proc.stderr
    assert cli.ok("exec", "files", "cat", "/root/in/a.txt") == "from stdin\n"


def test_cp_options(cli: Cli, tmp_path: Path) -> None:
    """BoxLite's ``cp`` flags: ``--no-overwrite``, ``--follow-symlinks``, ``--no-include-parent``."""
    _sleeper(cli, "opts")
    cli.ok("exec", "opts", "sh", "-c", "mkdir -p /root/in /root/out && echo box > /root/in/f.txt && "
           "echo target > /root/target && ln -s /root/target /root/out/link")  # fmt: skip
    src = tmp_path / "d"
    src.mkdir()
    (src / "f.txt").write_text("host\n")
    cli.ok("cp", "--no-overwrite", str(src / "f.txt"), "opts:/root/in")
    assert cli.ok("exec", "opts", "cat", "/root/in/f.txt") == "box\n"
    cli.ok("cp", str(src / "f.txt"), "opts:/root/in")
    assert cli.ok("exec", "opts", "cat", "/root/in/f.txt") == "host\n"
    # a directory as itself (docker cp) or only its contents
    cli.ok("cp", str(src), "opts:/root/in")
    cli.ok("cp", "--no-include-parent", str(src), "opts:/root/out")
    listing = cli.ok("exec", "opts", "sh", "-c", "ls /root/in/d /root/out")
    assert listing == "/root/in/d:\nf.txt\n\n/root/out:\nf.txt\nlink\n", listing
    # links inside a directory copied out: kept as links, or (--follow-symlinks) what they point to
    cli.ok("cp", "opts:/root/out", str(tmp_path / "plain"))
    assert (tmp_path / "plain" / "link").is_symlink()
    cli.ok("cp", "--follow-symlinks", "opts:/root/out", str(tmp_path / "followed"))
    followed = tmp_path / "followed" / "link"
    assert not followed.is_symlink() and followed.read_text() == "target\n"


def test_cp_tar_streams_are_refused_when_hostile(cli: Cli) -> None:
    _sleeper(cli, "target")
    cli.ok("exec", "target", "mkdir", "-p", "/srv/drop")
    # a member escaping the destination is refused by the box's agent; nothing lands outside
    proc = _run_bytes(cli, "cp", "-", "target:/srv/drop", data=_tar(("../../escaped.txt", b"x")))
    assert proc.returncode == 125 and b"boxlite: error: " in proc.stderr
    assert cli("exec", "target", "ls", "/escaped.txt", "/srv/escaped.txt").returncode != 0
    proc = _run_bytes(cli, "cp", "-", "target:/srv/drop", data=_tar(("/abs.txt", b"x")))
    assert proc.returncode == 125
    assert cli("exec", "target", "ls", "/abs.txt").returncode != 0
    # the destination must be a directory
    cli.ok("exec", "target", "sh", "-c", "echo f > /srv/file")
    proc = _run_bytes(cli, "cp", "-", "target:/srv/file", data=_tar(("a.txt", b"x")))
    assert proc.returncode == 125 and b"must be a directory" in proc.stderr
    # both directions are capped (BOXLITE_CP_MAX_BYTES)
    big = _tar(("big.bin", os.urandom(64 * 1024)))
    proc = _run_bytes(cli, "cp", "-", "target:/srv/drop", data=big, BOXLITE_CP_MAX_BYTES="16384")
    assert proc.returncode == 125 and b"larger than 16384 bytes" in proc.stderr
    assert (
        cli("exec", "target", "ls", "/srv/drop/big.bin").returncode != 0
        or int(cli.ok("exec", "target", "wc", "-c", "/srv/drop/big.bin").split()[0]) < 64 * 1024
    )
    cli.ok("exec", "target", "sh", "-c", "head -c 100000 /dev/zero > /srv/zeros")
    proc = _run_bytes(cli, "cp", "target:/srv/zeros", "-", BOXLITE_CP_MAX_BYTES="16384")
    assert proc.returncode == 125 and b"larger than 16384 bytes" in proc.stderr
    assert len(proc.stdout) <= 16384
    proc = _run_bytes(cli, "cp", "-", "target:/srv/drop", data=b"", BOXLITE_CP_MAX_BYTES="lots")
    assert proc.returncode == 125 and b"BOXLITE_CP_MAX_BYTES" in proc.stderr


def test_rm_goes_on_past_errors(cli: Cli) -> None:
    a = cli.ok("create", "--name", "a", "--rootfs", str(cli.rootfs)).strip()
    cli.ok("create", "--name", "b", "--rootfs", str(cli.rootfs))
    _sleeper(cli, "busy")
    proc = cli("rm", "a", "nosuch", "busy", "b")
    assert proc.returncode == 125
    assert proc.stdout.split() == ["a", "b"]  # each removed box, in order
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 2 and "nosuch" in errors[0] and "busy is running" in errors[1]
    assert cli.ok("ls", "-a", "-q").split() == [cli.json("inspect", "busy")[0]["short_id"]]  # type: ignore[index]
    assert cli("inspect", a).returncode == 125
    # --all: asks on a terminal; without one only --force removes (BoxLite's rule)
    cli.ok("create", "--name", "c", "--rootfs", str(cli.rootfs))
    assert_one_line_error(cli("rm", "--all"), 125, "not confirmed")
    assert_one_line_error(cli("rm"), 125, "--all")
    assert_one_line_error(cli("rm", "--all", "busy"), 125, "--all")
    assert len(cli.ok("list", "-a", "-q").split()) == 2  # BoxLite's name of ls
    assert len(cli.ok("rm", "-a", "-f").split()) == 2
    assert cli.ok("ls", "-a", "-q") == ""


def test_completion_scripts_and_box_names(cli: Cli) -> None:
    for shell in ("bash", "zsh", "fish"):
        script = cli.ok("completion", shell)
        assert "_BOXLITE_COMPLETE" in script
    assert_one_line_error(cli("completion", "tcsh"), 125, "tcsh")
    box_id = cli.ok("create", "--name", "webapp", "--rootfs", str(cli.rootfs)).strip()
    cli.ok("create", "--name", "other", "--rootfs", str(cli.rootfs))

    def complete(*words: str) -> list[str]:
        env = {**cli.env(), "_BOXLITE_COMPLETE": "bash_complete", "COMP_WORDS": " ".join(["boxlite", *words]),
               "COMP_CWORD": str(len(words))}  # fmt: skip
        proc = subprocess.run(cli.argv()[:-2], capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return [line.split(",", 1)[1] for line in proc.stdout.splitlines()]

    home = ["--home", str(cli.home)]
    assert complete(*home, "rm", "web") == ["webapp"]
    assert complete(*home, "exec", box_id[-12:-6]) == [box_id[-12:]]
    assert set(complete(*home, "logs", "")) == {"webapp", "other", box_id[-12:]} | {
        i["short_id"]
        for i in cli.json("ls", "-a", "--format", "json")  # type: ignore[union-attr]
        if i["name"] == "other"
    }
    assert "kill" in complete(*home, "ki")


def test_ls_and_inspect_details(cli: Cli) -> None:
    box_id = cli.ok(
        "run", "-d", "--name", "svc", "-e", "API_TOKEN=hunter2", "-e", "DB_PASSWORD=pw", "-e", "MODE=prod",
        "--rootfs", str(cli.rootfs), "sh", "-c", "sleep 600",
    ).strip()  # fmt: skip
    proc = cli("run", "-d", "--name", "done", "--rootfs", str(cli.rootfs), "sh", "-c", "exit 3")
    assert proc.returncode == 3
    table = cli.ok("ls", "-a")
    header = table.splitlines()[0].split()
    assert header == ["ID", "NAME", "IMAGE", "COMMAND", "STATE", "PORTS", "CREATED"]
    svc = next(line for line in table.splitlines() if " svc " in line)
    assert "sh -c 'sleep 600'" in svc and "running" in svc
    done = next(line for line in table.splitlines() if " done " in line)
    assert "exited (3)" in done and "sh -c 'exit 3'" in done
    [insp] = cli.json("inspect", box_id[:6])  # type: ignore[misc]  # a unique id prefix, as typed
    assert insp["command"] == ["sh", "-c", "sleep 600"]
    assert insp["env"]["MODE"] == "prod"
    assert insp["env"]["API_TOKEN"] == insp["env"]["DB_PASSWORD"] == "******"
    text = cli.ok("inspect", "svc", "done") + cli.ok("ls", "-a", "--format", "json")
    assert "hunter2" not in text and 'pw"' not in text
    assert (insp["exit_code"], insp["health"], insp["ports"]) == (None, "none", [])
    [ended] = cli.json("inspect", "done")  # type: ignore[misc]
    assert ended["exit_code"] == 3
    # BoxLite's/docker's -f templates (field lookups) and -l
    line = cli.ok("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}} {{.Name}} {{json .Command}}", "done", "svc")
    assert line.splitlines() == ['exited 3 done ["sh", "-c", "exit 3"]', 'running <nil> svc ["sh", "-c", "sleep 600"]']
    assert cli.ok("inspect", "--format", "{{json .Env}}", "svc").count("******") == 2
    assert cli.ok("inspect", "-l", "-f", "{{.ID}}").strip() == ended["id"]
    import yaml  # BoxLite's -f yaml: the same data (pyyaml: a test dependency only)

    assert yaml.safe_load(cli.ok("inspect", "-f", "yaml", "svc", "done")) == cli.json("inspect", "svc", "done")
    assert_one_line_error(cli("inspect", "-f", "{{if .State}}x{{end}}", "svc"), 125, "unsupported template")
    assert_one_line_error(cli("inspect", "-f", "{{.Nope}}", "svc"), 125, "no field 'Nope'")
    assert_one_line_error(cli("inspect", "-l", "svc"), 125, "--latest")


async def test_ambiguous_prefix_is_named() -> None:
    """A prefix (or short id) shared by several boxes is an error naming them, not "no such box"."""

    class Info:
        def __init__(self, box_id: str) -> None:
            self.id = box_id

    class Runtime:
        async def get(self, ref: str) -> None:
            return None

        async def list_info(self) -> list[Info]:
            return [Info("abcd1234XXXXXXXXXXXXXX"), Info("abcd9876YYYYYYYYYYYYYY"), Info("zzzz0000ZZZZZZZZZZZZZZ")]

    rt: Any = Runtime()
    with pytest.raises(Exception, match=r"ambiguous: 2 boxes match \(XXXXXXXXXXXX, YYYYYYYYYYYY\)"):
        await common.find_box(rt, "abcd")
    with pytest.raises(NotFoundError):
        await common.find_box(rt, "abc")  # too short to be a prefix
    with pytest.raises(NotFoundError):
        await common.find_box(rt, "qqqq")


def test_stats_json_streams(cli: Cli) -> None:
    box_id = _sleeper(cli, "busy")
    proc = subprocess.Popen(
        cli.argv("stats", "--format", "json", "--interval", "0.2", "busy"), stdout=subprocess.PIPE, text=True,
        env=cli.env(),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = [json.loads(proc.stdout.readline()) for _ in range(3)]
        assert proc.poll() is None  # still streaming
    finally:
        proc.terminate()
        proc.wait(30)
    for line in lines:
        [box] = line["boxes"]
        assert box["id"] == box_id and box["pids"] >= 1 and box["memory_bytes"] > 0
    assert lines[0]["time"] < lines[1]["time"] < lines[2]["time"]
    once = cli.ok("stats", "--format", "json", "--no-stream").splitlines()
    assert len(once) == 1 and json.loads(once[0])["boxes"][0]["id"] == box_id


def test_exec_counters_survive_across_processes(cli: Cli, tmp_path: Path) -> None:
    """Each `boxlite` is a new process: a box's counters are kept in its home, not in one process."""
    _sleeper(cli, "counted")
    cli.ok("exec", "counted", "true")
    assert cli("exec", "counted", "false").returncode == 1
    (tmp_path / "f").write_bytes(b"x" * 5000)
    cli.ok("cp", str(tmp_path / "f"), "counted:/tmp")
    first = json.loads(cli.ok("stats", "--format", "json", "--no-stream", "counted"))["boxes"][0]
    assert (first["commands_executed_total"], first["exec_errors_total"]) == (3, 1)
    assert first["bytes_sent_total"] > 5000
    cli.ok("exec", "counted", "true")
    again = json.loads(cli.ok("stats", "--format", "json", "--no-stream", "counted"))["boxes"][0]
    assert (again["commands_executed_total"], again["exec_errors_total"]) == (4, 1)


def test_global_options_after_the_verb(cli: Cli, tmp_path: Path) -> None:
    """BoxLite's CLI takes ``--home``, ``--url``, ... after the verb too; a boxed command's own
    arguments are never taken for them."""
    other = tmp_path / "other-home"
    box_id = cli.ok("run", "-d", "--home", str(other), "--name", "there", "--rootfs", str(cli.rootfs),
                    "sh", "-c", "sleep 600").strip()  # fmt: skip
    assert cli.ok("ls", "-q", "-a").split() == []  # not in the first home
    assert cli.ok("ls", "-q", "--home", str(other)).split() == [box_id[-12:]]
    assert cli.ok("ls", f"--home={other}", "--json") != "[]\n"
    # After the boxed command's name, `--home` is the command's argument.
    assert cli.ok("exec", "--home", str(other), "there", "echo", "--home", "x") == "--home x\n"
    assert cli.ok("rm", "-f", "there", "--home", str(other)).strip() in (box_id, "there", box_id[-12:])
    assert cli.ok("ls", "-q", "-a", "--home", str(other)) == ""


def test_stats_stream_flag_and_yaml(cli: Cli) -> None:
    """``stats -s`` keeps printing into a pipe (a plain table per interval); ``--format yaml``."""
    import yaml

    box_id = _sleeper(cli, "watched")
    proc = subprocess.Popen(cli.argv("stats", "-s", "--interval", "0.2", "watched"), stdout=subprocess.PIPE,
                            text=True, env=cli.env())  # fmt: skip
    try:
        assert proc.stdout is not None
        headers = 0
        while headers < 3:
            line = proc.stdout.readline()
            assert "\x1b" not in line  # no terminal control codes into a pipe
            headers += line.startswith("ID")
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(30)
    [doc] = yaml.safe_load(cli.ok("stats", "--format", "yaml", "watched"))
    assert doc["id"] == box_id and doc["name"] == "watched" and doc["pids"] >= 1
    assert_one_line_error(cli("stats", "-s", "--no-stream", "watched"), 125, "exclude each other")
