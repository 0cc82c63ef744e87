"""BoxLite's ``boxlite.skillbox``: ``SkillBox``, Claude Code with skills in a box (docs/skillbox.md)."""

from .api.skillbox import SkillBox, SkillBoxError, SyncSkillBox

__all__ = ["SkillBox", "SkillBoxError", "SyncSkillBox"]
