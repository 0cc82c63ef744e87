"""The pull pipeline behind a fault-injecting proxy in front of the real registry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tests.images.conftest import Registry
from tests.support.registry_proxy import FaultProxy

from boxlite.errors import AuthenticationError, DigestMismatchError, ImageNotFoundError, RegistryError
from boxlite.images import ImageManager, ImageRegistry

MM = Callable[..., ImageManager]
BLOB = r"/blobs/sha256:"
MANIFEST = r"/manifests/"


def _mgr(make_manager: MM, proxy: FaultProxy) -> ImageManager:
    return make_manager(ImageRegistry(proxy.host, transport="http"))


def _ref(proxy: FaultProxy, name: str = "python") -> str:
    return f"{proxy.host}/{name}:latest"


def _assert_clean(m: ImageManager) -> None:
    """Nothing partial or corrupt was committed."""
    import hashlib

    for blob in m.store.blobs.iterdir():
        assert "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest() == "sha256:" + blob.name


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_retry_on_transient_status(proxy: FaultProxy, make_manager: MM, status: int) -> None:
    proxy.add("status", MANIFEST, status, times=2)
    proxy.add("status", BLOB, status, times=2)
    m = _mgr(make_manager, proxy)
    await m.resolve(_ref(proxy, "busybox"))
    assert len([h for h in proxy.hits if h.fault == "status"]) == 4
    _assert_clean(m)


async def test_persistent_500_fails_cleanly(proxy: FaultProxy, make_manager: MM) -> None:
    proxy.add("status", BLOB, 500, times=-1)
    m = _mgr(make_manager, proxy)
    with pytest.raises(RegistryError) as ei:
        await m.pull(_ref(proxy))
    assert ei.value.status == 500
    assert m.list() == []
    assert not list(m.store.blobs.iterdir())


async def test_401_without_challenge_and_404(proxy: FaultProxy, make_manager: MM) -> None:
    m = _mgr(make_manager, proxy)
    proxy.add("status", MANIFEST, 401)
    with pytest.raises(AuthenticationError):
        await m.pull(_ref(proxy))
    proxy.add("status", BLOB, 404)
    with pytest.raises(ImageNotFoundError):
        await m.pull(_ref(proxy, "busybox"))
    assert m.list() == []


async def test_connection_reset_is_retried(proxy: FaultProxy, make_manager: MM) -> None:
    proxy.add("reset", MANIFEST, times=1)
    proxy.add("reset", BLOB, times=3)
    m = _mgr(make_manager, proxy)
    await m.resolve(_ref(proxy))
    _assert_clean(m)


async def test_truncated_blob_resumes_with_range(proxy: FaultProxy, make_manager: MM) -> None:
    proxy.add("truncate", BLOB, times=2)
    m = _mgr(make_manager, proxy)
    prepared = await m.resolve(_ref(proxy))
    ranged = [h for h in proxy.hits_for(BLOB) if h.range]
    assert ranged and all(h.range.startswith("bytes=") and h.range != "bytes=0-" for h in ranged)
    assert any(h.status == 206 for h in ranged)
    assert (prepared.layers[0] / "usr/bin/python3.11").is_file()
    _assert_clean(m)
    assert not list(m.store.tmp.iterdir())


async def test_truncated_blob_without_range_support_restarts(proxy: FaultProxy, make_manager: MM) -> None:
    proxy.add("truncate", BLOB, times=1)
    proxy.add("norange", BLOB, times=-1)
    m = _mgr(make_manager, proxy)
    await m.resolve(_ref(proxy))
    _assert_clean(m)


async def test_corrupt_blob_once_is_redownloaded(proxy: FaultProxy, make_manager: MM) -> None:
    proxy.add("corrupt", BLOB, times=1)
    m = _mgr(make_manager, proxy)
    await m.resolve(_ref(proxy))
    _assert_clean(m)


async def test_always_corrupt_blob_is_never_committed(proxy: FaultProxy, make_manager: MM) -> None:
    proxy.add("corrupt", BLOB, times=-1)
    m = _mgr(make_manager, proxy)
    with pytest.raises(DigestMismatchError):
        await m.pull(_ref(proxy, "busybox"))
    assert m.list() == []
    assert not list(m.store.blobs.iterdir())
    assert not [p for p in m.store.tmp.iterdir() if p.suffix == ".partial"]


async def test_corrupt_manifest_by_digest(
    proxy: FaultProxy, registry: Registry, make_manager: MM, tmp_path: Path
) -> None:
    good = await make_manager(registry.config()).pull(registry.busybox)
    proxy.add("corrupt", MANIFEST, times=-1)
    m = make_manager(ImageRegistry(proxy.host, transport="http"), home=tmp_path / "other")
    with pytest.raises(DigestMismatchError):
        await m.pull(f"{proxy.host}/busybox@{good.digest}")
    assert m.list() == []


async def test_partial_download_resumes_across_managers(proxy: FaultProxy, make_manager: MM) -> None:
    """A partial file left by a failed pull is resumed (Range) by the next pull."""
    proxy.add("truncate", BLOB, times=-1)
    m = _mgr(make_manager, proxy)
    m.retry.attempts = 1
    with pytest.raises(RegistryError):
        await m.pull(_ref(proxy, "busybox"))
    partials = [p for p in m.store.tmp.iterdir() if p.suffix == ".partial"]
    assert partials and all(p.stat().st_size > 0 for p in partials)
    assert m.list() == []
    proxy.clear()
    m2 = _mgr(make_manager, proxy)
    await m2.pull(_ref(proxy, "busybox"))
    assert any(h.range for h in proxy.hits_for(BLOB))
    _assert_clean(m2)


async def test_many_breaks_with_progress_still_finish(proxy: FaultProxy, make_manager: MM) -> None:
    """Each broken transfer that made progress resets the failure count (attempts=5)."""
    proxy.add("truncate", BLOB, times=8)
    proxy.add("truncate", MANIFEST, times=2)
    m = _mgr(make_manager, proxy)
    await m.resolve(_ref(proxy, "busybox"))
    assert len([h for h in proxy.hits if h.fault == "truncate"]) == 10
    _assert_clean(m)


async def test_blob_redirect_to_other_origin(proxy: FaultProxy, make_manager: MM) -> None:
    proxy.add("redirect", BLOB, times=-1)
    m = _mgr(make_manager, proxy)
    await m.resolve(_ref(proxy, "busybox"))
    assert len([h for h in proxy.hits if h.fault == "redirect"]) == 2  # config + layer
    _assert_clean(m)


async def test_gc_waits_for_a_running_pull(proxy: FaultProxy, make_manager: MM) -> None:
    import asyncio

    from boxlite.images.catalog import is_complete

    proxy.add("slow", BLOB, status=400, times=-1)
    m = _mgr(make_manager, proxy)
    pull = asyncio.create_task(m.pull(_ref(proxy, "busybox")))
    while not proxy.hits_for(MANIFEST):
        await asyncio.sleep(0.01)
    t0 = asyncio.get_running_loop().time()
    await asyncio.to_thread(m.gc)  # blocks on the gc lock until the pull is done
    assert pull.done() and asyncio.get_running_loop().time() - t0 > 0.3
    info = pull.result()
    assert is_complete(m.store, info.digest)
    assert (await m.resolve(info.reference)).layers[0].is_dir()
