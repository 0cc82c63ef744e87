"""BoxLite's ``boxlite.orchestration``: multi-box groups; every class raises
UnsupportedOptionError until the feature lands (issue 13)."""

from .api.later import BoxGroup, BoxRuntime, ManagedBox

__all__ = ["BoxGroup", "BoxRuntime", "ManagedBox"]
