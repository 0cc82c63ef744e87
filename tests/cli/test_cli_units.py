"""Pure helpers of the CLI (no boxes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from boxlite.cli.common import env_pairs, parse_memory, parse_size
from boxlite.cli.errors import describe
from boxlite.cli.files import split_box_path
from boxlite.errors import ConfigError, ExecError, NotFoundError


@pytest.mark.parametrize(
    ("text", "mib"), [("512m", 512), ("2g", 2048), ("1.5GiB", 1536), ("256", 256), ("1073741824b", 1024), ("64MB", 64)]
)
def test_parse_memory(text: str, mib: int) -> None:
    assert parse_memory(text) == mib


def test_parse_memory_rejects_garbage() -> None:
    with pytest.raises(Exception, match="--memory"):
        parse_memory("lots")


@pytest.mark.parametrize(
    ("text", "size"), [("100k", 102400), ("1.5KiB", 1536), ("4096b", 4096), ("2", 2 << 20), ("1g", 1 << 30)]
)
def test_parse_size_counts_bytes(text: str, size: int) -> None:
    assert parse_size(text, "--max-size") == size


@pytest.mark.parametrize("text", ["0", "0.4b", "-1m", "12q"])
def test_parse_size_refuses_nothing_and_garbage(text: str) -> None:
    with pytest.raises(Exception, match="--max-size"):
        parse_size(text, "--max-size")


def test_split_box_path() -> None:
    assert split_box_path("web:/etc/hosts") == ("web", "/etc/hosts")
    assert split_box_path("web:") == ("web", "/")
    assert split_box_path("/host/a:b") == (None, "/host/a:b")
    assert split_box_path("./a:b") == (None, "./a:b")
    assert split_box_path("plain") == (None, "plain")


def test_env_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FROM_HOST", "h")
    monkeypatch.delenv("UNSET_HERE", raising=False)
    assert env_pairs(["A=1", "B=x=y", "C=", "FROM_HOST", "UNSET_HERE"]) == [
        ("A", "1"), ("B", "x=y"), ("C", ""), ("FROM_HOST", "h"),
    ]  # fmt: skip


def test_exit_codes_follow_docker() -> None:
    assert describe(ExecError("x", 127, "x: executable file not found"))[1] == 127
    assert describe(ExecError("x", 126, "x: Permission denied"))[1] == 126  # the agent decides 126 vs 127
    assert describe(ExecError("x", 1, "odd"))[1] == 126
    assert describe(NotFoundError("no such box: a")) == ("no such box: a", 125)
    assert describe(ConfigError("bad"))[1] == 125


LEAVE_SCRIPT = """
import atexit, sys, threading, time
from boxlite.cli.entry import leave
atexit.register(lambda: print("atexit ran"))
def late():
    time.sleep(0.2)
    open(sys.argv[2], "w").write("joined")
threading.Thread(target=late).start()
sys.stdout.write("buffered, no newline")
leave(eval(sys.argv[1]))
"""


@pytest.mark.parametrize(
    ("code", "status", "stderr"), [("None", 0, ""), ("3", 3, ""), ("300", 44, ""), ("'boom'", 1, "boom")]
)
def test_cli_exit_skips_teardown_but_keeps_exit_semantics(tmp_path: Path, code: str, status: int, stderr: str) -> None:
    """The console script leaves without the interpreter's teardown, yet as ``sys.exit`` would:
    same status, message for a non-int code, atexit handlers run, threads joined, output flushed."""
    marker = tmp_path / "joined"
    out = subprocess.run(
        [sys.executable, "-c", LEAVE_SCRIPT, code, str(marker)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == status
    assert out.stdout == "buffered, no newlineatexit ran\n"
    assert out.stderr.strip() == stderr
    assert marker.read_text() == "joined"


def test_yaml_output_reads_back_as_the_same_data() -> None:
    """``inspect -f yaml``: strings a box controls (names, env, commands) cannot become other
    YAML types, comments, anchors or documents."""
    import yaml

    from boxlite.cli.yamlout import dump

    hostile = ["yes", "no", "null", "~", "1e3", "0x10", "--- !!python/object", "a: b", "- x", "# c", "&a *a", "'"]
    hostile += ['"', "\n", "\t", "", " lead", "trail ", "\u2028", "\u0085", "\ufeff", "\u00e9", "{x}", "[y]", "%TAG"]
    hostile += ["@", "`", "|", ">"]
    data = [{"env": {s: s for s in hostile}, "command": hostile, "n": [1, 1.5, True, None, {}, []], "yes": {"On": 1}}]
    assert yaml.safe_load(dump(data)) == data


def test_auth_output_keeps_server_strings_and_keys_in_their_place() -> None:
    """What ``auth login``/``whoami`` print of a server's answer cannot drive the terminal, and a
    login over plain HTTP to another machine is called out."""
    from boxlite.cli.auth import _in_clear, _shown

    assert _shown({"display_name": "\x1b]0;pwned\x07\x1b[2Jevil\n"}) == "]0;pwned[2Jevil"
    assert _shown({"sub": "x" * 500}) == "x" * 200 and _shown({"sub": 3}) is None and _shown(None) is None
    assert _in_clear("http://10.0.0.5:8100") and _in_clear("http://boxes.example")
    assert not any(map(_in_clear, ["https://boxes.example", "http://127.0.0.1:8100", "http://[::1]:1",
                                   "http://localhost:8100", "unix:///run/boxlite.sock"]))  # fmt: skip
