"""``boxlite --url URL VERB``: the CLI on the boxes of a real ``boxlite serve`` (loopback TCP,
API key), through the REST backend; and ``serve`` logging its steps with ``BOXLITE_LOG``."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from rest.serverproc import API_KEY, free_port
from support.cli import Cli, Served, assert_one_line_error


def remote(cli: Cli, served: Served, *args: str, data: bytes | None = None, key: str = API_KEY,
           env_style: bool = False) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
    """``boxlite --url U --api-key K ARGS`` (or the same through BOXLITE_REST_URL/BOXLITE_API_KEY)."""
    env = cli.env()
    if env_style:
        env.update(BOXLITE_REST_URL=served.url, BOXLITE_API_KEY=key)
        argv = [sys.executable, "-m", "boxlite.cli", *args]
    else:
        argv = [sys.executable, "-m", "boxlite.cli", "--url", served.url, "--api-key", key, *args]
    return subprocess.run(argv, input=data, capture_output=True, timeout=120, env=env,
                          stdin=None if data is not None else subprocess.DEVNULL)  # fmt: skip


def ok(cli: Cli, served: Served, *args: str, data: bytes | None = None, env_style: bool = False) -> str:
    proc = remote(cli, served, *args, data=data, env_style=env_style)
    assert proc.returncode == 0, (args, proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout.decode()


def test_verbs_through_a_server(cli: Cli, served: Served, tmp_path: Path) -> None:
    rootfs = str(cli.rootfs)
    # foreground run: output and exit status come back through the server
    proc = remote(cli, served, "run", "--rm", "--rootfs", rootfs, "sh", "-c", "echo hello; exit 3")
    assert (proc.returncode, proc.stdout) == (3, b"hello\n")
    box_id = ok(cli, served, "run", "-d", "--name", "far", "-e", "SESSION_KEY=xyz", "--rootfs", rootfs,
                "sh", "-c", "sleep 600").strip()  # fmt: skip
    # the box lives on the server's home, not on the CLI's
    assert cli.ok("ls", "-a", "-q") == ""
    assert ok(cli, served, "ls", "-q").split() == [box_id[-12:]]
    assert ok(cli, served, "ls", "-q", env_style=True).split() == [box_id[-12:]]
    [listed] = json.loads(ok(cli, served, "ls", "--format", "json"))
    assert (listed["id"], listed["name"], listed["state"]["status"]) == (box_id, "far", "running")
    # exec by name and by id prefix; its status
    proc = remote(cli, served, "exec", box_id[:6], "sh", "-c", "echo in-box; exit 4")
    assert (proc.returncode, proc.stdout) == (4, b"in-box\n")
    [insp] = json.loads(ok(cli, served, "inspect", "far"))
    assert (insp["id"], insp["health"], insp["exit_code"]) == (box_id, "none", None)
    assert "dir" not in insp and "xyz" not in json.dumps(insp)
    # command and env come from the server, the secret-looking value masked there
    assert insp["command"] == ["sh", "-c", "sleep 600"]
    assert insp["env"]["SESSION_KEY"] == "******"
    assert "sh -c 'sleep 600'" in ok(cli, served, "ls")
    # files: both directions, and tar streams
    src = tmp_path / "f.txt"
    src.write_text("payload\n")
    ok(cli, served, "cp", str(src), "far:/root")
    ok(cli, served, "cp", "far:/root/f.txt", str(tmp_path / "back.txt"))
    assert (tmp_path / "back.txt").read_text() == "payload\n"
    stream = remote(cli, served, "cp", "far:/root/f.txt", "-")
    with tarfile.open(fileobj=io.BytesIO(stream.stdout)) as tar:
        member = tar.extractfile("f.txt")
        assert member is not None and member.read() == b"payload\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("piped.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"ok\n"))
    ok(cli, served, "cp", "-", "far:/tmp", data=buf.getvalue())
    assert ok(cli, served, "exec", "far", "cat", "/tmp/piped.txt") == "ok\n"
    # stats, info, version
    line = json.loads(ok(cli, served, "stats", "--format", "json", "--no-stream", "far"))
    assert line["boxes"][0]["id"] == box_id and line["boxes"][0]["pids"] >= 1
    info = json.loads(ok(cli, served, "info", "--format", "json"))
    assert (info["target"], info["homeDir"], info["boxesRunning"]) == (served.url, None, 1)
    # what needs the box files of a local home says so in one line
    proc = remote(cli, served, "logs", "far")
    assert proc.returncode == 125 and b"needs a home on this machine" in proc.stderr
    # kill, wait, rm; a main process's exit status
    proc = remote(cli, served, "run", "-d", "--name", "job", "--rootfs", rootfs, "sh", "-c", "sleep 1; exit 6")
    assert proc.returncode == 0, proc.stderr
    assert ok(cli, served, "wait", "job").strip() == "6"
    assert ok(cli, served, "kill", "far").strip() == "far"
    assert ok(cli, served, "wait", "far").strip() == "0"
    proc = remote(cli, served, "rm", "far", "nosuch", "job")
    assert proc.returncode == 125 and proc.stdout.split() == [b"far", b"job"]
    assert ok(cli, served, "ls", "-a", "-q") == ""
    # the server logged each step with its duration (BOXLITE_LOG=debug on `boxlite serve`)
    steps = [line for line in served.log.read_text().splitlines() if "boxlite.steps" in line]
    assert any("create done" in s and "duration_ms=" in s for s in steps), steps
    assert any("start done" in s for s in steps) and any("exec" in s for s in steps)


def test_kill_signal_through_a_server(cli: Cli, served: Served) -> None:
    """``kill -s USR1`` over --url reaches the box's main process (it traps it and goes on)."""
    script = "trap 'echo usr1 >> /tmp/got' USR1; touch /tmp/ready; while :; do sleep 0.1; done"
    ok(cli, served, "run", "-d", "--name", "trapper", "-e", "PLAIN=visible", "-e", "API_TOKEN=hunter2",
       "--rootfs", str(cli.rootfs), "sh", "-c", script)  # fmt: skip
    _until(cli, served, "trapper", "test -e /tmp/ready")
    assert ok(cli, served, "kill", "-s", "USR1", "trapper").strip() == "trapper"
    _until(cli, served, "trapper", "grep -q usr1 /tmp/got")
    assert ok(cli, served, "kill", "-s", "SIGUSR1", "trapper").strip() == "trapper"
    _until(cli, served, "trapper", "test $(wc -l < /tmp/got) -eq 2")
    assert json.loads(ok(cli, served, "inspect", "-f", "{{json .State}}", "trapper"))["status"] == "running"
    [insp] = json.loads(ok(cli, served, "inspect", "trapper"))
    assert insp["env"]["PLAIN"] == "visible" and insp["env"]["API_TOKEN"] == "******"
    assert "hunter2" not in json.dumps(insp)
    proc = remote(cli, served, "kill", "-s", "99", "trapper")
    assert proc.returncode == 125 and proc.stderr.startswith(b"boxlite: error: invalid signal"), proc.stderr
    ok(cli, served, "stop", "trapper")
    proc = remote(cli, served, "kill", "-s", "USR1", "trapper")
    assert proc.returncode == 125 and b"not running" in proc.stderr, proc.stderr
    ok(cli, served, "rm", "trapper")


def _until(cli: Cli, served: Served, box: str, check: str) -> None:
    for _ in range(150):
        if remote(cli, served, "exec", box, "sh", "-c", check).returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"never true in {box}: {check}")


def test_exec_detach_through_a_server(cli: Cli, served: Served) -> None:
    ok(cli, served, "run", "-d", "--name", "far-bg", "--rootfs", str(cli.rootfs), "sleep", "600")
    assert ok(cli, served, "exec", "-d", "-e", "WHO=far", "far-bg", "sh", "-c", "echo $WHO > /mark; sleep 600") == ""
    deadline = time.monotonic() + 30
    while ok(cli, served, "exec", "far-bg", "sh", "-c", "cat /mark 2>/dev/null || echo none") != "far\n":
        assert time.monotonic() < deadline, "the detached command never ran"
        time.sleep(0.2)
    proc = remote(cli, served, "exec", "-d", "far-bg", "no-such-cmd")
    text = proc.stderr.decode()
    assert proc.returncode == 127 and text.startswith("boxlite: error: ") and "no-such-cmd" in text, text
    ok(cli, served, "rm", "-f", "far-bg")


def test_url_errors_are_one_line(cli: Cli, served: Served) -> None:
    proc = remote(cli, served, "ls", key="wrong-key")
    text = proc.stderr.decode()
    assert proc.returncode == 125 and text.startswith("boxlite: error: ") and len(text.strip().splitlines()) == 1
    assert "Traceback" not in text and "wrong-key" not in text
    proc = remote(cli, served, "serve")
    assert proc.returncode == 125 and b"drop --url" in proc.stderr
    assert_one_line_error(cli("--url", served.url, "--ray", "auto", "ls"), 125, "not both")
    closed = f"http://127.0.0.1:{free_port()}"
    refused = subprocess.run([sys.executable, "-m", "boxlite.cli", "--url", closed, "ls"], capture_output=True,
                             text=True, timeout=60, env=cli.env())  # fmt: skip
    assert_one_line_error(refused, 125)


def test_completion_through_a_server(cli: Cli, served: Served) -> None:
    ok(cli, served, "create", "--name", "remote-box", "--rootfs", str(cli.rootfs))
    env = {**cli.env(), "_BOXLITE_COMPLETE": "bash_complete", "COMP_CWORD": "6",
           "COMP_WORDS": f"boxlite --url {served.url} --api-key {API_KEY} rm rem"}  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "boxlite.cli"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.stdout.splitlines() == ["plain,remote-box"], proc.stderr
    assert os.environ.get("BOXLITE_REST_URL") is None  # the tests above passed it explicitly only


def test_network_tunnel_prints_a_uri_on_the_server(cli: Cli, served: Served) -> None:
    """``boxlite network tunnel BOX PORT``: a URI of the server's that reaches the box's service."""
    import httpx

    page = "mkdir -p /www && echo tunnel-page > /www/index.html && exec httpd -f -p 8080 -h /www"
    ok(cli, served, "run", "-d", "--name", "web", "--rootfs", str(cli.rootfs), "sh", "-c", page)
    uri = ok(cli, served, "network", "tunnel", "web", "8080").strip()
    assert uri.startswith("http://boxlite:") and "127.0.0.1:" in uri, uri
    body, deadline = "", time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            body = httpx.get(uri + "/index.html", timeout=5).text
            if "tunnel-page" in body:
                break
        except httpx.HTTPError as e:
            body = repr(e)
        time.sleep(0.2)
    assert "tunnel-page" in body, body
    # The token is the capability: the same listener without it answers nothing of the box's.
    bare = "http://" + uri.split("@", 1)[1] + "/index.html"
    assert "tunnel-page" not in httpx.get(bare, timeout=5).text
    assert_one_line_error(cli("network", "tunnel", "web", "8080"), 125, "needs a server")
    assert remote(cli, served, "network", "tunnel", "web", "0").returncode == 125
    ok(cli, served, "rm", "-f", "web")
