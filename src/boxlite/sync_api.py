"""BoxLite's ``boxlite.sync_api``: the synchronous mirror of the API (see ``api/sync.py``)."""

from .api.skillbox import SyncSkillBox
from .api.sync import (
    SyncBox,
    SyncBoxlite,
    SyncCodeBox,
    SyncExecStderr,
    SyncExecStdin,
    SyncExecStdout,
    SyncExecution,
    SyncImageHandle,
    SyncNetworkHandle,
    SyncSimpleBox,
    SyncSnapshotHandle,
    SyncVolumeHandle,
)

__all__ = [
    "SyncBox",
    "SyncBoxlite",
    "SyncCodeBox",
    "SyncExecStderr",
    "SyncExecStdin",
    "SyncExecStdout",
    "SyncExecution",
    "SyncImageHandle",
    "SyncNetworkHandle",
    "SyncSimpleBox",
    "SyncSkillBox",
    "SyncSnapshotHandle",
    "SyncVolumeHandle",
]
