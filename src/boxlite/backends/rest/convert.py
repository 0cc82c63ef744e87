"""JSON <-> API dataclasses for the REST backend (the server's schemas, see server/schemas.py)."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Any

from ...api.advanced import advanced_overrides
from ...api.options import BoxOptions, NetworkSpec
from ...api.results import BoxInfo, BoxStateInfo
from ...errors import InternalError
from ...runtime.volumes import VolumeInfo, is_volume_id


def box_info(data: dict[str, Any]) -> BoxInfo:
    return BoxInfo(**{**data, "state": BoxStateInfo(**data["state"])})


def volume_info(data: Any) -> VolumeInfo:
    """A server's ``VolumeInfoModel``, checked (the id must have the id form: it becomes a URL path)."""
    if not isinstance(data, dict):
        raise InternalError(f"the server answered {type(data).__name__}, not a volume")
    volume_id, created, size = data.get("id"), data.get("created_at"), data.get("size_bytes")
    valid_size = size is None or (isinstance(size, int) and not isinstance(size, bool) and size >= 0)
    if not is_volume_id(volume_id) or not isinstance(created, str) or not valid_size:
        raise InternalError(f"the server answered an invalid volume: {str(data)[:200]}")
    return VolumeInfo(str(volume_id), created, size)


def options_json(options: BoxOptions) -> dict[str, Any]:
    """``BoxOptions`` as the server's ``BoxOptionsModel`` (``advanced`` is not sent)."""
    out: dict[str, Any] = {f.name: getattr(options, f.name) for f in fields(options) if f.name != "advanced"}
    out["env"] = options.env_dict()
    if isinstance(options.network, NetworkSpec):
        out["network"] = asdict(options.network)
    # ``advanced`` itself is not sent: what it changes is (or it raises UnsupportedOptionError here)
    for key, value in advanced_overrides(options.advanced, options.memory_mib, options.pids_limit).items():
        out[key] = {"mode": "disabled", "allow_net": []} if key == "network" else value
    if out.get("rlimits"):  # (name, value) pairs: the server's ``rlimits`` object
        out["rlimits"] = dict(out["rlimits"])
    if out.get("capabilities"):  # (add, drop) canonical names: the server's ``capabilities`` object
        out["capabilities"] = {"add": list(out["capabilities"][0]), "drop": list(out["capabilities"][1])}
    if out.get("health_check") is not None:  # the runtime's HealthCheckConfig, as the server reads it
        out["health_check"] = out["health_check"].to_json()
    return json.loads(json.dumps(out, default=str))  # type: ignore[no-any-return]
