"""BoxLite names whose feature lands with a later issue: importable, and any use raises
``UnsupportedOptionError`` naming the feature and the issue, so code fails loudly and early
instead of with AttributeError/ImportError (or, worse, silently)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NoReturn

from ..errors import UnsupportedOptionError

SPECIAL_BOXES = ("SkillBox/BrowserBox/ComputerBox", "issue 13")
NO_BOX_GROUP = "BoxLite names BoxGroup in its package but defines no such class; use boxlite.orchestration.BoxRuntime"
ATTACH = ("Box.attach (re-attaching to a running execution)", "a later issue (not filed yet)")


def unsupported(feature: tuple[str, str]) -> NoReturn:
    raise UnsupportedOptionError(feature[0], f"it comes with {feature[1]}")


class _Later:
    """Constructing one raises: the whole object is a later feature."""

    _feature: tuple[str, str] = ("", "")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        unsupported(self._feature)


@dataclass
class Secret:
    """An outbound HTTP(S) secret substitution rule (docs/network.md, "Secrets")."""

    name: str
    value: str = field(repr=False)
    hosts: list[str] = field(default_factory=list)
    placeholder: str | None = None

    def get_placeholder(self) -> str:
        """What box code writes instead of the value (substituted on the way out)."""
        return self.placeholder or f"<BOXLITE_SECRET:{self.name}>"

    def __repr__(self) -> str:
        return f"Secret(name={self.name!r}, hosts={self.hosts!r}, placeholder={self.get_placeholder()!r}, value='***')"


@dataclass
class BrowserBoxOptions:
    """Options of ``BrowserBox`` (api/browserbox.py): BoxLite's fields; only ``browser="chromium"`` is built offline."""

    browser: str = "chromium"
    memory: int = 2048
    cpu: int = 2
    port: int | None = None
    cdp_port: int | None = None


class BoxGroup:
    """A name BoxLite's package imports but never defines (so its ``import`` fails there):
    importable here so such code gets a clear error, not an ImportError."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise UnsupportedOptionError("BoxGroup", NO_BOX_GROUP)


__all__ = [
    "BoxGroup",
    "BrowserBoxOptions",
    "Secret",
    "unsupported",
]
