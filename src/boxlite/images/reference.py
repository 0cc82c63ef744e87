"""Image reference parsing and normalisation (docker.io rules)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ParseError

DOCKER_HUB = "docker.io"
DEFAULT_TAG = "latest"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_DOMAIN_RE = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$"
)
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_ALIASES = {"index.docker.io": DOCKER_HUB, "registry-1.docker.io": DOCKER_HUB}


@dataclass(frozen=True)
class Reference:
    """A parsed, normalised image reference.

    ``explicit_registry`` is False when the user wrote no registry (``alpine``), in which case
    search registries may be tried before Docker Hub.
    """

    registry: str
    repository: str
    tag: str | None
    digest: str | None
    explicit_registry: bool = True

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest if pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s

    def with_registry(self, registry: str, repository: str | None = None) -> Reference:
        """The same tag/digest on another registry (used for search registries)."""
        return Reference(registry, repository or self.repository, self.tag, self.digest, True)

    @property
    def short_repository(self) -> str:
        """Repository as the user wrote it (``alpine`` rather than ``library/alpine``)."""
        if self.registry == DOCKER_HUB and self.repository.startswith("library/"):
            rest = self.repository[len("library/") :]
            if "/" not in rest:
                return rest
        return self.repository


def parse_reference(text: str) -> Reference:
    """Parse ``[registry/]repo[:tag][@sha256:hex]``; raise ParseError if malformed."""
    if not isinstance(text, str) or not text or text != text.strip() or len(text) > 4096:
        raise ParseError(f"invalid image reference {text!r}")
    rest = text
    digest: str | None = None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST_RE.match(digest):
            raise ParseError(f"invalid digest in image reference {text!r}")
    tag: str | None = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise ParseError(f"invalid tag in image reference {text!r}")
    if not rest:
        raise ParseError(f"invalid image reference {text!r}")
    first, sep, remainder = rest.partition("/")
    explicit = bool(sep) and ("." in first or ":" in first or first == "localhost" or first != first.lower())
    if explicit:
        if not _DOMAIN_RE.match(first):
            raise ParseError(f"invalid registry host in image reference {text!r}")
        registry, path = _ALIASES.get(first.lower(), first), remainder
    else:
        registry, path = DOCKER_HUB, rest
    if not _PATH_RE.match(path) or len(path) > 255:
        raise ParseError(f"invalid repository name in image reference {text!r}")
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(registry, path, tag, digest, explicit)


def is_digest(text: str) -> bool:
    """True for a full ``sha256:<64 hex>`` digest."""
    return bool(_DIGEST_RE.match(text))
