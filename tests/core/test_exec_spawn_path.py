"""The spawner's fast path (root, no terminal, no rlimits: ``posix_spawn``) behaves as the fork
paths do: working directory, PATH search along the command's own PATH, and the box's user
database read again once the box changes it; and the end of an output stream of a process that
goes on running still reaches the host (the agent holds it briefly to send it with the EXIT).
One box for all (a VM boot is costly)."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

import boxlite


async def test_fast_path_cwd_path_search_and_user_database(box: boxlite.SimpleBox) -> None:
    assert (await box.exec("pwd", cwd="/tmp")).stdout == "/tmp\n"
    assert (await box.exec("pwd")).stdout == "/\n"  # the next command does not inherit that directory
    with pytest.raises(boxlite.ExecError, match="working directory") as bad_cwd:
        await box.exec("pwd", cwd="/no/such/dir")
    assert bad_cwd.value.exit_code == 126
    assert (await box.exec("pwd")).stdout == "/\n"

    script = "printf '#!/bin/sh\\necho hi from b\\n' > /tmp/b/hello"
    setup = f"mkdir -p /tmp/a/hello /tmp/b && {script} && chmod 755 /tmp/b/hello"
    assert (await box.exec("sh", "-c", setup)).exit_code == 0
    # A directory of the same name earlier on PATH is skipped, as execvp does.
    assert (await box.exec("hello", env={"PATH": "/tmp/a:/tmp/b"})).stdout == "hi from b\n"
    assert (await box.exec("./hello", cwd="/tmp/b")).stdout == "hi from b\n"
    with pytest.raises(boxlite.ExecError, match="not found") as missing:
        await box.exec("hello")  # not on the default PATH
    assert missing.value.exit_code == 127
    await box.exec("chmod", "644", "/tmp/b/hello")
    with pytest.raises(boxlite.ExecError) as denied:
        await box.exec("hello", env={"PATH": "/tmp/b"})
    assert denied.value.exit_code == 126

    assert (await box.exec("sh", "-c", "echo $HOME")).stdout == "/root\n"
    edit = "sed -i 's#^root:\\([^:]*\\):0:0:\\([^:]*\\):[^:]*:#root:\\1:0:0:\\2:/tmp:#' /etc/passwd"
    assert (await box.exec("sh", "-c", edit)).exit_code == 0
    assert (await box.exec("sh", "-c", "echo $HOME")).stdout == "/tmp\n"  # no stale answer
    await box.exec("sh", "-c", "echo 'late:x:2345:2345::/:/bin/sh' >> /etc/passwd")
    assert (await box.exec("id", "-u", user="late")).stdout == "2345\n"

    running = await box.box.exec("sh", ["-c", "echo out; exec >&- 2>&-; sleep 30"], stdin=False)
    assert await asyncio.wait_for(running.stdout().read(), 10) == "out\n"  # ended while it runs
    assert await asyncio.wait_for(running.stderr().read(), 10) == ""
    await running.kill()
    assert (await running.wait()).exit_code != 0


async def test_a_request_larger_than_a_spawner_reply_reaches_the_command_whole(box: boxlite.SimpleBox) -> None:
    """The spawner reads a request to its length (its replies with a small buffer): 100 KiB of
    environment and arguments arrive intact, on the fast path and through the fork path."""
    big = "".join(chr(ord("a") + i % 26) for i in range(100 << 10))
    script = 'echo ${#BIG} $(echo "$BIG" | md5sum | cut -c1-32) $#'
    for user in (None, "nobody"):
        result = await box.exec("sh", "-c", script, "sh", *(["arg"] * 1000), env={"BIG": big}, user=user)
        assert result.stdout.split() == [str(len(big)), hashlib.md5(big.encode() + b"\n").hexdigest(), "1000"]


async def test_a_request_too_large_for_one_spawner_message_still_starts(box: boxlite.SimpleBox) -> None:
    """600 KiB of environment (six variables, each under the kernel's 128 KiB per string) exceeds
    what one message to the spawner holds (~208 KiB): the agent starts that command itself, and
    the command sees every byte (it was a "Message too long" exec error). The spawner is kept."""
    env = {f"V{i}": chr(ord("a") + i) * (100 << 10) for i in range(6)}
    script = 'for v in "$V0" "$V1" "$V2" "$V3" "$V4" "$V5"; do printf "%s " ${#v}; done; printf "%s" "$V5" | md5sum'
    result = await box.exec("sh", "-c", script, env=env)
    words = result.stdout.split()
    assert words[:6] == [str(100 << 10)] * 6
    assert words[6] == hashlib.md5(env["V5"].encode()).hexdigest()
    assert (await box.exec("echo", "after")).stdout == "after\n"
