"""Where a runtime keeps its files, and its optional ``config.json``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..layout import BoxLayout

DEFAULT_UID_BASE = 100000


@dataclass(frozen=True)
class Home:
    """Layout of a runtime home (``~/.boxlite`` unless ``BOXLITE_HOME`` or ``home_dir`` say otherwise)."""

    root: Path

    @classmethod
    def resolve(cls, home_dir: str | os.PathLike[str] | None) -> Home:
        chosen = home_dir or os.environ.get("BOXLITE_HOME") or Path.home() / ".boxlite"
        root = Path(chosen).expanduser().absolute()
        for sub in ("", "boxes", "images"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o711)
        # Image layers and box files hold setuid files and files owned by box uids: no other host
        # user, nor a host process running as a box's uid, may reach them (also fixes older homes).
        for sub in ("boxes", "images", "cache"):
            (root / sub).mkdir(exist_ok=True)
            os.chmod(root / sub, 0o700)
        return cls(root)

    @property
    def db_path(self) -> Path:
        return self.root / "state.db"

    @property
    def boxes_dir(self) -> Path:
        return self.root / "boxes"

    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    @property
    def cache_dir(self) -> Path:
        """Caches engines may share between the boxes of this home (e.g. the VM engine's disks)."""
        return self.root / "cache"

    def box_dir(self, box_id: str) -> Path:
        return self.boxes_dir / box_id

    def layout(self, box_id: str) -> BoxLayout:
        """Every path inside the box's directory."""
        return BoxLayout(self.box_dir(box_id))

    def config(self) -> dict[str, Any]:
        """The parsed ``config.json`` ({} when absent); a malformed file is a ConfigError."""
        try:
            text = self.config_path.read_text()
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ConfigError(f"{self.config_path}: invalid JSON: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{self.config_path}: expected a JSON object")
        return data

    @property
    def uid_base(self) -> int:
        return int(self.config().get("uid_base", DEFAULT_UID_BASE))
