"""Running commands: output streaming, stdin, exit codes, signals, timeouts, env/cwd/user, PTY."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path, PurePosixPath

import pytest

import boxlite
from boxlite.agent import protocol


async def test_exec_returns_output_and_exit_code(box: boxlite.SimpleBox) -> None:
    result = await box.exec("sh", "-c", "echo out; echo err >&2; exit 3")
    assert result == boxlite.ExecResult(3, "out\n", "err\n")


async def test_output_is_streamed_as_produced(box: boxlite.SimpleBox) -> None:
    execution = await box.box.exec("sh", ["-c", "echo first; sleep 3; echo second"])
    start = time.monotonic()
    stream = execution.stdout().__aiter__()
    first = await stream.__anext__()
    assert first == "first\n"
    assert time.monotonic() - start < 2.5, "first line arrived only after the process slept"
    assert await stream.__anext__() == "second\n"
    assert (await execution.wait()).exit_code == 0


async def test_stdout_and_stderr_keep_their_order(box: boxlite.SimpleBox) -> None:
    result = await box.exec("sh", "-c", "for i in $(seq 1 2000); do echo $i; echo e$i >&2; done")
    assert result.stdout.split() == [str(i) for i in range(1, 2001)]
    assert result.stderr.split() == [f"e{i}" for i in range(1, 2001)]


async def test_large_output_arrives_intact(box: boxlite.SimpleBox) -> None:
    execution = await box.box.exec("dd", ["if=/dev/zero", "bs=1M", "count=64"], stdin=False)
    total = 0
    async for chunk in execution.stdout().bytes():
        total += len(chunk)
    assert total == 64 << 20
    assert (await execution.wait()).exit_code == 0


async def test_unread_output_is_flow_controlled(box: boxlite.SimpleBox) -> None:
    """A box printing without end must not fill host memory: the agent stops at the window."""
    execution = await box.box.exec("yes", stdin=False)
    await asyncio.sleep(1.0)
    buffered = execution._channel.stdout.total
    assert buffered <= protocol.DEFAULT_OUTPUT_WINDOW
    await execution.kill()
    assert (await execution.wait()).exit_code == 128 + signal.SIGKILL


async def test_stdin_round_trip_with_flow_control(box: boxlite.SimpleBox) -> None:
    execution = await box.box.exec("cat")
    payload = bytes(range(256)) * 8192  # 2 MiB, several stdin windows
    stdin, stdout = execution.stdin(), execution.stdout()
    reader = asyncio.ensure_future(stdout.read_bytes())
    await stdin.send_input(payload)
    await stdin.close()
    assert await reader == payload
    assert (await execution.wait()).exit_code == 0


async def test_exit_code_for_signal_is_128_plus_n(box: boxlite.SimpleBox) -> None:
    result = await box.exec("sh", "-c", "kill -TERM $$")
    assert result.exit_code == 128 + signal.SIGTERM
    assert "SIGTERM" in (result.error_message or "")


async def test_signal_reaches_the_process(box: boxlite.SimpleBox) -> None:
    execution = await box.box.exec("sh", ["-c", "trap 'echo got-usr1; exit 0' USR1; echo ready; sleep 30 & wait"])
    out = execution.stdout().__aiter__()
    assert await out.__anext__() == "ready\n"
    await execution.signal(signal.SIGUSR1)
    assert await out.__anext__() == "got-usr1\n"
    assert (await execution.wait()).exit_code == 0


async def test_kill_terminates_the_process_group(box: boxlite.SimpleBox) -> None:
    execution = await box.box.exec("sh", ["-c", "sleep 100 & sleep 100"])
    await asyncio.sleep(0.2)
    await execution.kill()
    status = await execution.wait()
    assert status.exit_code == 137 and status.signal == signal.SIGKILL
    ps = await box.exec("ps")
    assert "sleep 100" not in ps.stdout


async def test_timeout_kills_and_reports(box: boxlite.SimpleBox) -> None:
    start = time.monotonic()
    result = await box.exec("sleep", "30", timeout=0.5)  # a result, as in BoxLite: no exception
    assert result.timed_out and result.exit_code != 0 and not result.ok
    assert time.monotonic() - start < 5
    execution = await box.box.exec("sleep", ["30"], timeout_secs=0.3)
    status = await execution.wait()
    assert status.timed_out and status.exit_code == 137


async def test_env_cwd_and_user(box: boxlite.SimpleBox) -> None:
    result = await box.exec("sh", "-c", 'echo "$GREETING"; pwd; id -u; id -g', env={"GREETING": "héllo wörld"},
                            cwd="/tmp", user="user")  # fmt: skip
    assert result.stdout.split("\n")[:4] == ["héllo wörld", "/tmp", "1000", "1000"]
    numeric = await box.exec("id", "-u", user="4242:4242")
    assert numeric.stdout.strip() == "4242"
    root = await box.exec("sh", "-c", "id -u; echo $HOME")
    assert root.stdout.split() == ["0", "/root"]


async def test_bad_exec_requests_raise_typed_errors(box: boxlite.SimpleBox) -> None:
    with pytest.raises(boxlite.ExecError, match="not found"):
        await box.exec("no-such-command")
    with pytest.raises(boxlite.ExecError, match="nobody-here"):
        await box.exec("true", user="nobody-here")
    with pytest.raises(boxlite.ExecError, match="working directory"):
        await box.exec("true", cwd="/does/not/exist")
    assert (await box.exec("true")).exit_code == 0  # the box is fine afterwards


async def test_malformed_or_oversized_commands_are_config_errors(box: boxlite.SimpleBox) -> None:
    """A NUL inside an argument, or arguments + environment too large for one request, are the
    caller's input: ``ConfigError`` before anything runs (they were an exit status 127 and the
    protocol's own ValueError, not a BoxliteError), and the box carries on."""
    with pytest.raises(boxlite.ConfigError, match="NUL"):
        await box.exec("echo", "a\0b")
    with pytest.raises(boxlite.ConfigError, match="too large"):
        await box.exec("true", env={"BIG": "x" * (2 << 20)})
    with pytest.raises(boxlite.ConfigError, match="too large"):
        await box.exec("true", *(["y" * 1000] * 2000))
    assert (await box.exec("echo", "fine")).stdout == "fine\n"


async def test_wrong_types_are_config_errors(box: boxlite.SimpleBox, tmp_path: Path) -> None:
    """Values of the wrong type are the caller's mistake: ConfigError naming the value, not the
    TypeError of whatever code met it first; the box carries on."""
    with pytest.raises(boxlite.ConfigError, match="must be strings"):
        await box.exec("echo", 5)  # type: ignore[arg-type]
    with pytest.raises(boxlite.ConfigError, match="env"):
        await box.exec("env", env=123)  # type: ignore[arg-type]
    with pytest.raises(boxlite.ConfigError, match="copy_in source"):
        await box.copy_in(5, "/tmp")  # type: ignore[arg-type]
    with pytest.raises(boxlite.ConfigError, match="path in the box"):
        await box.copy_out(None, str(tmp_path / "out"))  # type: ignore[arg-type]
    with pytest.raises(boxlite.ConfigError, match="timeout"):
        await box.box.stop(timeout="soon")  # type: ignore[arg-type]
    await box.copy_in(Path("/etc/hostname"), PurePosixPath("/tmp"))  # pathlib paths are paths
    assert (await box.exec("cat", "/tmp/hostname")).exit_code == 0


async def test_many_concurrent_executions(box: boxlite.SimpleBox) -> None:
    results = await asyncio.gather(*(box.exec("sh", "-c", f"echo {i}; sleep 0.2") for i in range(20)))
    assert [r.stdout.strip() for r in results] == [str(i) for i in range(20)]


async def test_tty_allocates_a_terminal_and_resizes(box: boxlite.SimpleBox) -> None:
    execution = await box.box.exec("sh", tty=True, rows=30, cols=100)
    stdin, stdout = execution.stdin(), execution.stdout()
    await stdin.send_input(b"tty; stty size\n")
    seen = ""
    async for chunk in stdout:
        seen += chunk
        if "30 100" in seen:
            break
    assert "/dev/pts/" in seen
    await execution.resize_tty(40, 120)
    await stdin.send_input(b"stty size; exit 5\n")
    async for chunk in stdout:
        seen += chunk
    assert "40 120" in seen
    assert (await execution.wait()).exit_code == 5


async def test_output_streams_can_be_taken_once(box: boxlite.SimpleBox) -> None:
    execution = await box.box.exec("true", stdin=False)
    execution.stdout()
    with pytest.raises(boxlite.BoxliteError):
        execution.stdout()
    await execution.wait()


async def test_exec_failures_carry_shell_exit_statuses(box: boxlite.SimpleBox) -> None:
    with pytest.raises(boxlite.ExecError) as missing:
        await box.exec("no-such-command")
    assert missing.value.exit_code == 127
    await box.exec("sh", "-c", "echo '#!/bin/sh' > /tmp/script; chmod 644 /tmp/script")
    with pytest.raises(boxlite.ExecError) as denied:
        await box.exec("/tmp/script")
    assert denied.value.exit_code == 126


async def test_tty_stderr_stream_ends_at_once(box: boxlite.SimpleBox) -> None:
    """With a PTY everything arrives on stdout; reading stderr must not wait forever."""
    execution = await box.box.exec("sh", ["-c", "echo both >&2"], tty=True, stdin=False)
    assert await asyncio.wait_for(execution.stderr().read(), 10) == ""
    assert "both" in await asyncio.wait_for(execution.stdout().read(), 10)
    assert (await execution.wait()).exit_code == 0


async def test_output_larger_than_the_window_survives_an_early_exit(box: boxlite.SimpleBox) -> None:
    """The process exits while part of its output still waits for credit: one output window
    is in flight and the rest sits in the pipe, so EXIT comes first and the tail follows."""
    size = protocol.DEFAULT_OUTPUT_WINDOW + 30_000  # fits the window plus the pipe buffer
    execution = await box.box.exec("head", ["-c", str(size), "/dev/zero"], stdin=False)
    status = await asyncio.wait_for(execution.wait(), 30)
    assert status.exit_code == 0
    assert len(await asyncio.wait_for(execution.stdout().read_bytes(), 30)) == size
