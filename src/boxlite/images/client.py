"""OCI distribution v2 client for one registry: manifests and resumable, verified blobs."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import httpx

from ..errors import AuthenticationError, DigestMismatchError, ImageNotFoundError, RegistryError
from .auth import Authenticator
from .manifest import ACCEPT, Descriptor
from .reference import DOCKER_HUB
from .registry_config import ImageRegistry, docker_credentials
from .retry import RetryPolicy

MAX_MANIFEST = 4 << 20
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def api_host(host: str) -> str:
    """The host serving the v2 API (Docker Hub's API lives on registry-1.docker.io)."""
    return "registry-1.docker.io" if host == DOCKER_HUB else host


class RegistryClient:
    """Talks to one registry host; use as an async context manager."""

    def __init__(self, registry: ImageRegistry, retry: RetryPolicy | None = None,
                 timeout: float = 60.0) -> None:
        self.registry = registry
        self.retry = retry or RetryPolicy()
        creds: tuple[str, str] | None = None
        if registry.username is not None and registry.password is not None:
            creds = (registry.username, registry.password)
        else:
            creds = docker_credentials(registry.host)
        self.auth = Authenticator(creds, registry.bearer_token)
        self.base = f"{registry.transport}://{api_host(registry.host)}/v2"
        self.http = httpx.AsyncClient(
            verify=_tls_context(registry), follow_redirects=True,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0)),
            headers={"User-Agent": "boxlite"},
        )

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _send(self, method: str, url: str, scope: str,
                    headers: dict[str, str] | None = None) -> httpx.Response:
        """Send with auth and retries; returns an open streaming response (status < 400)."""
        authed = False
        attempt = 0
        while True:
            h = {**(headers or {}), **self.auth.header(scope)}
            try:
                resp = await self.http.send(self.http.build_request(method, url, headers=h),
                                            stream=True)
            except httpx.TransportError as e:
                attempt += 1
                if attempt >= self.retry.attempts or _is_permanent(e):
                    hint = ""
                    if "WRONG_VERSION_NUMBER" in str(e):
                        hint = (" (a plain-HTTP registry? declare it with "
                                f"ImageRegistry({self.registry.host!r}, transport='http'))")
                    raise RegistryError(f"{self.registry.host}: {type(e).__name__}: {e}{hint}"
                                        ) from e
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
                    "credentials, or no such repository)", status)
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
        for attempt in range(1, self.retry.attempts + 1):
            resp = await self._send("GET", url, _scope(repo), {"Accept": ACCEPT})
            try:
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_MANIFEST:
                        raise RegistryError(f"manifest {repo}:{reference} is too large")
                break
            except httpx.TransportError as e:
                if attempt >= self.retry.attempts:
                    raise RegistryError(f"{self.registry.host}: manifest download failed: "
                                        f"{e}") from e
                await asyncio.sleep(self.retry.delay(attempt))
            except httpx.HTTPError as e:
                raise RegistryError(f"{self.registry.host}: manifest download failed: {e}") from e
            finally:
                await resp.aclose()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise DigestMismatchError(f"manifest {repo}@{reference} has digest {digest}")
        return bytes(body), resp.headers.get("content-type", ""), digest

    async def download_blob(self, repo: str, desc: Descriptor, partial: Path,
                            progress: Callable[[int], None] | None = None) -> None:
        """Make ``partial`` hold the verified content of ``desc``.

        Resumes from an existing ``partial`` with a Range request, retries broken transfers,
        and restarts once from zero when the finished content does not match the digest.
        Raises DigestMismatchError (and removes ``partial``) when it still does not match.
        """
        url = f"{self.base}/{repo}/blobs/{desc.digest}"
        hasher, have = _hash_existing(partial, desc.size)
        fresh_restarts = 1
        failures = 0
        with open(partial, "ab") as f:
            while True:
                if have == desc.size:
                    if "sha256:" + hasher.hexdigest() == desc.digest:
                        f.flush()
                        os.fsync(f.fileno())
                        return
                    f.truncate(0)
                    hasher, have = hashlib.sha256(), 0
                    if fresh_restarts == 0:
                        f.close()
                        partial.unlink(missing_ok=True)
                        raise DigestMismatchError(f"blob {desc.digest}: content does not match "
                                                  "its digest")
                    fresh_restarts -= 1
                headers = {"Range": f"bytes={have}-"} if have else {}
                start = have
                try:
                    resp = await self._send("GET", url, _scope(repo), headers)
                    try:
                        if have and not (resp.status_code == 206 and _range_start(resp) == have):
                            f.truncate(0)
                            hasher, have = hashlib.sha256(), 0
                        async for chunk in resp.aiter_bytes():
                            if have + len(chunk) > desc.size:
                                f.truncate(0)
                                hasher, have = hashlib.sha256(), 0
                                raise _TooLong()
                            f.write(chunk)
                            hasher.update(chunk)
                            have += len(chunk)
                            if progress:
                                progress(have)
                    finally:
                        await resp.aclose()
                except _TooLong:
                    if fresh_restarts == 0:
                        f.close()
                        partial.unlink(missing_ok=True)
                        raise DigestMismatchError(
                            f"blob {desc.digest} is larger than {desc.size} bytes") from None
                    fresh_restarts -= 1
                    continue
                except httpx.TransportError as e:
                    failures = 1 if have > start else failures + 1  # progress resets the count
                    if failures >= self.retry.attempts:
                        raise RegistryError(f"{self.registry.host}: download of {desc.digest} "
                                            f"failed: {type(e).__name__}: {e}") from e
                    await asyncio.sleep(self.retry.delay(failures))
                    continue
                except httpx.HTTPError as e:
                    raise RegistryError(f"{self.registry.host}: download of {desc.digest} "
                                        f"failed: {type(e).__name__}: {e}") from e
                if have < desc.size:  # clean EOF but short: count as a broken transfer
                    failures = 1 if have > start else failures + 1
                    if failures >= self.retry.attempts:
                        raise RegistryError(f"{self.registry.host}: {desc.digest} ended after "
                                            f"{have} of {desc.size} bytes")
                    await asyncio.sleep(self.retry.delay(failures))


class _TooLong(Exception):
    pass


_VERIFYING_CONTEXT: ssl.SSLContext | None = None


def _tls_context(registry: ImageRegistry) -> ssl.SSLContext | bool:
    """One verifying context per process (loading CA certificates is slow), or no verification.

    Plain-HTTP registries get it too: their token realm or blob redirects may be https.
    """
    global _VERIFYING_CONTEXT
    if registry.skip_verify:
        return False
    if _VERIFYING_CONTEXT is None:
        _VERIFYING_CONTEXT = httpx.create_ssl_context()
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
