"""ImageManager: the images package's facade (pull, resolve, list, remove, load, gc)."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..aio import within
from ..errors import (
    BoxliteError,
    ConfigError,
    ImageError,
    ImageTooLargeError,
    NotFoundError,
    ParseError,
    RegistryError,
    RegistryTimeoutError,
)
from ..steplog import step
from .limits import ENV, ImageBudget, ImageLimits
from .locks import async_file_lock, file_lock
from .reference import Reference, is_digest, parse_reference
from .registry_config import ImageRegistry, load_registries_from_config
from .retry import RetryPolicy
from .store import DEFAULT_UID_BASE, Store
from .types import ImageConfig, ImageInfo, PreparedImage, PullProgress

# The catalog, the layout/manifest parsers, the unpacker (tarfile, gzip, zstandard) and the rootfs
# importer are imported where they are used: a runtime that only execs in running boxes (e.g.
# `boxlite exec`) makes an ImageManager but never pulls, unpacks or imports.
if TYPE_CHECKING:
    from .client import BlobTail, RegistryClient
    from .manifest import Descriptor, Manifest
    from .registry_access import RegistryAccess

ProgressFn = Callable[[PullProgress], None]
log = logging.getLogger("boxlite.images")


def _log_unpack_failure(digest: str, job: asyncio.Future[None]) -> None:
    """A layer that fails to unpack while downloading is unpacked again from the stored blob by
    ``_ensure_layer``, which raises the error to the caller of resolve: here it is only logged."""
    if not job.cancelled() and job.exception() is not None:
        log.debug("layer %s: unpack while downloading failed: %r", digest, job.exception())


class ImageManager:
    """Images of one BoxLite home. Safe to use from several processes at once.

    ``registries`` defaults to ``image_registries`` from ``<home>/config.json``.
    ``retry``, ``limits`` (default: :meth:`ImageLimits.from_env`) and
    ``max_concurrent_downloads`` may be adjusted after construction.
    """

    def __init__(
        self,
        home: Path,
        registries: list[ImageRegistry] | None = None,
        uid_base: int = DEFAULT_UID_BASE,
        limits: ImageLimits | None = None,
    ) -> None:
        self.home = Path(home)
        self.registries = list(registries) if registries is not None else load_registries_from_config(self.home)
        self.uid_base = uid_base
        self.store = Store(self.home, limits)
        self.retry = RetryPolicy()
        self.max_concurrent_downloads = 4

    @property
    def limits(self) -> ImageLimits:
        """Caps on image size, expansion and pull time (shared with the store)."""
        return self.store.limits

    @limits.setter
    def limits(self, value: ImageLimits) -> None:
        self.store.limits = value

    # -- registry selection -----------------------------------------------------------
    def _registry(self, host: str) -> ImageRegistry:
        for r in self.registries:
            if r.host == host:
                return r
        return ImageRegistry(host)

    def _access(self) -> RegistryAccess | None:
        """Where this pull may connect: anywhere for the library's user; for an untrusted
        caller (a REST client) public addresses, the listed hosts and this home's registries."""
        from .registry_access import current_access  # with the client: only when pulling

        access = current_access()
        return None if access is None else access.with_hosts(r.host for r in self.registries)

    def _candidates(self, ref: Reference) -> list[Reference]:
        """Where to look for ``ref``: search registries first for unqualified names."""
        if ref.explicit_registry:
            return [ref]
        out: list[Reference] = []
        for r in self.registries:
            if r.search and r.host != ref.registry:
                out.append(ref.with_registry(r.host, ref.short_repository))
                if ref.short_repository != ref.repository:
                    out.append(ref.with_registry(r.host, ref.repository))
        out.append(ref)
        return out

    # -- pull -------------------------------------------------------------------------
    async def pull(self, ref: str, progress: ProgressFn | None = None) -> ImageInfo:
        """Download ``ref`` (manifest, config, layers) into the store and tag it.

        Layers downloaded from their start are unpacked as they arrive (as ``docker pull`` leaves
        an image ready to run): each is published only once its blob digest and diff_id are
        verified; one that fails to unpack is not, and :meth:`resolve` reports why, as before.
        The whole pull must finish within ``limits.pull_timeout`` seconds (RegistryTimeoutError);
        partial downloads stay in the store's tmp dir and resume on the next pull.
        """
        timeout = self.limits.pull_timeout or None
        try:
            with step("pull", reference=ref):
                # within: in this task (Python >= 3.11), so the gc lock is released as the pull ends
                return await within(self._pull(ref, progress), timeout)
        except RegistryTimeoutError:
            raise
        except asyncio.TimeoutError:
            raise RegistryTimeoutError(
                f"pull of {ref} did not finish within {timeout} s ({ENV['pull_timeout']})"
            ) from None

    async def _pull(self, ref: str, progress: ProgressFn | None) -> ImageInfo:
        from .build import LOCAL_REGISTRY

        parsed = parse_reference(ref)
        if parsed.registry == LOCAL_REGISTRY:  # built on this host (images/build.py): never a network name
            raise NotFoundError(
                f"no image {ref} in the store: {LOCAL_REGISTRY} images are built here "
                f"(boxlite images build {parsed.repository.rsplit('/', 1)[-1]})"
            )
        first_error: RegistryError | None = None
        for cand in self._candidates(parsed):
            try:
                return await self._pull_one(cand, progress)
            except RegistryError as e:
                if parsed.explicit_registry:
                    raise
                first_error = first_error or e
        assert first_error is not None
        raise first_error

    async def _pull_one(self, ref: Reference, progress: ProgressFn | None) -> ImageInfo:
        from .catalog import record_image
        from .manifest import INDEX_TYPES, load_json, media_type_of, parse_manifest, select_platform

        async with async_file_lock(self.store.gc_lock(), shared=True):
            from .client import RegistryClient  # httpx costs ~0.1 s to import: only when pulling

            async with RegistryClient(
                self._registry(ref.registry), self.retry, limits=self.limits, access=self._access()
            ) as client:
                body, ctype, digest = await client.get_manifest(ref.repository, ref.reference)
                doc = load_json(body, "manifest")
                for _ in range(3):
                    if media_type_of(doc, ctype) not in INDEX_TYPES:
                        break
                    desc = select_platform(doc)
                    self.limits.document(f"manifest {desc.digest}", desc.size)
                    body, ctype, digest = await client.get_manifest(ref.repository, desc.digest)
                    doc = load_json(body, "manifest")
                manifest = parse_manifest(doc)
                self.limits.check_manifest(manifest, str(ref))
                await self._fetch_blob(client, ref.repository, manifest.config, None)
                plan = self._stream_plan(manifest, str(ref))
                sem = asyncio.Semaphore(self.max_concurrent_downloads)
                unpacking: list[asyncio.Future[None]] = []

                async def one(i: int, d: Descriptor) -> None:
                    async with sem:  # a slot per download: the unpack goes on without it
                        job = await self._fetch_blob(
                            client, ref.repository, d, progress, plan and (plan[0][i], plan[1])
                        )
                    if job is not None:
                        unpacking.append(job)

                try:
                    await asyncio.gather(*(one(i, d) for i, d in enumerate(manifest.layers)))
                finally:
                    if unpacking:  # under the gc lock still: a layer is never published during a gc
                        await asyncio.wait(unpacking)
            self.store.put_bytes(body, digest)
            return record_image(self.store, str(ref), digest)

    async def _fetch_blob(
        self,
        client: RegistryClient,
        repo: str,
        desc: Descriptor,
        progress: ProgressFn | None,
        unpack: tuple[str | None, ImageBudget] | None = None,
    ) -> asyncio.Future[None] | None:
        """Download one blob into the store. With ``unpack`` (the layer's diff_id and the image's
        budget) a layer downloaded from its start is also unpacked as it arrives: then the
        unpacking thread's future is returned, still running once the blob is in the store."""
        from .client import BlobTail

        def report(n: int, done: bool = False) -> None:
            if progress:
                progress(PullProgress(desc.digest, n, desc.size, done))

        if not self.store.has_blob(desc.digest):
            async with async_file_lock(self.store.blob_lock(desc.digest)):
                if not self.store.has_blob(desc.digest):  # another process may have won
                    partial = self.store.partial_path(desc.digest)
                    tail: BlobTail | None = None
                    job: asyncio.Future[None] | None = None
                    if unpack is not None and not partial.exists():
                        tail = BlobTail()
                        job = asyncio.ensure_future(asyncio.to_thread(self._stream_layer, desc, *unpack, tail))
                        job.add_done_callback(functools.partial(_log_unpack_failure, desc.digest))
                    try:
                        await client.download_blob(repo, desc, partial, report, tail)
                        self.store.commit_partial(desc.digest, partial)
                    except BaseException:
                        if tail is not None and job is not None:
                            tail.abort()  # the unpack stops at its next read and discards its work
                            await asyncio.wait({job})
                        raise
                    report(desc.size, True)
                    return job
        report(desc.size, True)
        return None

    def _stream_plan(self, manifest: Manifest, name: str) -> tuple[list[str | None], ImageBudget] | None:
        """Each layer's diff_id and the image's unpack budget, for unpacking while downloading
        (None when the config is unusable: the layers are then unpacked as before, which reports it)."""
        from .catalog import StoredImage
        from .manifest import load_json

        try:
            doc = load_json(self.store.read_blob(manifest.config.digest, "image config"), "image config")
            if not isinstance(doc.get("rootfs", {}), dict):
                return None
            diff_ids = StoredImage("", manifest, doc).diff_ids
            budget = ImageBudget(self.limits, f"image {name}")
            for d in dict.fromkeys(d.digest for d in manifest.layers):  # layers unpacked earlier count too
                hex_id = d.split(":", 1)[1]
                if self.store.layer_root(hex_id).is_dir():
                    budget.charge(*self.store.layer_usage(hex_id))
        except BoxliteError:
            return None
        return diff_ids, budget

    def _stream_layer(self, desc: Descriptor, diff_id: str | None, budget: ImageBudget, tail: BlobTail) -> None:
        """Unpack a layer from its download under way (a thread); published as :meth:`_ensure_layer`
        publishes, only once the blob is verified (the tail has ended) and so is the diff_id."""
        try:
            self._ensure_layer(desc, diff_id, budget, tail)
        finally:
            tail.abort()  # no-op when it ended
            tail.close()

    # -- resolve ----------------------------------------------------------------------
    async def resolve(
        self,
        image: str | None = None,
        rootfs_path: str | None = None,
        progress: ProgressFn | None = None,
        *,
        live_rootfs: bool = False,
    ) -> PreparedImage:
        """Image reference or rootfs dir → unpacked layers + config (pulls when missing).

        ``live_rootfs``: the engine can mount a rootfs directory in place; it is then its own
        layer (where its file system can be id-mapped) instead of a fingerprinted copy."""
        if (image is None) == (rootfs_path is None):
            raise ConfigError("give exactly one of image and rootfs_path")
        if rootfs_path is not None:
            return await self._prepare_rootfs(Path(rootfs_path), live_rootfs)
        assert image is not None
        from .catalog import is_complete

        info = self._lookup(image)
        if info is None or not is_complete(self.store, info.digest):
            if info is not None and is_digest(image):
                raise ImageError(f"image {image} is incomplete in the store")
            info = await self.pull(info.reference if info else image, progress)
        return await self._prepare(info)

    async def _prepare_rootfs(self, path: Path, live_rootfs: bool) -> PreparedImage:
        if (path / "oci-layout").is_file():  # tested first: layout.py brings tarfile and the manifests
            from .layout import is_oci_layout

            if is_oci_layout(path):
                infos = await asyncio.to_thread(self.load, path)
                return await self._prepare(infos[0])
        if not path.is_dir():
            raise NotFoundError(f"rootfs_path {path} is not a directory")
        if live_rootfs:
            from .rootfs import live_root

            live = live_root(path)
            if live is not None:
                return PreparedImage((live[0],), ImageConfig(), live[1], None)
        root, fp = await asyncio.to_thread(self._import_rootfs, path)
        return PreparedImage((root,), ImageConfig(), f"rootfs:{fp}", None)

    def _import_rootfs(self, path: Path) -> tuple[Path, str]:
        from .rootfs import import_rootfs

        with file_lock(self.store.gc_lock(), shared=True):
            return import_rootfs(self.store, path)

    def _lookup(self, image: str) -> ImageInfo | None:
        if is_digest(image) or (len(image) >= 12 and all(c in "0123456789abcdef" for c in image)):
            rows = self.store.find(image)
            if rows:
                return rows[0]
            if is_digest(image):
                raise NotFoundError(f"no image {image} in the store")
        for cand in self._candidates(parse_reference(image)):
            info = self.store.get_ref(str(cand))
            if info:
                return info
        return None

    async def _prepare(self, info: ImageInfo) -> PreparedImage:
        from .catalog import read_image

        async with async_file_lock(self.store.gc_lock(), shared=True):
            img = read_image(self.store, info.digest)
            self.limits.check_manifest(img.manifest, info.reference)
            budget = ImageBudget(self.limits, f"image {info.reference}")
            hex_ids = [d.digest.split(":", 1)[1] for d in img.manifest.layers]
            for hex_id in hex_ids:  # layers unpacked earlier count against this image too
                if self.store.layer_root(hex_id).is_dir():
                    budget.charge(*self.store.layer_usage(hex_id))
            layers = await asyncio.gather(
                *(
                    asyncio.to_thread(self._ensure_layer, d, diff, budget)
                    for d, diff in zip(img.manifest.layers, img.diff_ids, strict=True)
                )
            )
            self._check_usage(hex_ids, info.reference)
        return PreparedImage(tuple(layers), img.config, img.image_id, info.reference)

    def _check_usage(self, hex_ids: list[str], name: str) -> None:
        """The image's layers as stored (some may come from other processes) fit the limits."""
        total = entries = 0
        for hex_id in dict.fromkeys(hex_ids):
            n, e = self.store.layer_usage(hex_id)
            total, entries = total + n, entries + e
        lim = self.limits
        if lim.max_image_bytes and total > lim.max_image_bytes:
            raise ImageTooLargeError(
                f"image {name} unpacks to {total} bytes, more than {lim.max_image_bytes} ({ENV['max_image_bytes']})"
            )
        if lim.max_image_entries and entries > lim.max_image_entries:
            raise ImageTooLargeError(
                f"image {name} has {entries} entries, more than {lim.max_image_entries} ({ENV['max_image_entries']})"
            )

    def _ensure_layer(
        self, desc: Descriptor, diff_id: str | None, budget: ImageBudget | None = None, tail: BlobTail | None = None
    ) -> Path:
        """The layer's unpacked root, unpacked from the stored blob if missing (from its download
        under way when ``tail`` is given)."""
        hex_id = desc.digest.split(":", 1)[1]
        root = self.store.layer_root(hex_id)
        if root.is_dir():  # a cache hit imports no unpacker (tarfile, zstandard, isal)
            return root
        from .unpack import unpack_layer

        with file_lock(self.store.lock_path(f"layer-{hex_id}")):
            if root.is_dir():
                return root
            work = Path(tempfile.mkdtemp(dir=self.store.tmp, prefix=f"layer-{hex_id[:12]}-"))
            try:  # mkdtemp made it 0700: stays so (real setuid-root files live below)
                (work / "root").mkdir()
                if tail is None:
                    meter = unpack_layer(self.store.blob_path(desc.digest), work / "root", diff_id, self.limits, budget)
                else:
                    partial = self.store.partial_path(desc.digest)
                    meter = unpack_layer(
                        partial, work / "root", diff_id, self.limits, budget, source=tail, compressed_size=desc.size
                    )
                (work / "expanded.json").write_text(json.dumps({"bytes": meter.bytes, "entries": meter.entries}))
                os.rename(work, self.store.layer_dir(hex_id))
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                raise
        return root

    def layers_shifted(self, layers: tuple[Path, ...] | list[Path]) -> bool:
        """Do ``layers`` (a box's, bottom first) come from the format 1 store, their ownership
        already shifted by ``uid_base``? (Boxes created before layers were stored unshifted.)"""
        return bool(layers) and all(self.store.is_shifted(Path(p)) for p in layers)

    # -- local operations -------------------------------------------------------------
    def remove(self, ref_or_digest: str, force: bool = False) -> None:
        """Untag an image (by reference, manifest digest or image id).

        A digest/id naming several references needs ``force``. Blobs and layers are freed by
        :meth:`gc`.
        """
        rows = self.store.find(ref_or_digest)
        if not rows and not is_digest(ref_or_digest):
            try:
                parsed = parse_reference(ref_or_digest)
            except ParseError:
                parsed = None
            if parsed is not None:
                for cand in self._candidates(parsed):
                    info = self.store.get_ref(str(cand))
                    if info:
                        rows = [info]
                        break
        if not rows:
            raise NotFoundError(f"no image {ref_or_digest!r} in the store")
        if len(rows) > 1 and not force:
            raise ImageError(
                f"{ref_or_digest} is referenced by {len(rows)} references "
                f"({', '.join(r.reference for r in rows)}); use force=True"
            )
        self.store.delete_refs([r.reference for r in rows])

    def load(self, path: str | Path) -> list[ImageInfo]:
        """Import a ``docker save``/``podman save`` tarball or an OCI layout (dir or tar)."""
        from .catalog import record_image
        from .layout import import_path

        with file_lock(self.store.gc_lock(), shared=True):
            pairs = import_path(self.store, Path(path))
            return [record_image(self.store, ref, digest) for ref, digest in pairs]

    def gc(self, in_use_layers: set[Path] | frozenset[Path] = frozenset()) -> int:
        """Delete blobs and layer dirs no image references and no box uses; bytes freed."""
        from .manifest import load_json, parse_manifest

        store = self.store
        with file_lock(store.gc_lock()):
            keep_blobs: set[str] = set()
            keep_layer_ids: set[str] = set()
            for info in store.all_refs():
                keep_blobs.add(info.digest)
                try:
                    manifest = parse_manifest(load_json(store.read_blob(info.digest, "manifest"), "m"))
                except (ImageError, ParseError):
                    continue
                keep_blobs.add(manifest.config.digest)
                for d in manifest.layers:
                    keep_blobs.add(d.digest)
                    keep_layer_ids.add(d.digest.split(":", 1)[1])
            keep_dirs: set[Path] = set()  # layer dirs boxes use
            for p in in_use_layers:
                p = Path(p)
                p = p.parent if p.name == "root" else p
                keep_dirs.add(p.resolve())
            freed = 0
            for entry in os.scandir(store.blobs):
                if f"sha256:{entry.name}" not in keep_blobs:
                    freed += entry.stat(follow_symlinks=False).st_size
                    os.unlink(entry.path)
            legacy = os.scandir(store.legacy_layers) if store.legacy_layers.is_dir() else iter(())
            for entry in [*os.scandir(store.layers), *legacy]:  # format 1 layers: only while boxes use them
                if Path(entry.path).resolve() in keep_dirs:
                    continue
                if store.layers.samefile(os.path.dirname(entry.path)) and entry.name in keep_layer_ids:
                    continue
                freed += _du(entry.path)
                shutil.rmtree(entry.path, ignore_errors=True)
            for entry in os.scandir(store.tmp):  # nobody pulls while we hold the gc lock
                freed += _du(entry.path)
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            for entry in os.scandir(store.locks):  # per-blob/layer locks: only used under gc lock
                if entry.name != store.gc_lock().name:
                    os.unlink(entry.path)
            return freed

    # defined last: the method name would shadow the builtin in later annotations
    def list(self) -> list[ImageInfo]:
        """Every stored reference, newest first."""
        return self.store.all_refs()


def _du(path: str) -> int:
    st = os.lstat(path)
    if not os.path.isdir(path) or os.path.islink(path):
        return st.st_size
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + dirnames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total
