"""``boxlite snapshot create|ls|restore|rm``, ``boxlite clone``, ``boxlite export``, ``boxlite import``."""

from __future__ import annotations

from pathlib import Path

from support.cli import Cli, assert_one_line_error


def test_snapshot_verbs(cli: Cli) -> None:
    cli.ok("create", "--name", "src", "--rootfs", str(cli.rootfs))
    cli.ok("start", "src")
    cli.ok("exec", "src", "sh", "-c", "echo one > /root/f")
    cli.ok("stop", "src")
    assert cli.ok("snapshot", "create", "src", "s1") == "s1\n"
    cli.ok("start", "src")
    cli.ok("exec", "src", "sh", "-c", "echo two > /root/f")
    assert_one_line_error(cli("snapshot", "restore", "src", "s1"), 125, "stop it")  # running: refused
    assert cli.ok("exec", "src", "cat", "/root/f") == "two\n"
    cli.ok("stop", "src")
    cli.ok("snapshot", "create", "src", "s2")
    assert [s["name"] for s in cli.json("snapshot", "ls", "src", "--format", "json")] == ["s1", "s2"]  # type: ignore[attr-defined, index]
    assert cli.ok("snapshot", "ls", "src").splitlines()[0].split() == ["NAME", "CREATED", "SIZE"]
    cli.ok("snapshot", "restore", "src", "s1")
    cli.ok("start", "src")
    assert cli.ok("exec", "src", "cat", "/root/f") == "one\n"
    cli.ok("snapshot", "rm", "src", "s1", "s2")
    assert cli.ok("snapshot", "ls", "src", "--format", "json").strip() == "[]"
    assert_one_line_error(cli("snapshot", "rm", "src", "s1"), 125, "no snapshot named 's1'")
    cli.ok("rm", "-f", "src")


def test_clone_export_import(cli: Cli, tmp_path: Path) -> None:
    cli.ok("create", "--name", "src", "--rootfs", str(cli.rootfs))
    cli.ok("start", "src")
    cli.ok("exec", "src", "sh", "-c", "echo data > /root/f")
    clone_id = cli.ok("clone", "src", "--name", "twin").strip()  # a running source
    cli.ok("start", "twin")
    assert cli.ok("exec", "twin", "cat", "/root/f") == "data\n"
    assert clone_id in cli.ok("ls", "-a", "-q", "--no-trunc")
    path = cli.ok("export", "src", "-o", str(tmp_path), "--gzip").strip()
    assert path == str(tmp_path / "src.boxlite")
    new_id = cli.ok("import", path, "--name", "back").strip()
    cli.ok("start", "back")
    assert cli.ok("exec", "back", "cat", "/root/f") == "data\n"
    assert new_id != clone_id
    bad = tmp_path / "bad.boxlite"
    bad.write_bytes(Path(path).read_bytes()[:300])
    assert_one_line_error(cli("import", str(bad)), 125)
    assert_one_line_error(cli("export", "src", "-o", str(tmp_path / "no" / "dir.boxlite")), 125, "not a directory")
    small = tmp_path / "small.boxlite"  # the image alone is larger than 100 KiB
    assert_one_line_error(cli("export", "src", "-o", str(small), "--max-size", "100k"), 125, "larger than 102400 bytes")
    assert not small.exists()
    assert_one_line_error(cli("export", "src", "-o", str(small), "--max-size", "0.1b"), 125, "more than 0")
    cli.ok("rm", "-f", "src", "twin", "back")
