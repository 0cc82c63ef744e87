"""OCI distribution v2 client for one registry: manifests and resumable, verified blobs.

The registry is untrusted: bodies are read raw (``Accept-Encoding: identity``: no
decompression on our side) with size caps, response headers must come within ``timeout``, and
a body arriving slower than ``limits.min_speed`` over a ``limits.speed_window`` counts as a
failed transfer (:class:`RegistryTimeoutError` once retries are used up). The overall pull
deadline is the caller's (:meth:`ImageManager.pull`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..aio import within
from ..errors import (
    AuthenticationError,
    DigestMismatchError,
    ImageNotFoundError,
    ImageTooLargeError,
    RegistryError,
    RegistryTimeoutError,
)
from ..httpx_lean import httpx
from .auth import Authenticator
from .limits import ImageLimits
from .manifest import ACCEPT, Descriptor
from .reference import DOCKER_HUB
from .registry_access import RegistryAccess
from .registry_config import ImageRegistry, docker_credentials
from .retry import RetryPolicy

MAX_MANIFEST = 4 << 20
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def api_host(host: str) -> str:
    """The host serving the v2 API (Docker Hub's API lives on registry-1.docker.io)."""
    return "registry-1.docker.io" if host == DOCKER_HUB else host


class RegistryClient:
    """Talks to one registry host; use as an async context manager."""

    def __init__(
        self,
        registry: ImageRegistry,
        retry: RetryPolicy | None = None,
        timeout: float = 60.0,
        limits: ImageLimits | None = None,
        access: RegistryAccess | None = None,
    ) -> None:
        """``access``: connect only where it allows (a pull for an untrusted caller), else anywhere."""
        self.registry = registry
        self.retry = retry or RetryPolicy()
        self.limits = limits if limits is not None else ImageLimits.from_env()
        self.timeout = timeout
        window = self.limits.speed_window if self.limits.min_speed else 0.0
        self._headers_deadline = min(timeout, window) if window else timeout
        creds: tuple[str, str] | None = None
        if registry.username is not None and registry.password is not None:
            creds = (registry.username, registry.password)
        else:
            creds = docker_credentials(registry.host)
        self.auth = Authenticator(creds, registry.bearer_token)
        self.base = f"{registry.transport}://{api_host(registry.host)}/v2"
        verify = _tls_context(registry)
        transport = None
        if access is not None:
            from .vetted_transport import vetted_transport

            transport = vetted_transport(access, verify)
        self.http = httpx.AsyncClient(
            verify=verify,
            transport=transport,
            follow_redirects=True,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0)),
            headers={"User-Agent": "boxlite", "Accept-Encoding": "identity"},
        )

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _send(self, method: str, url: str, scope: str, headers: dict[str, str] | None = None) -> httpx.Response:
        """Send with auth and retries; returns an open streaming response (status < 400)."""
        authed = False
        attempt = 0
        while True:
            h = {**(headers or {}), **self.auth.header(scope)}
            try:
                try:  # httpx's timeout is per read: a server dribbling headers needs a deadline of its own
                    resp = await within(
                        self.http.send(self.http.build_request(method, url, headers=h), stream=True),
                        self._headers_deadline,
                    )
                except asyncio.TimeoutError:
                    raise httpx.ReadTimeout(f"no response headers within {self._headers_deadline:g} s") from None
            except httpx.TransportError as e:
                attempt += 1
                if attempt >= self.retry.attempts or _is_permanent(e):
                    hint = ""
                    if "WRONG_VERSION_NUMBER" in str(e):
                        hint = (
                            " (a plain-HTTP registry? declare it with "
                            f"ImageRegistry({self.registry.host!r}, transport='http'))"
                        )
                    err = RegistryTimeoutError if isinstance(e, httpx.TimeoutException) else RegistryError
                    raise err(f"{self.registry.host}: {type(e).__name__}: {e}{hint}") from e
                await asyncio.sleep(self.retry.delay(attempt))
                continue
            except httpx.HTTPError as e:  # too many redirects, invalid URL...
                raise RegistryError(f"{self.registry.host}: {type(e).__name__}: {e}") from e
            status = resp.status_code
            if status < 400:
                return resp
            await resp.aclose()
            if status == 401 and not authed:
                authed = True
                if await self.auth.handle_401(self.http, resp, scope):
                    continue
            if status in (401, 403):
                raise AuthenticationError(
                    f"{self.registry.host}: access denied ({status}) for {url} (missing or wrong "
                    "credentials, or no such repository)",
                    status,
                )
            if status == 404:
                raise ImageNotFoundError(f"{self.registry.host}: not found: {url}", status)
            if status in _RETRY_STATUS:
                attempt += 1
                if attempt < self.retry.attempts:
                    await asyncio.sleep(self.retry.delay(attempt, resp.headers.get("retry-after")))
                    continue
            raise RegistryError(f"{self.registry.host}: HTTP {status} for {url}", status)

    async def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str, str]:
        """Fetch a manifest or index: (body, content type, sha256 digest of body).

        When ``reference`` is a digest the body is verified against it.
        """
        url = f"{self.base}/{repo}/manifests/{reference}"
        limit = self.limits.max_document or MAX_MANIFEST
        what = f"manifest {repo}:{reference}"
        for attempt in range(1, self.retry.attempts + 1):
            resp = await self._send("GET", url, _scope(repo), {"Accept": ACCEPT})
            body = bytearray()
            paced = _Paced(resp, self.limits, what)
            try:
                declared = resp.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise ImageTooLargeError(f"{what} is {declared} bytes, more than {limit}")
                while chunk := await paced.read():
                    body += chunk
                    if len(body) > limit:
                        raise ImageTooLargeError(f"{what} is larger than {limit} bytes")
                break
            except (httpx.TransportError, _Stalled) as e:
                if attempt >= self.retry.attempts:
                    err = RegistryTimeoutError if isinstance(e, _Stalled) else RegistryError
                    raise err(f"{self.registry.host}: manifest download failed: {e}") from e
                await asyncio.sleep(self.retry.delay(attempt))
            except httpx.HTTPError as e:
                raise RegistryError(f"{self.registry.host}: manifest download failed: {e}") from e
            finally:
                await paced.close()
                await resp.aclose()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise DigestMismatchError(f"manifest {repo}@{reference} has digest {digest}")
        return bytes(body), resp.headers.get("content-type", ""), digest

    async def download_blob(
        self,
        repo: str,
        desc: Descriptor,
        partial: Path,
        progress: Callable[[int], None] | None = None,
        tail: BlobTail | None = None,
    ) -> None:
        """Make ``partial`` hold the verified content of ``desc``.

        Resumes from an existing ``partial`` with a Range request, retries broken transfers,
        and restarts once from zero when the finished content does not match the digest.
        Raises DigestMismatchError (and removes ``partial``) when it still does not match.

        ``tail`` lets another thread read the blob while it arrives; it ends only once the blob
        is verified and is aborted first whenever written bytes are thrown away (and when
        ``partial`` already held some: a resumed blob is not streamed).
        """
        url = f"{self.base}/{repo}/blobs/{desc.digest}"
        hasher, have = _hash_existing(partial, desc.size)
        fresh_restarts = 1
        failures = stalls = 0
        if tail is not None and have:
            tail.abort()
        try:
            with open(partial, "ab") as f:
                if tail is not None:
                    tail.open(partial)

                def restart() -> None:  # written bytes are thrown away: a tail reading them must stop first
                    nonlocal hasher, have
                    if tail is not None:
                        tail.abort()
                    f.truncate(0)
                    hasher, have = hashlib.sha256(), 0

                while True:
                    if have == desc.size:
                        if "sha256:" + hasher.hexdigest() == desc.digest:
                            f.flush()
                            os.fsync(f.fileno())
                            if tail is not None:
                                tail.finish(have)
                            return
                        restart()
                        if fresh_restarts == 0:
                            f.close()
                            partial.unlink(missing_ok=True)
                            raise DigestMismatchError(f"blob {desc.digest}: content does not match its digest")
                        fresh_restarts -= 1
                    headers = {"Range": f"bytes={have}-"} if have else {}
                    start = have
                    try:
                        resp = await self._send("GET", url, _scope(repo), headers)
                        paced = _Paced(resp, self.limits, f"blob {desc.digest}")
                        try:
                            if have and not (resp.status_code == 206 and _range_start(resp) == have):
                                restart()
                            while chunk := await paced.read():
                                if have + len(chunk) > desc.size:
                                    restart()
                                    raise _TooLong()
                                f.write(chunk)
                                hasher.update(chunk)
                                have += len(chunk)
                                if tail is not None:
                                    f.flush()
                                    tail.advance(have)
                                if progress:
                                    progress(have)
                        finally:
                            await paced.close()
                            await resp.aclose()
                    except _TooLong:
                        if fresh_restarts == 0:
                            f.close()
                            partial.unlink(missing_ok=True)
                            raise DigestMismatchError(f"blob {desc.digest} is larger than {desc.size} bytes") from None
                        fresh_restarts -= 1
                        continue
                    except _Stalled as e:  # progress does not reset this count: a trickle must end
                        stalls += 1
                        if stalls >= self.retry.attempts:
                            raise RegistryTimeoutError(
                                f"{self.registry.host}: download of {desc.digest} stalled: {e}"
                            ) from None
                        continue
                    except httpx.TransportError as e:
                        failures = 1 if have > start else failures + 1  # progress resets the count
                        if failures >= self.retry.attempts:
                            raise RegistryError(
                                f"{self.registry.host}: download of {desc.digest} failed: {type(e).__name__}: {e}"
                            ) from e
                        await asyncio.sleep(self.retry.delay(failures))
                        continue
                    except httpx.HTTPError as e:
                        raise RegistryError(
                            f"{self.registry.host}: download of {desc.digest} failed: {type(e).__name__}: {e}"
                        ) from e
                    if have < desc.size:  # clean EOF but short: count as a broken transfer
                        failures = 1 if have > start else failures + 1
                        if failures >= self.retry.attempts:
                            raise RegistryError(
                                f"{self.registry.host}: {desc.digest} ended after {have} of {desc.size} bytes"
                            )
                        await asyncio.sleep(self.retry.delay(failures))
        finally:
            if tail is not None:
                tail.abort()  # no-op once finished


class TailAborted(Exception):
    """The download a :class:`BlobTail` follows threw bytes away, failed or was cancelled."""


class BlobTail:
    """Reads a blob from another thread while :meth:`RegistryClient.download_blob` writes it.

    :meth:`read` returns only bytes already written, and its end (``b""``) only once the whole
    blob has been verified against its digest; once aborted (before the download truncates
    what it wrote, or when it fails) every read raises :class:`TailAborted`, so whatever was
    made from the bytes read is thrown away. Aborting is final: a tail that ended was never
    aborted, so every byte it returned is part of the verified blob.
    """

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._fd: int | None = None
        self._have = 0
        self._pos = 0
        self._finished = False
        self._aborted = False

    # -- writer side (the downloading coroutine) --------------------------------------
    def open(self, path: Path) -> None:
        """Open the partial file for reading (before it can be renamed into the store)."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        with self._cv:
            if self._fd is None and not self._aborted:
                self._fd, fd = fd, -1
        if fd >= 0:
            os.close(fd)

    def advance(self, have: int) -> None:
        """The first ``have`` bytes are written (and flushed to the file)."""
        with self._cv:
            self._have = have
            self._cv.notify_all()

    def finish(self, size: int) -> None:
        """The blob is complete and verified: ``size`` bytes."""
        with self._cv:
            if not self._aborted:
                self._have, self._finished = size, True
            self._cv.notify_all()

    def abort(self) -> None:
        with self._cv:
            if not self._finished:
                self._aborted = True
            self._cv.notify_all()

    # -- reader side (one thread) ------------------------------------------------------
    interrupt = abort  # the reader gives up: the download goes on, unaffected

    def read(self, n: int = -1, /) -> bytes:
        with self._cv:
            while not self._aborted and not self._finished and self._pos >= self._have:
                self._cv.wait()
            if self._aborted or self._fd is None:
                raise TailAborted("the download was restarted, failed or was cancelled")
            fd, pos, avail = self._fd, self._pos, self._have - self._pos
        if avail <= 0:
            return b""
        data = os.pread(fd, avail if n < 0 else min(n, avail), pos)
        if not data:
            raise TailAborted("the partial download shrank")
        with self._cv:
            self._pos += len(data)
        return data

    def close(self) -> None:
        """Close the reading fd (once the reader is done)."""
        with self._cv:
            fd, self._fd = self._fd, None
            self._aborted = self._aborted or not self._finished
        if fd is not None:
            os.close(fd)


class _TooLong(Exception):
    pass


class _Stalled(Exception):
    """A body arrived slower than the minimum speed."""


class _Paced:
    """Reads a streaming response's raw body, raising :class:`_Stalled` when fewer than
    ``min_speed * speed_window`` bytes arrive in any window (a slow-loris server)."""

    def __init__(self, resp: httpx.Response, limits: ImageLimits, what: str) -> None:
        self._it = resp.aiter_raw().__aiter__()
        self._what = what
        self._window = limits.speed_window if limits.min_speed else 0.0
        self._need = limits.min_speed * self._window
        self._loop = asyncio.get_running_loop()
        self._end = self._loop.time() + self._window
        self._got = 0
        self._pending: asyncio.Future[bytes] | None = None

    async def read(self) -> bytes:
        """The next chunk; b"" at the end of the body."""
        if not self._window:
            try:
                return await self._it.__anext__()
            except StopAsyncIteration:
                return b""
        while True:
            if self._pending is None:
                self._pending = asyncio.ensure_future(self._it.__anext__())
            await asyncio.wait({self._pending}, timeout=max(0.0, self._end - self._loop.time()))
            chunk: bytes | None = None
            if self._pending.done():
                task, self._pending = self._pending, None
                try:
                    chunk = task.result()
                except StopAsyncIteration:
                    return b""
                self._got += len(chunk)
            now = self._loop.time()
            if now >= self._end:
                if self._got < self._need:
                    raise _Stalled(
                        f"{self._what}: {self._got} bytes in {self._window:g} s, less than "
                        f"{self._need / self._window:g} B/s"
                    )
                self._got, self._end = 0, now + self._window
            if chunk is not None:
                return chunk

    async def close(self) -> None:
        """Cancel a read still waiting (the response is closed by the caller)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
            await asyncio.wait({pending})
            if not pending.cancelled():
                pending.exception()  # retrieved: no "never retrieved" warning


class _LazyCAContext(ssl.SSLContext):
    """A verifying client context (``PROTOCOL_TLS_CLIENT``: certificate and host name checked)
    whose CA store is loaded on its first TLS connection, not when a client is made: loading it
    costs 30-60 ms, and a pull from a plain-HTTP registry usually never makes a TLS connection
    (only a token realm or a blob redirect to https would). The CA locations are httpx's:
    ``$SSL_CERT_FILE``, ``$SSL_CERT_DIR``, else certifi's bundle."""

    _ca_loaded = False

    def _load_ca(self) -> None:
        with _CA_LOCK:
            if self._ca_loaded:
                return
            if os.environ.get("SSL_CERT_FILE"):
                self.load_verify_locations(cafile=os.environ["SSL_CERT_FILE"])
            elif os.environ.get("SSL_CERT_DIR"):
                self.load_verify_locations(capath=os.environ["SSL_CERT_DIR"])
            else:
                import certifi

                self.load_verify_locations(cafile=certifi.where())
            self._ca_loaded = True

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        self._load_ca()
        return super().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        self._load_ca()
        return super().wrap_bio(*args, **kwargs)


_CA_LOCK = threading.Lock()
_VERIFYING_CONTEXT: ssl.SSLContext | None = None


def _tls_context(registry: ImageRegistry) -> ssl.SSLContext | bool:
    """One verifying context per process (its CA store loaded on first use), or no verification.

    Plain-HTTP registries get it too: their token realm or blob redirects may be https.
    """
    global _VERIFYING_CONTEXT
    if registry.skip_verify:
        return False
    if _VERIFYING_CONTEXT is None:
        _VERIFYING_CONTEXT = _LazyCAContext(ssl.PROTOCOL_TLS_CLIENT)
    return _VERIFYING_CONTEXT


def _is_permanent(e: BaseException) -> bool:
    """True when retrying cannot help: TLS handshake/verification failures, and DNS failures
    (the resolver retries itself; failing fast matters when the host is offline)."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, (ssl.SSLError, socket.gaierror)):
            return True
        if "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _scope(repo: str) -> str:
    return f"repository:{repo}:pull"


def _range_start(resp: httpx.Response) -> int | None:
    cr = resp.headers.get("content-range", "")  # "bytes 100-199/200"
    try:
        return int(cr.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _hash_existing(partial: Path, size: int) -> tuple[hashlib._Hash, int]:
    hasher = hashlib.sha256()
    try:
        with open(partial, "rb") as f:
            have = 0
            while chunk := f.read(1 << 20):
                hasher.update(chunk)
                have += len(chunk)
    except FileNotFoundError:
        return hasher, 0
    if have > size:
        os.truncate(partial, 0)
        return hashlib.sha256(), 0
    return hasher, have
