"""copy_in / copy_out: docker-cp placement rules, intact content, and no way out of the box
(or into the host) through paths and symlinks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import boxlite
from support.hosttree import tree

SECRET = "host-secret-e41b"


async def sh(box: boxlite.SimpleBox, script: str) -> str:
    result = await box.exec("sh", "-c", script)
    assert result.exit_code == 0, result
    return result.stdout


@pytest.fixture
def host_tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "pkg" / "sub").mkdir(parents=True)
    (src / "pkg" / "a.txt").write_text("alpha\n")
    (src / "pkg" / "sub" / "b.txt").write_text("beta\n")
    (src / "single.txt").write_text("single\n")
    return src


async def test_copy_in_file_into_dir_or_as_new_name(box: boxlite.SimpleBox, host_tree: Path) -> None:
    await box.copy_in(str(host_tree / "single.txt"), "/tmp")
    await box.copy_in(str(host_tree / "single.txt"), "/tmp/renamed.txt")
    await box.copy_in(str(host_tree / "single.txt"), "/root/")
    assert await sh(box, "cat /tmp/single.txt /tmp/renamed.txt /root/single.txt") == "single\n" * 3
    await box.copy_in(str(host_tree / "single.txt"), "/new/deep/file.txt")  # parents are created
    assert await sh(box, "cat /new/deep/file.txt") == "single\n"


async def test_copy_in_directory(box: boxlite.SimpleBox, host_tree: Path) -> None:
    await box.copy_in(str(host_tree / "pkg"), "/var")  # existing dir: lands inside it
    assert await sh(box, "cat /var/pkg/a.txt /var/pkg/sub/b.txt") == "alpha\nbeta\n"
    await box.copy_in(str(host_tree / "pkg"), "/srv/app")  # new name: the dir is renamed
    assert await sh(box, "cat /srv/app/a.txt /srv/app/sub/b.txt") == "alpha\nbeta\n"
    await sh(box, "mkdir -p /merge && echo keep > /merge/old.txt")
    await box.copy_in(str(host_tree / "pkg"), "/merge", include_parent=False)  # contents only
    assert sorted((await sh(box, "cd /merge && find . | sort")).split()) == sorted(
        [".", "./a.txt", "./old.txt", "./sub", "./sub/b.txt"]
    )


async def test_copy_out_file_and_directory(box: boxlite.SimpleBox, tmp_path: Path) -> None:
    await sh(box, "mkdir -p /data/sub && echo one > /data/one && echo two > /data/sub/two && echo f > /f.txt")
    out = tmp_path / "out"
    out.mkdir()
    await box.copy_out("/f.txt", str(out))  # existing dir: inside it
    await box.copy_out("/f.txt", str(out / "g.txt"))  # new name
    await box.copy_out("/data", str(out))
    await box.copy_out("/data", str(tmp_path / "data2"))
    flat = tmp_path / "flat"
    flat.mkdir()
    await box.copy_out("/data", str(flat), include_parent=False)
    assert tree(out) == {
        "f.txt": "f\n", "g.txt": "f\n", "data": "<dir>", "data/one": "one\n", "data/sub": "<dir>",
        "data/sub/two": "two\n",
    }  # fmt: skip
    assert tree(tmp_path / "data2") == {"one": "one\n", "sub": "<dir>", "sub/two": "two\n"}
    assert tree(flat) == {"one": "one\n", "sub": "<dir>", "sub/two": "two\n"}


async def test_binary_content_round_trips(box: boxlite.SimpleBox, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 64 + os.urandom(3 << 20) + b"\0\r\n\x1b[0m"
    src = tmp_path / "blob.bin"
    src.write_bytes(payload)
    os.chmod(src, 0o751)
    await box.copy_in(str(src), "/tmp/blob.bin")
    digest = (await sh(box, "sha256sum /tmp/blob.bin; stat -c %a /tmp/blob.bin")).split()
    import hashlib

    assert digest[0] == hashlib.sha256(payload).hexdigest()
    assert digest[2] == "751"
    back = tmp_path / "back.bin"
    await box.copy_out("/tmp/blob.bin", str(back))
    assert back.read_bytes() == payload
    assert back.stat().st_mode & 0o777 == 0o751


async def test_missing_sources_raise_not_found(box: boxlite.SimpleBox, tmp_path: Path) -> None:
    with pytest.raises(boxlite.NotFoundError):
        await box.copy_out("/no/such/file", str(tmp_path / "x"))
    with pytest.raises(boxlite.NotFoundError):
        await box.copy_in(str(tmp_path / "no-such-host-file"), "/tmp")
    assert not (tmp_path / "x").exists()
    assert (await box.exec("true")).exit_code == 0


async def test_copy_out_of_symlink_never_yields_host_file(box: boxlite.SimpleBox, tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    marker.write_text(SECRET)
    await sh(box, f"echo box-shadow > /etc/shadow; ln -s /etc/shadow /lnk; ln -s {marker} /to-marker")
    for src, expected in (("/lnk", "box-shadow\n"), ("/to-marker", None)):
        dest = tmp_path / ("got" + src.replace("/", "-"))
        try:
            await box.copy_out(src, str(dest))
        except boxlite.BoxliteError:
            assert not dest.exists() or not dest.is_symlink()
            continue
        if dest.exists():
            content = dest.read_text()
            assert SECRET not in content and "root:" not in content, src
            if expected is not None:
                assert content == expected
        # A dangling link is acceptable only if it cannot reach the host's file.
        assert not (dest.is_symlink() and os.path.realpath(dest) in (str(marker), "/etc/shadow")), src


async def test_dot_dot_in_box_paths_stays_in_the_box(box: boxlite.SimpleBox, tmp_path: Path) -> None:
    got = tmp_path / "hostname"
    await box.copy_out("/../../../../../etc/hostname", str(got))
    assert got.read_text() == "box\n"
    got2 = tmp_path / "passwd"
    await box.copy_out("/tmp/../../../etc/passwd", str(got2))
    assert got2.read_text().startswith("root:x:0:0:root:/root:/bin/sh\n")
    src = tmp_path / "payload.txt"
    src.write_text("payload\n")
    host_target = Path("/tmp") / f"boxlite-escape-{os.getpid()}.txt"
    await box.copy_in(str(src), f"/../../../..{host_target}")
    assert not host_target.exists()
    assert await sh(box, f"cat {host_target}") == "payload\n"
    await sh(box, "ln -s ../../../../.. /tmp/up")
    await box.copy_in(str(src), "/tmp/up/landed.txt")
    assert await sh(box, "cat /landed.txt") == "payload\n"


async def test_copy_in_through_box_symlinks_stays_in_the_box(box: boxlite.SimpleBox, tmp_path: Path) -> None:
    src = tmp_path / "p.txt"
    src.write_text("p\n")
    victim = tmp_path / "victim"
    victim.mkdir()
    await sh(box, f"ln -s {victim} /hostdir; ln -s /proc/1/root /tmp/agentroot")
    try:
        await box.copy_in(str(src), "/hostdir/")
    except boxlite.BoxliteError:
        pass
    assert list(victim.iterdir()) == []
    with pytest.raises(boxlite.BoxliteError):
        await box.copy_in(str(src), "/tmp/agentroot/usr/p.txt")
    # And copy_out cannot read through /proc/1/root either.
    with pytest.raises(boxlite.BoxliteError):
        await box.copy_out("/tmp/agentroot/usr/bin", str(tmp_path / "agentbin"))
    assert not (tmp_path / "agentbin").exists() or not any((tmp_path / "agentbin").iterdir())


async def test_copy_out_dir_with_links_cannot_write_outside_dest(box: boxlite.SimpleBox, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    # A directory with absolute and escaping relative links, next to regular files.
    await sh(
        box,
        f"mkdir -p /d/sub && echo f > /d/sub/f && ln -s {victim} /d/esc && ln -s ../../../.. /d/up"
        " && ln -s / /d/root && ln -s sub/f /d/ok",
    )
    try:
        await box.copy_out("/d", str(dest))
    except boxlite.BoxliteError:
        pass
    assert list(victim.iterdir()) == []
    if (dest / "d" / "ok").exists():
        assert (dest / "d" / "ok").read_text() == "f\n"
    # The box now turns the links into directories holding files, and is copied out again
    # over the first copy: nothing may land in the directories the old links point to.
    await sh(box, "rm /d/esc /d/up /d/root && mkdir -p /d/esc /d/up /d/root && "
                  "for x in esc up root; do echo pwned > /d/$x/pwned.txt; done")  # fmt: skip
    try:
        await box.copy_out("/d", str(dest))
    except boxlite.BoxliteError:
        pass
    assert list(victim.iterdir()) == []
    assert not (tmp_path.parents[2] / "pwned.txt").exists()
    assert not Path("/pwned.txt").exists()
    for p in dest.rglob("pwned.txt"):
        assert os.path.realpath(p).startswith(str(dest) + "/")


async def test_copies_reach_every_box_file_like_docker_cp(box: boxlite.SimpleBox, tmp_path: Path) -> None:
    """Box root copies even files of other box users (private ones, into their directories)."""
    await box.exec("sh", "-c", "mkdir -m 700 /home/user/priv && echo private > /home/user/priv/secret"
                   " && chmod 600 /home/user/priv/secret", user="user")  # fmt: skip
    await box.copy_out("/home/user/priv", str(tmp_path / "priv"))
    assert (tmp_path / "priv" / "secret").read_text() == "private\n"
    src = tmp_path / "in.txt"
    src.write_text("for user\n")
    await box.copy_in(str(src), "/home/user/priv/")
    assert (await box.exec("cat", "/home/user/priv/in.txt", user="user")).stdout == "for user\n"
    # Commands of box root hold Docker's default capabilities (DAC_OVERRIDE): it reads the file
    # too; another user holds none and cannot.
    assert (await box.exec("cat", "/home/user/priv/secret")).stdout == "private\n"
    assert (await box.exec("cat", "/home/user/priv/secret", user="nobody")).exit_code != 0


async def test_copy_failures_are_clear_errors(box: boxlite.SimpleBox, tmp_path: Path) -> None:
    await box.exec("sh", "-c", "mkdir -p /ro && echo x > /ro/f")
    src = tmp_path / "f"
    src.write_text("y\n")
    with pytest.raises(boxlite.BoxliteError, match="proc"):
        await box.copy_in(str(src), "/proc/sys/kernel/")
    with pytest.raises(boxlite.BoxliteError, match=r"Permission denied|not permitted|denied"):
        await box.copy_out("/proc/1/environ", str(tmp_path / "environ"))
    assert not (tmp_path / "environ").exists() or (tmp_path / "environ").stat().st_size == 0
    assert (await box.exec("true")).exit_code == 0


async def test_copy_out_follow_symlinks_copies_link_targets(box: boxlite.SimpleBox, tmp_path: Path) -> None:
    await box.exec("sh", "-c", "mkdir -p /d && echo data > /target && ln -s /target /d/link")
    await box.copy_out("/d", str(tmp_path / "kept"))
    assert (tmp_path / "kept" / "link").is_symlink()
    await box.copy_out("/d", str(tmp_path / "followed"), follow_symlinks=True)
    assert not (tmp_path / "followed" / "link").is_symlink()
    assert (tmp_path / "followed" / "link").read_text() == "data\n"
