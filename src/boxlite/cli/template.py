"""``inspect --format '{{.State.Status}}'``: the field lookups of Go templates (BoxLite's and
docker's ``-f``), on the JSON that ``inspect`` prints. Only ``{{.Path.To.Field}}`` and
``{{json .Path}}``; ``.State.ExitCode`` finds ``state.exit_code`` (CamelCase or any case)."""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import fail

ACTION = re.compile(r"\{\{(.*?)\}\}", re.S)
FIELD = re.compile(r"\s*(json\s+)?\.([A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*)?\s*")


def render(template: str, data: dict[str, Any]) -> str:
    """``template`` with each ``{{...}}`` replaced by the value it names in ``data``."""

    def action(match: re.Match[str]) -> str:
        field = FIELD.fullmatch(match[1])
        if field is None:
            supported = "only {{.Field}} and {{json .Field}}"
            raise fail(f"unsupported template action {match[0]!r}: {supported}")
        value = _lookup(data, field[2] or "")
        if field[1] or isinstance(value, (dict, list)):
            return json.dumps(value, default=str)
        if value is None:
            return "<nil>"
        if isinstance(value, bool):
            return str(value).lower()
        return str(value)

    return ACTION.sub(action, template)


def _lookup(data: Any, path: str) -> Any:
    value = data
    for part in filter(None, path.split(".")):
        if not isinstance(value, dict):
            raise fail(f"template: .{path}: {part} is not a field of a {type(value).__name__}")
        key = _key(value, part)
        if key is None:
            raise fail(f"template: .{path}: no field {part!r} (fields: {', '.join(sorted(value))})")
        value = value[key]
    return value


def _key(mapping: dict[str, Any], name: str) -> str | None:
    """``name`` as given, as snake_case (``ExitCode`` -> ``exit_code``), or in any case."""
    snake = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()
    for candidate in (name, snake):
        if candidate in mapping:
            return candidate
    folded = {k.lower().replace("_", ""): k for k in mapping}
    return folded.get(name.lower().replace("_", ""))
