"""BoxLite's public names exist here and behave as BoxLite's docs describe (docs/compat.md).

The name tables of docs/compat.md are the contract: every row not marked "absent" must be
importable from its module. Names of later features must raise UnsupportedOptionError when used.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import inspect
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import boxlite
from boxlite.errors import UnauthorizedError, UnsupportedOptionError
from rest.serverproc import API_KEY, Server, free_port, serving_tcp
from support.images import python_rootfs

COMPAT = Path(__file__).resolve().parents[2] / "docs" / "compat.md"
ROW = re.compile(r"^\| `(\w+)` \| `(boxlite(?:\.\w+)?)` \| ([^|]+?) \|")


def compat_rows() -> list[tuple[str, str, str]]:
    """(name, module, status) of every row of the "Names" tables."""
    text = COMPAT.read_text()
    names = text[text.index("\n## Names") : text.index("\n## Behaviour")]
    return [m.groups() for line in names.splitlines() if (m := ROW.match(line))]  # type: ignore[misc]


ROWS = compat_rows()
LATER = [(name, module) for name, module, status in ROWS if status.startswith("later")]


def test_the_table_lists_boxlites_names() -> None:
    by_module = {(module, name) for name, module, _ in ROWS}
    assert len(by_module) == len(ROWS), "a name is listed twice for one module"
    assert {m for m, _ in by_module} >= {
        "boxlite", "boxlite.sync_api", "boxlite.exec", "boxlite.simplebox", "boxlite.codebox",
        "boxlite.interactivebox", "boxlite.skillbox", "boxlite.browserbox", "boxlite.computerbox",
        "boxlite.credential", "boxlite.constants", "boxlite.errors", "boxlite.orchestration",
    }  # fmt: skip
    assert len([r for r in ROWS if r[1] == "boxlite"]) >= 63  # BoxLite's root __all__ has 63 names
    assert {s.split(" ")[0] for _, _, s in ROWS} <= {"same", "differs", "later", "absent"}


@pytest.mark.parametrize(("name", "module", "status"), ROWS, ids=[f"{m}.{n}" for n, m, _ in ROWS])
def test_listed_name_is_exported(name: str, module: str, status: str) -> None:
    mod = importlib.import_module(module)
    if status == "absent":
        assert not hasattr(mod, name)
        return
    assert name in getattr(mod, "__all__", dir(mod))  # boxlite.errors has no __all__: all its names are public
    getattr(mod, name)


def test_star_import_gives_every_public_name() -> None:
    namespace: dict[str, object] = {}
    exec("from boxlite import *", namespace)  # the statement users write
    assert set(boxlite.__all__) <= set(namespace)


@pytest.mark.parametrize("make", [lambda: boxlite.BoxGroup()])
def test_later_features_raise_unsupported_option_error(make: object) -> None:
    with pytest.raises(UnsupportedOptionError):
        make()  # type: ignore[operator]


def test_volume_handle_comes_from_a_runtime() -> None:
    """Named volumes work (tests/core/test_named_volumes.py); like BoxLite's, the handle is not
    constructed on its own: ``runtime.volumes`` is."""
    with pytest.raises(boxlite.ConfigError, match=r"runtime\.volumes"):
        asyncio.run(boxlite.VolumeHandle().create())


def test_every_later_row_is_named_in_its_error_or_constructible() -> None:
    """A later name is a class or option type; none is a missing attribute."""
    for name, module in LATER:
        assert inspect.isclass(getattr(importlib.import_module(module), name)), name


def test_public_classes_show_their_fields() -> None:
    def names(cls: type) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    assert {"network", "health_status", "auto_pause", "auto_delete", "auto_resume"} <= names(boxlite.BoxInfo)
    assert {"network_bytes_sent", "network_tcp_errors", "stage_box_spawn_ms", "guest_boot_duration_ms"} <= names(
        boxlite.BoxMetrics
    )
    assert names(boxlite.PublishedPort) == {"guest_port", "host_ip", "host_port", "protocol"}
    assert names(boxlite.HealthCheckOptions) == {"interval", "timeout", "retries", "start_period", "command"}  # + ours
    assert names(boxlite.ContainerCapabilities) == {"add", "drop"}
    assert {"url", "credential", "path_prefix"} == names(boxlite.BoxliteRestOptions)
    info = boxlite.ImageInfo("docker.io/library/alpine:3.19", "sha256:m", "sha256:c", 7, "2026-01-01T00:00:00Z")
    assert (info.id, info.repository, info.tag, info.size_bytes) == ("sha256:c", "docker.io/library/alpine", "3.19", 7)
    assert {"id", "repository", "tag", "size_bytes", "cached_at"} <= set(dir(info))


def test_credentials_never_show_their_secret() -> None:
    cred = boxlite.ApiKeyCredential("blk_live_s3cret")
    token = cred.get_token()
    assert token.token == "blk_live_s3cret" and token.expires_at is None
    opts = boxlite.BoxliteRestOptions("https://example.invalid", credential=cred)
    for shown in (repr(cred), str(cred), repr(token), repr(opts), str(opts), repr(boxlite.Secret("k", "s3cret"))):
        assert "s3cret" not in shown
    assert isinstance(cred, boxlite.Credential)


def test_credentials_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOXLITE_API_KEY", raising=False)
    assert boxlite.ApiKeyCredential.from_env() is None
    monkeypatch.setenv("BOXLITE_API_KEY", "k1")
    monkeypatch.setenv("BOXLITE_REST_URL", "http://127.0.0.1:1")
    opts = boxlite.BoxliteRestOptions.from_env()
    assert opts.url == "http://127.0.0.1:1" and opts.api_key() == "k1"


def test_security_options_change_the_box_config_or_raise() -> None:
    def config(security: boxlite.SecurityOptions) -> object:
        advanced = boxlite.AdvancedBoxOptions(security=security)
        return boxlite.BoxOptions(rootfs_path="/", memory_mib=512, advanced=advanced).to_config()

    limited = config(boxlite.SecurityOptions(max_processes=50, max_memory=256 * 1024 * 1024, network_enabled=False))
    assert (limited.pids_limit, limited.memory_mib, limited.network) == (50, 256, False)  # type: ignore[attr-defined]
    plain = boxlite.BoxOptions(rootfs_path="/", memory_mib=512).to_config()
    for preset in (boxlite.SecurityOptions.development(), boxlite.SecurityOptions.standard()):
        assert config(preset) == plain  # our confinement is always on: nothing to add, nothing removed
    maximum = config(boxlite.SecurityOptions.maximum())
    assert maximum.rlimits == (("fsize", 1 << 30), ("nofile", 1024))  # type: ignore[attr-defined]
    assert maximum.pids_limit == 100  # type: ignore[attr-defined]
    health = boxlite.AdvancedBoxOptions(health_check=boxlite.HealthCheckOptions())  # run: test_health_checks.py
    assert boxlite.BoxOptions(rootfs_path="/", advanced=health).to_config().health_check is not None
    caps = boxlite.ContainerCapabilities(add=["NET_ADMIN"])
    with pytest.raises(UnsupportedOptionError, match="capabilities"):
        boxlite.BoxOptions(advanced=boxlite.AdvancedBoxOptions(capabilities=caps)).validate()
    boxlite.BoxOptions(
        rootfs_path="/", advanced=boxlite.AdvancedBoxOptions(capabilities=boxlite.ContainerCapabilities())
    ).validate()


# --- on a real box ---------------------------------------------------------------------------
def test_sync_api_round_trip(home: Path, engine: str, busybox_rootfs: Path) -> None:
    from boxlite.sync_api import SyncBoxlite, SyncExecStdout, SyncSimpleBox

    with SyncBoxlite(boxlite.Options(home_dir=str(home), engine=engine)) as runtime:
        box = runtime.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), ports=[(free_port(), 8080)]))
        with box:
            execution = box.exec("sh", ["-c", "read line; echo got:$line; echo err >&2"])
            assert isinstance(execution.id, str) and execution.id and execution.id() == execution.id
            stdin = execution.stdin()
            stdin.send_input(b"hello\n")
            stdin.close()
            stdout = execution.stdout()
            assert isinstance(stdout, SyncExecStdout)
            assert list(stdout) == ["got:hello\n"]
            assert "".join(execution.stderr()) == "err\n"
            assert execution.wait().exit_code == 0
            info = runtime.get_info(box.id)
            assert info is not None and info.network is not None and info.network.mode == "enabled"
            [port] = info.network.published_ports or []
            assert port.guest_port == 8080 and info.health_status.state.is_none() and info.auto_delete == 1
            metrics = box.metrics()
            assert metrics.stage_box_spawn_ms is None  # stage timings are not measured here
            if engine == "namespace":  # read from the box's network namespace; the VM's are not measured
                assert isinstance(metrics.network_bytes_received, int) and metrics.network_tcp_connections == 0
            else:  # the guest's own count of its interfaces; its TCP counters are not measured
                assert isinstance(metrics.network_bytes_received, int) and metrics.network_tcp_connections is None
        assert runtime.images.list() == []  # a rootfs box pulls nothing
        with SyncSimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime, name="compat") as simple:
            assert (simple.created, simple.name) == (True, "compat")
            assert simple.exec("echo", "hi").stdout == "hi\n"
            with pytest.raises(boxlite.NetworkError, match="refused"):  # nothing listens there
                simple.tunnel(8080)


def test_sync_api_box_state(home: Path, engine: str, busybox_rootfs: Path, tmp_path: Path) -> None:
    """Snapshots, clone, export and import from synchronous code, as from async code."""
    from boxlite.sync_api import SyncBoxlite

    def read(box: object) -> str:
        return "".join(box.exec("cat", ["/root/f"]).stdout())  # type: ignore[attr-defined]

    with SyncBoxlite(boxlite.Options(home_dir=str(home), engine=engine)) as runtime:
        box = runtime.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=False), name="s")
        box.start()
        box.exec("sh", ["-c", "echo one > /root/f"]).wait()
        box.stop()
        assert box.snapshot.create("s1").name == "s1" and [s.name for s in box.snapshot.list()] == ["s1"]
        box.start()
        box.exec("sh", ["-c", "echo two > /root/f"]).wait()
        clone = box.clone_box(name="c")
        box.stop()
        box.snapshot.restore("s1")
        box.start()
        assert read(box) == "one\n"
        clone.start()
        assert read(clone) == "two\n"
        path = box.export(dest=str(tmp_path), options=boxlite.ExportOptions(include_image=False))
        copy = runtime.import_box(path, name="i")
        copy.start()
        assert read(copy) == "one\n"
        box.snapshot.remove("s1")
        assert box.snapshot.get("s1") is None
        if engine == "namespace":
            with pytest.raises(boxlite.UnsupportedOptionError):
                box.fork()


def test_sync_codebox_runs_python(home: Path, engine: str) -> None:
    from boxlite.sync_api import SyncBoxlite, SyncCodeBox

    rootfs = str(python_rootfs())
    with (
        SyncBoxlite(boxlite.Options(home_dir=str(home), engine=engine)) as runtime,
        SyncCodeBox(rootfs_path=rootfs, runtime=runtime, network="disabled") as code,
    ):
        assert code.run("print(6 * 7)") == "42\n"


async def test_box_names_of_later_features(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=False))
    assert await runtime.volumes.list() == []
    await box.remove()
    assert await runtime.get(box.id) is None


# --- the REST client under BoxLite's names -------------------------------------------------
@pytest.fixture(scope="module")
def tcp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving_tcp(tmp_path_factory.mktemp("compat") / "home") as server:
        yield server


async def test_rest_options_and_api_key_credential(tcp_server: Server, busybox_rootfs: Path) -> None:
    options = boxlite.BoxliteRestOptions(url=tcp_server.url, credential=boxlite.ApiKeyCredential(API_KEY))
    rt = boxlite.Boxlite.rest(options)
    try:
        # advanced options are not sent as such: their effect is (here: no network device but lo)
        security = boxlite.SecurityOptions(network_enabled=False)
        advanced = boxlite.AdvancedBoxOptions(security=security)
        async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=rt, advanced=advanced) as box:  # type: ignore[arg-type]
            result = await box.exec("sh", "-c", "tail -n +3 /proc/net/dev | cut -d: -f1")
            assert result.stdout.split() == ["lo"]
            info = await rt.get_info(box.id)
            assert info is not None and info.network is not None and info.network.mode == "disabled"
            assert info.health_status.state.is_none() and (await box.metrics()).stage_box_spawn_ms is None
        maximum = boxlite.AdvancedBoxOptions(security=boxlite.SecurityOptions.maximum())  # rlimits reach the server
        async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=rt, advanced=maximum) as box:  # type: ignore[arg-type]
            assert (await box.exec("sh", "-c", "ulimit -Hn")).stdout == "1024\n"
    finally:
        await rt.shutdown(timeout=2)
    wrong = boxlite.Boxlite.rest(boxlite.BoxliteRestOptions(tcp_server.url, boxlite.ApiKeyCredential("wrong")))
    with pytest.raises(UnauthorizedError):
        await wrong.list_info()
    with pytest.raises(UnsupportedOptionError):
        boxlite.Boxlite.rest(boxlite.BoxliteRestOptions(tcp_server.url, path_prefix="tenant-1"))


def test_network_counters_parse_proc_and_never_read_the_hosts_namespace() -> None:
    from boxlite.engines.namespace import netstats

    dev = (
        "Inter-|   Receive                                                |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets\n"
        "    lo:  900 9 0 0 0 0 0 0  900 9 0 0 0 0 0 0\n"
        "  eth0: 1500 3 0 0 0 0 0 0  700 2 0 0 0 0 0 0\n"
        "  bad: x y\n"
    )
    assert netstats.parse_dev(dev) == (700, 1500)
    snmp = "Tcp: CurrEstab AttemptFails EstabResets InErrs\nTcp: 2 1 3 4\n"
    assert netstats.parse_snmp_tcp(snmp) == (2, 8)
    assert netstats.parse_snmp_tcp("Tcp: A B\nTcp: 1\n") is None
    assert netstats.read_counters([os.getpid(), 1]) == {}  # processes in the host's namespace: nothing
