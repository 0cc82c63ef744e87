from __future__ import annotations

import pytest

from boxlite.errors import ParseError
from boxlite.images.reference import parse_reference

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "canonical", "explicit"),
    [
        ("alpine", "docker.io/library/alpine:latest", False),
        ("alpine:3.20", "docker.io/library/alpine:3.20", False),
        ("library/alpine", "docker.io/library/alpine:latest", False),
        ("docker.io/alpine", "docker.io/library/alpine:latest", True),
        ("index.docker.io/library/alpine:edge", "docker.io/library/alpine:edge", True),
        ("myorg/tool:v1", "docker.io/myorg/tool:v1", False),
        ("ghcr.io/org/img:tag", "ghcr.io/org/img:tag", True),
        ("ghcr.io/org/sub/img", "ghcr.io/org/sub/img:latest", True),
        ("localhost/img", "localhost/img:latest", True),
        ("localhost:5000/img:1.0", "localhost:5000/img:1.0", True),
        ("127.0.0.1:5000/a/b_c-d.e:x", "127.0.0.1:5000/a/b_c-d.e:x", True),
        (f"img@{D}", f"docker.io/library/img@{D}", False),
        (f"host:1/img:t@{D}", f"host:1/img:t@{D}", True),
    ],
)
def test_parse_valid(text: str, canonical: str, explicit: bool) -> None:
    ref = parse_reference(text)
    assert str(ref) == canonical
    assert ref.explicit_registry is explicit


def test_parts_and_reference() -> None:
    r = parse_reference(f"ghcr.io/org/img:tag@{D}")
    assert (r.registry, r.repository, r.tag, r.digest) == ("ghcr.io", "org/img", "tag", D)
    assert r.reference == D
    assert parse_reference("alpine").reference == "latest"
    assert parse_reference("alpine").short_repository == "alpine"
    assert parse_reference("a/b").short_repository == "a/b"


@pytest.mark.parametrize(
    "text",
    [
        "",
        " alpine",
        "Alpine",
        "alpine:",
        "alpine:-x",
        "alpine@sha256:abc",
        "alpine@md5:" + "a" * 32,
        "/alpine",
        "alpine/",
        "a//b",
        "host:port/img",
        "ghcr.io/Org/img",
        "img:" + "t" * 200,
        "a..b",
        "-a",
        "img:tag:tag",
        "h:5000/",
        "ALL/UPPER",
    ],
)
def test_parse_invalid(text: str) -> None:
    with pytest.raises(ParseError):
        parse_reference(text)
