"""Issue 10, item 2: box root has Docker's default capabilities (chown, adduser, ping work), other
users have none, and ``advanced.capabilities`` / ``--cap-add``/``--cap-drop`` change the set as
BoxLite defines it. On every engine in BOXLITE_TEST_ENGINES."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

import boxlite
from boxlite import AdvancedBoxOptions, ContainerCapabilities
from boxlite.agent import linux
from boxlite.errors import ConfigError, UnsupportedOptionError
from boxlite.runtime import capabilities
from boxlite.runtime.config import BoxConfig
from support.capsprobe import build_probe_rootfs, status_caps
from support.cli import Cli

DOCKER_DEFAULT = 0xA80425FB  # CapBnd of a `docker run` container's root
CAP_CHOWN = 1 << 0


@pytest.fixture(scope="session")
def probe_rootfs(busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_probe_rootfs(busybox_rootfs, tmp_path_factory.mktemp("capsprobe"))


def _caps(add: list[str] | None = None, drop: list[str] | None = None) -> AdvancedBoxOptions:
    return AdvancedBoxOptions(capabilities=ContainerCapabilities(add=add or [], drop=drop or []))


async def _status(box: boxlite.SimpleBox, user: str | None = None) -> dict[str, int]:
    result = await box.exec("cat", "/proc/self/status", user=user)
    assert result.exit_code == 0, result
    assert "NoNewPrivs:\t1" in result.stdout and "Seccomp:\t2" in result.stdout
    return status_caps(result.stdout)


async def test_root_gets_docker_defaults_and_other_users_none(runtime: boxlite.Boxlite, probe_rootfs: Path) -> None:
    async with boxlite.SimpleBox(rootfs_path=str(probe_rootfs), runtime=runtime) as box:
        root = await _status(box)
        assert root == {"CapInh": 0, "CapPrm": DOCKER_DEFAULT, "CapEff": DOCKER_DEFAULT,
                        "CapBnd": DOCKER_DEFAULT, "CapAmb": 0}  # fmt: skip
        user = await _status(box, "user")
        assert user == {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": DOCKER_DEFAULT, "CapAmb": 0}
        tty = await box.box.exec("cat", ["/proc/self/status"], tty=True)  # the fork path of the spawner
        text = str(await tty.stdout().read())
        await tty.wait()
        assert status_caps(text)["CapEff"] == DOCKER_DEFAULT


async def test_chown_and_adduser_style_writes_work_as_root(runtime: boxlite.Boxlite, probe_rootfs: Path) -> None:
    async with boxlite.SimpleBox(rootfs_path=str(probe_rootfs), runtime=runtime) as box:
        script = (
            "echo 'bob:x:1001:1001::/home/bob:/bin/sh' >> /etc/passwd && echo 'bob:x:1001:' >> /etc/group"
            " && mkdir /home/bob && chown bob:bob /home/bob && chmod 700 /home/bob"
            " && touch /home/user/f && chown 1000:1000 /home/user/f && echo ok"
        )
        result = await box.exec("sh", "-c", script)
        assert result.stdout == "ok\n", result
        assert (await box.exec("stat", "-c", "%u:%g", "/home/bob")).stdout == "1001:1001\n"
        made = await box.exec("sh", "-c", "touch /home/bob/mine && id -u", user="bob")
        assert made.stdout == "1001\n", made
        # DAC_OVERRIDE: root reads and writes bob's private directory
        assert (await box.exec("ls", "/home/bob")).stdout == "mine\n"
        # a non-root user has no capability: chown of its own file to another user fails
        denied = await box.exec("chown", "1001", "/home/user/f", user="user")
        assert denied.exit_code != 0 and "Operation not permitted" in denied.stderr, denied


async def test_ping_works_as_root(runtime: boxlite.Boxlite, probe_rootfs: Path, engine: str) -> None:
    """ICMP echo to the box's loopback works for root and users (Docker's ping_group_range);
    a raw socket needs CAP_NET_RAW in the box's network namespace, which only the VM engine's
    box root has (the namespace engine's network namespace is not owned by the box)."""
    async with boxlite.SimpleBox(rootfs_path=str(probe_rootfs), runtime=runtime) as box:
        assert (await box.exec("/probe", "ping")).stdout == "ping=0\n"
        assert (await box.exec("/probe", "ping", user="user")).stdout == "ping=0\n"
        raw = (await box.exec("/probe", "raw")).stdout
        assert raw == ("raw=0\n" if engine == "vm" else f"raw={errno.EPERM}\n")
        assert (await box.exec("/probe", "raw", user="user")).stdout == f"raw={errno.EPERM}\n"


async def test_drop_chown_makes_chown_fail(runtime: boxlite.Boxlite, probe_rootfs: Path) -> None:
    async with boxlite.SimpleBox(rootfs_path=str(probe_rootfs), runtime=runtime, advanced=_caps(drop=["CHOWN"])) as box:
        caps = await _status(box)
        assert caps["CapEff"] == caps["CapBnd"] == DOCKER_DEFAULT & ~CAP_CHOWN
        result = await box.exec("chown", "1000", "/etc/hostname")
        assert result.exit_code != 0 and "Operation not permitted" in result.stderr, result


async def test_drop_all_then_add_one_and_case_insensitive_names(runtime: boxlite.Boxlite, probe_rootfs: Path) -> None:
    async with boxlite.SimpleBox(
        rootfs_path=str(probe_rootfs), runtime=runtime, advanced=_caps(add=["cap_chown"], drop=["all"])
    ) as box:
        assert (await _status(box))["CapEff"] == CAP_CHOWN
        assert (await box.exec("chown", "1000", "/etc/hostname")).exit_code == 0
        # DAC_OVERRIDE is gone: root cannot read user's private files
        made = await box.exec("sh", "-c", "echo s > /home/user/s && chmod 600 /home/user/s && chown 1000 /home/user/s")
        assert made.exit_code == 0, made
        denied = await box.exec("cat", "/home/user/s")
        assert denied.exit_code != 0 and "Permission denied" in denied.stderr, denied


async def test_cli_cap_drop(tmp_path: Path, probe_rootfs: Path, engine: str) -> None:
    cli = Cli(tmp_path / "home", probe_rootfs, engine)
    script = "grep CapEff /proc/self/status; chown 1000 /etc/hostname || echo chown-failed"
    out = cli.ok("run", "--rm", "--cap-drop", "NET_RAW", "--cap-drop", "CAP_CHOWN", "--rootfs", str(probe_rootfs),
                 "sh", "-c", script)  # fmt: skip
    assert f"CapEff:\t{DOCKER_DEFAULT & ~CAP_CHOWN & ~(1 << 13):016x}" in out, out
    assert "chown-failed" in out
    refused = cli("run", "--rm", "--cap-add", "SYS_ADMIN", "--rootfs", str(probe_rootfs), "true")
    assert refused.returncode != 0 and "SYS_ADMIN" in refused.stderr, refused.stderr


# --- the policy itself (no box) --------------------------------------------------------------


def test_names_resolution_and_refusals() -> None:
    assert capabilities.mask(capabilities.DEFAULT) == DOCKER_DEFAULT == linux.DEFAULT_BOX_CAPS
    add, drop = capabilities.from_options(ContainerCapabilities(add=["cap_chown", "CHOWN"], drop=["NET_RAW"]))
    assert (add, drop) == (("CHOWN",), ("NET_RAW",))
    assert capabilities.resolve(("CHOWN",), ("CHOWN",)) == capabilities.DEFAULT  # a named add wins
    assert capabilities.resolve((), ("ALL",)) == frozenset()
    for refused in (["SYS_ADMIN"], ["CAP_SYS_MODULE"], ["ALL"], ["NET_ADMIN"], ["DAC_READ_SEARCH"]):
        with pytest.raises(UnsupportedOptionError):
            capabilities.from_options(ContainerCapabilities(add=refused))
    for bad in (["NOPE"], ["CHOWN\0"], "CHOWN", [1]):
        with pytest.raises(ConfigError):
            capabilities.from_options(ContainerCapabilities(drop=bad))  # type: ignore[arg-type]


def test_options_are_checked_at_create(busybox_rootfs: Path) -> None:
    opts = boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), advanced=_caps(add=["SYS_PTRACE"]))
    with pytest.raises(UnsupportedOptionError, match="SYS_PTRACE"):
        opts.to_config()


def test_config_round_trip_and_old_configs() -> None:
    config = boxlite.BoxOptions(advanced=_caps(add=["SETFCAP"], drop=["ALL"])).to_config()
    assert config.capabilities == (("SETFCAP",), ("ALL",))
    stored = json.loads(json.dumps(config.to_json()))
    assert BoxConfig.from_json(stored) == config
    old = {k: v for k, v in stored.items() if k != "capabilities"}  # a config stored before the field
    assert BoxConfig.from_json(old).capabilities == ((), ())
    with pytest.raises(UnsupportedOptionError):  # a tampered row cannot grant more than the API
        BoxConfig.from_json({**stored, "capabilities": {"add": ["SYS_ADMIN"], "drop": []}})
