"""Small pure units: challenges, platform selection, manifests, image config."""

from __future__ import annotations

import pytest

from boxlite.errors import ImageError, ParseError
from boxlite.images import ImageConfig
from boxlite.images.auth import parse_challenge
from boxlite.images.manifest import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    media_type_of,
    parse_manifest,
    select_platform,
)

D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


def test_parse_challenge() -> None:
    ch = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/alpine:pull"'
    )
    assert ch is not None and ch.scheme == "bearer"
    assert ch.params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/alpine:pull",
    }
    basic = parse_challenge('Basic realm="Registry Realm"')
    assert basic is not None and basic.scheme == "basic" and basic.params["realm"] == "Registry Realm"
    assert parse_challenge("") is None


def _index(*plats: tuple[str, str, str | None]) -> dict[str, object]:
    return {
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": d,
                "size": 1,
                "platform": {"os": o, "architecture": a, **({"variant": v} if v else {})},
            }
            for d, (o, a, v) in zip((D1, D2, D3), plats, strict=False)
        ],
    }


def test_select_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOXLITE_IMAGE_PLATFORM", "linux/arm64/v8")
    assert select_platform(_index(("linux", "amd64", None), ("linux", "arm64", None))).digest == D2
    assert select_platform(_index(("linux", "arm64", None), ("linux", "arm64", "v8"))).digest == D2
    monkeypatch.setenv("BOXLITE_IMAGE_PLATFORM", "linux/arm/v7")
    with pytest.raises(ImageError, match=r"linux/arm/v7.*available: linux/arm/v6, linux/arm64"):
        select_platform(_index(("linux", "arm", "v6"), ("linux", "arm64", None)))
    monkeypatch.setenv("BOXLITE_IMAGE_PLATFORM", "linux/amd64")
    assert select_platform(_index(("windows", "amd64", None), ("linux", "amd64", None))).digest == D2


def test_media_types_and_manifest_parsing() -> None:
    assert media_type_of({"manifests": []}) == OCI_INDEX
    assert media_type_of({}, DOCKER_LIST + "; charset=utf-8") == DOCKER_LIST
    with pytest.raises(ImageError, match="schema 1"):
        media_type_of({"schemaVersion": 1})
    layer = {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": D2, "size": 5}
    m = parse_manifest({"mediaType": DOCKER_MANIFEST, "config": {"digest": D1, "size": 2}, "layers": [layer]})
    assert m.config.digest == D1 and m.layers[0].size == 5
    foreign = {**layer, "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"}
    with pytest.raises(ImageError, match="foreign"):
        parse_manifest({"mediaType": DOCKER_MANIFEST, "config": {"digest": D1, "size": 2}, "layers": [foreign]})
    with pytest.raises(ParseError):
        parse_manifest({"mediaType": OCI_MANIFEST, "config": {"digest": "md5:x", "size": 2}, "layers": []})


def test_image_config_from_json() -> None:
    cfg = ImageConfig.from_json(
        {
            "config": {
                "Entrypoint": ["/docker-entrypoint.sh"],
                "Cmd": ["nginx", "-g", "daemon off;"],
                "Env": ["PATH=/usr/bin", "A=b"],
                "WorkingDir": "/srv",
                "User": "101:101",
                "ExposedPorts": {"80/tcp": {}, "443/tcp": {}},
                "Labels": {"maintainer": "x"},
            }
        }
    )
    assert cfg == ImageConfig(
        ["/docker-entrypoint.sh"],
        ["nginx", "-g", "daemon off;"],
        ["PATH=/usr/bin", "A=b"],
        "/srv",
        "101:101",
        ["443/tcp", "80/tcp"],
        {"maintainer": "x"},
    )
    empty = ImageConfig.from_json({"config": None})
    assert empty == ImageConfig() and empty.env == [] and empty.cmd is None


def test_registry_entries_take_boxlite_json_shape() -> None:
    """``image_registries`` entries as BoxLite writes them (tagged ``auth``, its documented
    ``protocol``) or as ours (flat fields); mixed or malformed ones are refused, secrets unprinted."""
    from boxlite.errors import ConfigError
    from boxlite.images.registry_config import ImageRegistry

    auth = {"type": "basic", "username": "u", "password": "p"}
    basic = ImageRegistry.from_dict({"host": "r:5000", "transport": "http", "auth": auth})
    assert (basic.transport, basic.username, basic.password) == ("http", "u", "p")
    assert ImageRegistry.from_dict({"host": "r", "auth": {"type": "bearer", "token": "t"}}).bearer_token == "t"
    assert ImageRegistry.from_dict({"host": "r", "auth": {"type": "anonymous"}}).username is None
    assert ImageRegistry.from_dict({"host": "r", "protocol": "http", "search": True}).transport == "http"
    for bad in [
        {"host": "r", "auth": {"type": "basic", "username": "u"}},
        {"host": "r", "auth": {"type": "bearer", "token": "t", "extra": 1}},
        {"host": "r", "auth": {"type": "basic", "username": "u", "password": "p"}, "username": "v"},
        {"host": "r", "protocol": "http", "transport": "https"},
        {"host": "r", "search": "yes"},
        {"host": "r", "auth": "s3cret"},
    ]:
        with pytest.raises(ConfigError) as err:
            ImageRegistry.from_dict(bad)
        assert "s3cret" not in str(err.value) and "'p'" not in str(err.value)
