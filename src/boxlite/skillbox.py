"""BoxLite's ``boxlite.skillbox``: ``SkillBox`` raises UnsupportedOptionError until issue 13."""

from .api.later import SkillBox

__all__ = ["SkillBox"]
