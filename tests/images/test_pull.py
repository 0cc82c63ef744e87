"""Pulling from a real local docker-registry (no auth, basic, token)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.images.conftest import Registry
from tests.support.images import Layer, Member, busybox_layout, host_arch, layer_from_members, write_oci_layout

from boxlite.errors import AuthenticationError, ImageError, ImageNotFoundError, RegistryError
from boxlite.images import ImageManager, ImageRegistry, PullProgress

MM = Callable[..., ImageManager]


async def test_pull_and_resolve(registry: Registry, make_manager: MM) -> None:
    m = make_manager(registry.config())
    events: list[PullProgress] = []
    info = await m.pull(registry.busybox, events.append)
    assert info.reference == registry.busybox
    assert info.digest.startswith("sha256:") and info.image_id.startswith("sha256:")
    assert info.size > 500_000 and info.created == "2024-01-01T00:00:00Z"
    assert events and events[-1].done and events[-1].downloaded == events[-1].total
    blobs = m.store.blobs
    assert (blobs / info.digest.split(":")[1]).is_file()
    prepared = await m.resolve(registry.busybox)
    assert prepared.image_id == info.image_id and prepared.reference == registry.busybox
    assert prepared.config.cmd == ["/bin/sh"]
    (root,) = prepared.layers
    assert root == m.home / "images" / "layers-v2" / root.parent.name / "root"
    st = os.lstat(root / "bin" / "busybox")
    assert (st.st_uid, st.st_gid) == (0, 0)  # the image's ownership: engines map it to box uids
    assert os.lstat(root / "home" / "user").st_uid == 1000
    assert os.readlink(root / "bin" / "sh") == "busybox"
    assert [i.reference for i in m.list()] == [registry.busybox]


async def test_resolve_pulls_when_missing_and_is_cached(
    registry: Registry,
    make_manager: MM,
) -> None:
    m = make_manager(registry.config())
    first = await m.resolve(registry.python)
    assert len(first.layers) == 2
    assert first.config.cmd == ["python3", "/app/hello.py"]
    assert first.config.working_dir == "/app"
    assert (first.layers[0] / "usr" / "bin" / "python3.11").is_file()
    mtime = first.layers[0].stat().st_mtime_ns
    again = await m.resolve(registry.python)
    assert again == first and first.layers[0].stat().st_mtime_ns == mtime


async def test_digest_reference(registry: Registry, make_manager: MM) -> None:
    m = make_manager(registry.config())
    info = await m.pull(registry.busybox)
    pinned = f"{registry.host}/busybox@{info.digest}"
    info2 = await m.pull(pinned)
    assert info2.digest == info.digest and info2.reference == pinned
    prepared = await m.resolve(info.image_id)  # by image id, from the store
    assert prepared.image_id == info.image_id


async def test_not_found(registry: Registry, make_manager: MM) -> None:
    m = make_manager(registry.config())
    with pytest.raises(ImageNotFoundError):
        await m.pull(f"{registry.host}/nope:latest")
    with pytest.raises(ImageNotFoundError):
        await m.pull(f"{registry.host}/busybox:nosuchtag")


async def test_plain_http_only_when_declared(registry: Registry, make_manager: MM) -> None:
    m = make_manager()  # no registry entry: https is used and fails against a plain server
    with pytest.raises(RegistryError, match="transport='http'"):
        await m.pull(registry.busybox)
    assert m.list() == []


async def test_search_registries_for_unqualified_names(
    registry: Registry,
    make_manager: MM,
) -> None:
    dead = ImageRegistry("127.0.0.1:9", transport="http", search=True)
    m = make_manager(dead, registry.config(search=True))
    info = await m.pull("busybox")
    assert info.reference == f"{registry.host}/busybox:latest"
    prepared = await m.resolve("busybox")  # found in the store under the search registry
    assert prepared.reference == info.reference


async def test_basic_auth(basic_registry: Registry, make_manager: MM) -> None:
    m = make_manager(basic_registry.config())
    info = await m.pull(basic_registry.busybox)
    assert info.reference == basic_registry.busybox
    bad = make_manager(
        ImageRegistry(basic_registry.host, "http", username="boxlite", password="wrong"), home=m.home.parent / "h2"
    )
    with pytest.raises(AuthenticationError):
        await bad.pull(basic_registry.busybox)
    anon = make_manager(ImageRegistry(basic_registry.host, "http"), home=m.home.parent / "h3")
    with pytest.raises(AuthenticationError):
        await anon.pull(basic_registry.busybox)


async def test_docker_config_credentials(
    basic_registry: Registry, make_manager: MM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "docker"
    cfg.mkdir()
    auth = base64.b64encode(f"{basic_registry.server.username}:{basic_registry.server.password}".encode()).decode()
    (cfg / "config.json").write_text(json.dumps({"auths": {basic_registry.host: {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(cfg))
    m = make_manager(ImageRegistry(basic_registry.host, transport="http"))
    assert (await m.pull(basic_registry.busybox)).reference == basic_registry.busybox


async def test_token_auth_anonymous_and_credentials(token_registry: Registry, make_manager: MM) -> None:
    ts = token_registry.server.extras[0]
    anon = make_manager(ImageRegistry(token_registry.host, transport="http"))
    await anon.pull(token_registry.busybox)
    assert any(r["user"] == "" for r in ts.requests)  # type: ignore[attr-defined]
    m = make_manager(token_registry.config(), home=anon.home.parent / "h2")
    await m.pull(token_registry.busybox)
    assert any(r["user"] == "boxlite" and "busybox:pull" in r["scope"] for r in ts.requests)  # type: ignore[attr-defined]
    bad = make_manager(
        ImageRegistry(token_registry.host, "http", username="boxlite", password="nope"), home=anon.home.parent / "h3"
    )
    with pytest.raises(AuthenticationError):
        await bad.pull(token_registry.busybox)


async def test_static_bearer_token(token_registry: Registry, make_manager: MM) -> None:
    ts = token_registry.server.extras[0]
    token = ts.make_token(
        "boxlite",
        [  # type: ignore[attr-defined]
            {"type": "repository", "name": "library/busybox", "actions": ["pull"]}
        ],
    )
    m = make_manager(ImageRegistry(token_registry.host, "http", bearer_token=token))
    await m.pull(token_registry.busybox)
    wrong = ts.make_token("boxlite", [])  # type: ignore[attr-defined]
    m2 = make_manager(ImageRegistry(token_registry.host, "http", bearer_token=wrong), home=m.home.parent / "h2")
    with pytest.raises(AuthenticationError):
        await m2.pull(token_registry.busybox)


def _multiarch_layout(tmp: Path, platforms: list[tuple[str, str, str | None]]) -> Path:
    layer: Layer = layer_from_members([Member("marker", data=b"multi\n")])
    return write_oci_layout(tmp / "multi", [layer], platforms=platforms)


async def test_index_platform_selection(registry: Registry, make_manager: MM, tmp_path: Path) -> None:
    plats: list[tuple[str, str, str | None]] = [
        ("linux", "s390x", None),
        ("linux", host_arch(), None),
        ("windows", host_arch(), None),
    ]
    ref = registry.server.push_layout(_multiarch_layout(tmp_path, plats), "multi")
    m = make_manager(registry.config())
    prepared = await m.resolve(ref)
    assert (prepared.layers[0] / "marker").read_text() == "multi\n"
    cfg = json.loads(m.store.read_blob(prepared.image_id))
    assert (cfg["os"], cfg["architecture"]) == ("linux", host_arch())


async def test_index_without_host_platform(registry: Registry, make_manager: MM, tmp_path: Path) -> None:
    ref = registry.server.push_layout(
        _multiarch_layout(tmp_path, [("linux", "s390x", None), ("linux", "riscv64", None)]), "otherarch"
    )
    m = make_manager(registry.config())
    with pytest.raises(ImageError, match="no manifest for platform linux/"):
        await m.pull(ref)


async def test_variant_selection(
    registry: Registry, make_manager: MM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOXLITE_IMAGE_PLATFORM", "linux/arm/v7")
    ref = registry.server.push_layout(
        _multiarch_layout(tmp_path, [("linux", "arm", "v6"), ("linux", "arm", "v7"), ("linux", "arm64", "v8")]), "arm"
    )
    m = make_manager(registry.config())
    info = await m.pull(ref)
    cfg = json.loads(m.store.read_blob(info.image_id))
    assert cfg["architecture"] == "arm"
    manifest_list = json.loads(
        subprocess.run(
            ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"], capture_output=True, check=True
        ).stdout
    )
    v7 = next(d for d in manifest_list["manifests"] if d["platform"].get("variant") == "v7")
    assert info.digest == v7["digest"]


async def test_concurrent_pulls_share_downloads(
    registry: Registry, make_manager: MM, proxy: object, tmp_path: Path
) -> None:
    """Two processes pull the same image into one home: both succeed, each blob once."""
    from tests.support.registry_proxy import FaultProxy

    assert isinstance(proxy, FaultProxy)
    home = tmp_path / "shared"
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from boxlite.images import ImageManager, ImageRegistry\n"
        f"m = ImageManager(Path({str(home)!r}), [ImageRegistry({proxy.host!r}, 'http')])\n"
        f"info = asyncio.run(m.pull({proxy.host + '/python'!r}))\n"
        "asyncio.run(m.resolve(info.reference))\n"
        "print(info.digest)\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2] / "src"), str(Path(__file__).parents[2])]),
    }
    procs = [
        subprocess.Popen(
            [os.sys.executable, "-c", script],
            env=env,  # type: ignore[attr-defined]
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert outs[0][0] == outs[1][0]
    layer_gets = [h for h in proxy.hits_for(r"/blobs/sha256:") if h.method == "GET"]
    digests = [h.path.rsplit("/", 1)[1] for h in layer_gets]
    assert len(digests) == len(set(digests)), digests  # every blob downloaded once
    assert len(list((home / "images" / "layers-v2").iterdir())) == 2
    m = make_manager(home=home)
    assert len(m.list()) == 1


def test_busybox_layout_is_cached() -> None:
    assert busybox_layout() == busybox_layout()


async def test_https_registry_and_skip_verify(tls_registry: Registry, make_manager: MM) -> None:
    strict = make_manager(ImageRegistry(tls_registry.host))  # https, verified: self-signed fails
    with pytest.raises(RegistryError, match=r"(?i)certificate|ssl"):
        await strict.pull(tls_registry.busybox)
    m = make_manager(ImageRegistry(tls_registry.host, skip_verify=True), home=strict.home.parent / "h2")
    assert (await m.pull(tls_registry.busybox)).reference == tls_registry.busybox
    plain = make_manager(ImageRegistry(tls_registry.host, transport="http"), home=strict.home.parent / "h3")
    with pytest.raises(RegistryError):
        await plain.pull(tls_registry.busybox)


async def test_layers_are_shared_across_uid_bases(registry: Registry, make_manager: MM, tmp_path: Path) -> None:
    home = tmp_path / "shared-home"
    a = await make_manager(registry.config(), home=home).resolve(registry.busybox)
    b = await make_manager(registry.config(), home=home, uid_base=200000).resolve(registry.busybox)
    assert a.layers == b.layers  # unshifted: one copy, whatever uid base the boxes use
    assert os.lstat(b.layers[0] / "bin/busybox").st_uid == 0
    assert os.lstat(b.layers[0] / "home/user").st_uid == 1000


async def test_resolve_reports_progress(registry: Registry, make_manager: MM) -> None:
    m = make_manager(registry.config())
    events: list[PullProgress] = []
    await m.resolve(registry.python, progress=events.append)
    done = {e.layer for e in events if e.done}
    assert len(done) == 2
    for layer in done:
        seen = [e.downloaded for e in events if e.layer == layer]
        assert seen == sorted(seen) and seen[-1] == next(e.total for e in events if e.layer == layer)


def test_api_host() -> None:
    from boxlite.images.client import api_host

    assert api_host("docker.io") == "registry-1.docker.io"
    assert api_host("ghcr.io") == "ghcr.io"


async def test_unresolvable_host_fails_fast(make_manager: MM) -> None:
    import time

    m = make_manager()
    m.retry.base_delay = 1.0  # would take seconds if DNS failures were retried
    t0 = time.monotonic()
    with pytest.raises(RegistryError):
        await m.pull("no-such-registry.invalid/img:1")
    assert time.monotonic() - t0 < 2
