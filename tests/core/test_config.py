"""The typed box config: one conversion from BoxOptions, stored in state.db and read back as
such (older rows too), validated with ConfigError; one layout for a box's files."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

import boxlite
from boxlite.errors import DatabaseError
from boxlite.layout import BoxLayout
from boxlite.runtime.config import CONFIG_VERSION, BoxConfig, ImageDefaults, PortMapping, VolumeMount
from boxlite.runtime.lifecycle import BoxRuntime
from boxlite.runtime.state import BoxRecord, StateDB


def full_options(tmp_path: Path) -> boxlite.BoxOptions:
    return boxlite.BoxOptions(
        image="docker.io/library/alpine:3",
        cpus=1.5,
        memory_mib=256,
        pids_limit=64,
        working_dir="/srv",
        env=[("A", "1"), ("B", "x=y")],
        volumes=[f"{tmp_path}:/data:ro", (str(tmp_path), "/rw")],
        ports=["127.0.0.1:8080:80/udp", (9000, 90)],
        entrypoint=["/bin/sh", "-c"],
        cmd=["echo hi"],
        user="1000",
        hostname="web",
        ready_timeout=30,
        detach=True,
        auto_remove=False,
        engine="namespace",
    )


def test_options_convert_once_into_typed_fields(tmp_path: Path) -> None:
    config = full_options(tmp_path).to_config()
    assert config.memory_mib == 256 and config.cpus == 1.5 and config.pids_limit == 64
    assert config.env == (("A", "1"), ("B", "x=y"))
    assert config.volumes == (VolumeMount(str(tmp_path), "/data", True), VolumeMount(str(tmp_path), "/rw", False))
    assert config.ports == (PortMapping("127.0.0.1", 8080, 80, "udp"), PortMapping("127.0.0.1", 9000, 90, "tcp"))
    assert config.network  # published ports imply outbound network
    assert config.entrypoint == ("/bin/sh", "-c") and config.cmd == ("echo hi",)
    assert config.detach and not config.auto_remove
    assert boxlite.BoxOptions().to_config().memory_mib == 512  # no box without a memory limit


def test_config_json_round_trip(tmp_path: Path) -> None:
    config = full_options(tmp_path).to_config()
    stored = json.loads(json.dumps(config.to_json()))  # what state.db holds
    assert stored["version"] == CONFIG_VERSION
    assert BoxConfig.from_json(stored) == config
    assert BoxConfig.from_json(BoxConfig().to_json()) == BoxConfig()


@pytest.mark.parametrize(
    "change",
    [
        {"version": CONFIG_VERSION + 1},
        {"version": None},
        {"memory_mib": 1},
        {"memory_mib": "lots"},
        {"cpus": float("nan")},
        {"ports": [["127.0.0.1", 0, 80, "tcp"]]},
        {"ports": [["127.0.0.1", 80, 80, "sctp"]]},
        {"ports": [["127.0.0.1", 80]]},
        {"ports": [["127.0.0.1", 80, 80, "tcp"]], "network": False},
        {"volumes": [["relative", "/x", False]]},
        {"env": [["A=B", "c"]]},
        {"cmd": "sh -c true"},
        {"engine": "bogus"},
        {"working_dir": "relative"},
    ],
)
def test_invalid_stored_config_is_a_config_error(change: dict[str, object]) -> None:
    data = {**BoxConfig().to_json(), **change}
    with pytest.raises(boxlite.ConfigError):
        BoxConfig.from_json(data)


@pytest.mark.parametrize(
    "bad",
    [{"memory_mib": "lots"}, {"cpus": "many"}, {"pids_limit": [1]}, {"ready_timeout": float("inf")}],
)
def test_non_numeric_options_are_config_errors(bad: dict[str, object]) -> None:
    with pytest.raises(boxlite.ConfigError):
        boxlite.BoxOptions(**bad).to_config()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ({"env": 123}, "env"),
        ({"env": "A=1"}, "env"),
        ({"rootfs_path": 5}, "rootfs_path"),
        ({"rootfs_path": "/tmp/a\0b"}, "NUL"),
        ({"hostname": "h" * 65}, "hostname"),  # sethostname's limit: was an EngineError at start
        ({"hostname": ""}, "hostname"),
    ],
)
def test_options_of_the_wrong_shape_are_config_errors(bad: dict[str, object], says: str) -> None:
    """Not the TypeError of the first code that meets them, nor a failure when the box starts."""
    with pytest.raises(boxlite.ConfigError, match=says):
        boxlite.BoxOptions(**bad).to_config()  # type: ignore[arg-type]
    assert boxlite.BoxOptions(rootfs_path=Path("/tmp"), hostname="h" * 64).to_config().rootfs_path == "/tmp"


def test_config_size_is_capped() -> None:
    with pytest.raises(boxlite.ConfigError, match="more than"):
        BoxConfig(env=tuple((f"V{i}", "x" * 1000) for i in range(700)))


def _insert_raw(db_path: Path, box_id: str, name: str, data: object) -> None:
    with sqlite3.connect(db_path) as db:
        db.execute(
            "INSERT INTO boxes (id, name, state, engine, created_at, data)"
            " VALUES (?, ?, 'stopped', 'namespace', 1.0, ?)",
            (box_id, name, json.dumps(data)),
        )


LEGACY_ROW = {  # a record as written before configs were typed and versioned
    "image": "/srv/rootfs",
    "image_id": "abc",
    "layers": ["/srv/rootfs"],
    "uid_base": 100000,
    "options": {
        "cpus": 2,
        "memory_mib": 300,
        "disk_size_gb": None,
        "pids_limit": None,
        "working_dir": "/work",
        "env": {"MODE": "old"},
        "user": None,
        "entrypoint": None,
        "cmd": ["sleep", "9"],
        "hostname": None,
        "ready_timeout": None,
        "volumes": [["/srv", "/mnt", True]],
        "network": True,
        "ports": [["127.0.0.1", 8080, 80, "tcp"]],
    },
    "image_config": {
        "env": ["PATH=/bin", "MODE=image"],
        "working_dir": None,
        "user": None,
        "entrypoint": None,
        "cmd": ["sh"],
    },
    "detach": True,
    "auto_remove": False,
    "exit_code": 3,
}


def test_rows_of_older_homes_keep_loading(home: Path) -> None:
    db = StateDB(home / "state.db")
    _insert_raw(home / "state.db", "01OLDBOX", "old", LEGACY_ROW)
    rec = db.get("old")
    assert rec is not None
    assert rec.config.memory_mib == 300 and rec.config.cpus == 2.0
    assert rec.config.env == (("MODE", "old"),) and rec.config.cmd == ("sleep", "9")
    assert rec.config.volumes == (VolumeMount("/srv", "/mnt", True),)
    assert rec.config.ports == (PortMapping("127.0.0.1", 8080, 80, "tcp"),) and rec.config.network
    assert rec.detach and not rec.auto_remove and rec.exit_code == 3
    assert rec.image_config == ImageDefaults(env=("PATH=/bin", "MODE=image"), cmd=("sh",))
    body = BoxRuntime.exec_body(rec, ["env"])
    assert body["env"] == {"PATH": "/bin", "MODE": "old"} and body["cwd"] == "/work"
    db.update(rec)  # rewritten in the new format, read back the same
    again = db.get("old")
    assert again is not None and again.config == rec.config and again.image_config == rec.image_config
    raw = json.loads(sqlite3.connect(home / "state.db").execute("SELECT data FROM boxes").fetchone()[0])
    assert raw["config"]["version"] == CONFIG_VERSION and "options" not in raw
    db.close()


def test_a_corrupted_row_is_a_typed_error_and_spares_the_others(home: Path) -> None:
    db = StateDB(home / "state.db")
    _insert_raw(home / "state.db", "01GOODBOX", "good", LEGACY_ROW)
    _insert_raw(home / "state.db", "01BADBOX", "bad", {**LEGACY_ROW, "options": {"memory_mib": -5}})
    _insert_raw(home / "state.db", "01WORSE", "worse", ["not", "an", "object"])
    with pytest.raises(DatabaseError):
        db.get("bad")
    with pytest.raises(DatabaseError):
        db.get("worse")
    assert [r.name for r in db.all()] == ["good"]
    db.close()


def test_detach_of_a_record_replaces_its_frozen_config() -> None:
    rec = BoxRecord(id="X", name=None, state="stopped", engine="namespace", created_at=0.0)
    before = rec.config
    rec.detach = True
    assert rec.detach and rec.config.detach and not before.detach


@pytest.mark.namespace_only
async def test_created_box_config_survives_a_new_runtime(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, home: Path, tmp_path: Path
) -> None:
    opts = boxlite.BoxOptions(
        rootfs_path=str(busybox_rootfs), memory_mib=200, env={"K": "v"}, volumes=[(str(tmp_path), "/d")],
        cmd=["true"], auto_remove=False,
    )  # fmt: skip
    box = await runtime.create(opts, name="kept")
    assert box.memory_mib == 200
    other = boxlite.Boxlite(boxlite.Options(home_dir=str(home), engine="namespace"))
    try:
        again = await other.get("kept")
        assert again is not None and again.memory_mib == 200 and again.info().memory_mib == 200
        rec = other._core.record("kept")
        assert rec.config == opts.to_config()
        spec = other._core.spec(rec)
        assert spec.memory_mib == 200 and spec.volumes == [(str(tmp_path), "/d", False)]
        assert spec.cache_dir == home / "cache"
        assert spec.layout == other.home.layout(box.id) == BoxLayout(home / "boxes" / box.id)
    finally:
        await other.shutdown(timeout=2)


def test_layout_owns_every_box_path(tmp_path: Path) -> None:
    layout = BoxLayout(tmp_path / "boxes" / "B1")
    paths = [getattr(layout, name) for name in dir(BoxLayout) if isinstance(getattr(BoxLayout, name), property)]
    assert len(paths) == len(set(paths)) >= 20  # distinct files
    assert all(p.is_relative_to(layout.root) for p in paths)  # nothing outside the box dir
    assert layout.agent_socket.parent == layout.run_dir == layout.main_log.parent
    (layout.run_dir).mkdir(parents=True)
    for p in (layout.main_log, layout.shim_log, layout.boot_log):
        p.write_text("x")
    assert layout.system_logs() == [layout.boot_log, layout.shim_log]  # never the main log
