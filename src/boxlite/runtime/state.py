"""Box records in SQLite (WAL), safe for several processes sharing one home."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import AlreadyExistsError, ConfigError, DatabaseError
from ..sqlite_wal import connect
from .config import BoxConfig, ImageDefaults

log = logging.getLogger("boxlite.state")
SCHEMA = """
CREATE TABLE IF NOT EXISTS boxes (
    id TEXT PRIMARY KEY,
    name TEXT UNIQUE,
    state TEXT NOT NULL,
    engine TEXT NOT NULL,
    created_at REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS health (
    id TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
"""
MAX_HEALTH_BYTES = 256 * 1024
"""A box's health row (status and its few last results, runtime/health.py) is capped when read."""


@dataclass
class BoxRecord:
    """Everything persisted about one box: its typed config and its state."""

    id: str
    name: str | None
    state: str
    engine: str
    created_at: float
    image: str = ""
    image_id: str = ""
    layers: list[str] = field(default_factory=list)
    uid_base: int = 100000
    config: BoxConfig = field(default_factory=BoxConfig)
    image_config: ImageDefaults = field(default_factory=ImageDefaults)
    started_at: float | None = None
    pid: int | None = None
    pid_start: int | None = None
    owner_pid: int | None = None
    owner_start: int | None = None
    boot_ms: float | None = None
    exit_code: int | None = None
    """State "exited": the status of the main process (128+N for signal N)."""
    finished_at: float | None = None
    oom_killed: bool = False
    paused_to_disk: bool = False
    """State "paused": memory saved in the box dir, no process left (else frozen in memory)."""
    paused_at: float | None = None

    @property
    def detach(self) -> bool:
        return self.config.detach

    @detach.setter
    def detach(self, value: bool) -> None:
        self.config = self.config.with_detach(value)

    @property
    def auto_remove(self) -> bool:
        return self.config.auto_remove

    def data_json(self) -> str:
        data = {name: getattr(self, name) for name in _DATA_FIELDS}
        data["config"] = self.config.to_json()
        data["image_config"] = self.image_config.to_json()
        text = json.dumps(data)
        _remember(text, self.config, self.image_config)
        return text

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> BoxRecord:
        """A record from its row; rows written before typed configs (an ``options`` dict and
        top-level ``detach``/``auto_remove``) load too."""
        text = row["data"]
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ConfigError("not a JSON object")
            parsed = _PARSED.get(text)
            if parsed is not None:  # written (or read) by this process as it is: the same typed values
                config, image = parsed
            elif "config" in data:
                config = BoxConfig.from_json(data["config"])
            else:
                legacy = data.get("options") or {}
                config = BoxConfig.from_legacy(legacy, bool(data.get("detach")), bool(data.get("auto_remove", True)))
            if parsed is None:
                image = ImageDefaults.from_json(data.get("image_config") or {})
                _remember(text, config, image)
        except (ConfigError, ValueError) as e:
            raise DatabaseError(f"box {row['id']}: unreadable record in the state database: {e}") from None
        return cls(
            id=row["id"],
            name=row["name"],
            state=row["state"],
            engine=row["engine"],
            created_at=row["created_at"],
            config=config,
            image_config=image,
            **{k: v for k, v in data.items() if k in _DATA_FIELDS},
        )


_DATA_FIELDS = tuple(
    f.name
    for f in fields(BoxRecord)
    if f.name not in {"id", "name", "state", "engine", "created_at", "config", "image_config"}
)
"""The record's fields kept in its row's ``data`` JSON (the others have columns of their own)."""

PARSED_CACHE = 256
_PARSED: dict[str, tuple[BoxConfig, ImageDefaults]] = {}
"""Typed configs by the exact ``data`` text they were written or read as: a box's record is read
several times per start/exec/remove, and validating its config again took ~70 us each time
(configs are frozen: sharing them is safe; any other text is parsed)."""


_PARSED_LOCK = threading.Lock()  # records are also read and written from worker threads


def _remember(text: str, config: BoxConfig, image: ImageDefaults) -> None:
    with _PARSED_LOCK:
        if len(_PARSED) >= PARSED_CACHE:
            _PARSED.pop(next(iter(_PARSED)))  # the oldest
        _PARSED[text] = (config, image)


class StateDB:
    """Thin synchronous store; each call is one short transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self._db = connect(path, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as e:
            raise DatabaseError(f"cannot open state database {path}: {e}") from None

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.IntegrityError:
                raise
            except sqlite3.Error as e:
                raise DatabaseError(f"state database error: {e}") from None

    def insert(self, rec: BoxRecord) -> None:
        try:
            self._run(
                "INSERT INTO boxes (id, name, state, engine, created_at, data) VALUES (?, ?, ?, ?, ?, ?)",
                (rec.id, rec.name, rec.state, rec.engine, rec.created_at, rec.data_json()),
            )
        except sqlite3.IntegrityError:
            raise AlreadyExistsError(f"a box named {rec.name!r} already exists") from None

    def update(self, rec: BoxRecord) -> None:
        self._run(
            "UPDATE boxes SET name = ?, state = ?, data = ? WHERE id = ?",
            (rec.name, rec.state, rec.data_json(), rec.id),
        )

    def delete(self, box_id: str) -> None:
        self._run("DELETE FROM boxes WHERE id = ?", (box_id,))
        self._run("DELETE FROM health WHERE id = ?", (box_id,))

    def put_health(self, box_id: str, data: dict[str, Any], run: str | None = None) -> bool:
        """Write a box's health row (its own table: the box record is never rewritten by a
        check). ``run``: only if the stored row still belongs to that run of the checks (a
        stop or a new start by another process wins); returns whether it was written."""
        text = json.dumps(data)
        if run is None:
            self._run("INSERT OR REPLACE INTO health (id, data) VALUES (?, ?)", (box_id, text))
            return True
        with self._lock:
            try:
                cur = self._db.execute(
                    "UPDATE health SET data = ? WHERE id = ? AND json_extract(data, '$.run') = ?", (text, box_id, run)
                )
            except sqlite3.Error as e:
                raise DatabaseError(f"state database error: {e}") from None
            return cur.rowcount > 0

    def get_health(self, box_id: str) -> dict[str, Any] | None:
        """A box's health row, or None (none stored, or unreadable: the box then shows no status)."""
        rows = self._run("SELECT data FROM health WHERE id = ? AND length(data) <= ?", (box_id, MAX_HEALTH_BYTES))
        if not rows:
            return None
        try:
            data = json.loads(rows[0]["data"])
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def get(self, id_or_name: str) -> BoxRecord | None:
        rows = self._run("SELECT * FROM boxes WHERE id = ? OR name = ?", (id_or_name, id_or_name))
        if not rows and len(id_or_name) >= 4:  # unique id prefix, like docker
            # Case-sensitive first (ids are base62); then any case (ids of older homes were
            # upper-case ULIDs, and people type them in lower case). No LIKE: '%'/'_' are literal.
            n = len(id_or_name)
            rows = self._run("SELECT * FROM boxes WHERE substr(id, 1, ?) = ?", (n, id_or_name))
            if not rows:
                rows = self._run("SELECT * FROM boxes WHERE upper(substr(id, 1, ?)) = ?", (n, id_or_name.upper()))
            if len(rows) > 1:
                return None
        return BoxRecord.from_row(rows[0]) if rows else None

    def all(self) -> list[BoxRecord]:
        """Every readable record (an unreadable one is logged and left out: one corrupted row
        must not stop the runtime, its crash recovery or the listing of the other boxes)."""
        out = []
        for row in self._run("SELECT * FROM boxes ORDER BY created_at"):
            try:
                out.append(BoxRecord.from_row(row))
            except DatabaseError as e:
                log.warning("%s", e)
        return out

    def bump(self, counter: str, amount: int = 1) -> None:
        self._run(
            "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
            (counter, amount, amount),
        )

    def counters(self) -> dict[str, int]:
        return {r["name"]: r["value"] for r in self._run("SELECT name, value FROM counters")}

    def close(self) -> None:
        with self._lock:
            self._db.close()


def now() -> float:
    return time.time()
