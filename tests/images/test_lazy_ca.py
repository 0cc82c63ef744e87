"""The registry client's verifying TLS context loads its CA store on the first TLS connection:
a pull from a plain-HTTP registry pays nothing for TLS, an https pull is verified as before."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from tests.images.conftest import Registry

from boxlite.errors import RegistryError
from boxlite.images import ImageManager, ImageRegistry
from boxlite.images import client as registry_client

MM = Callable[..., ImageManager]


@pytest.fixture(autouse=True)
def fresh_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without the process's shared context (another test may have loaded it)."""
    monkeypatch.setattr(registry_client, "_VERIFYING_CONTEXT", None)


async def test_plain_http_pull_loads_no_ca_store(registry: Registry, make_manager: MM) -> None:
    await make_manager(registry.config()).pull(registry.busybox)
    ctx = registry_client._VERIFYING_CONTEXT
    assert ctx is not None  # the client got the verifying context (a redirect to https would use it)
    assert ctx.cert_store_stats()["x509_ca"] == 0  # ... but never loaded a CA


async def test_https_pull_is_verified_against_the_lazily_loaded_store(
    tls_registry: Registry, make_manager: MM, monkeypatch: pytest.MonkeyPatch
) -> None:
    strict = make_manager(ImageRegistry(tls_registry.host))
    with pytest.raises(RegistryError, match=r"(?i)certificate|ssl"):  # certifi's CAs: self-signed refused
        await strict.pull(tls_registry.busybox)
    ctx = registry_client._VERIFYING_CONTEXT
    assert ctx is not None and ctx.cert_store_stats()["x509_ca"] > 0

    monkeypatch.setattr(registry_client, "_VERIFYING_CONTEXT", None)
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_registry.server.workdir / "tls.crt"))  # httpx's variable
    trusted = make_manager(ImageRegistry(tls_registry.host), home=strict.home.parent / "trusted")
    assert (await trusted.pull(tls_registry.busybox)).reference == tls_registry.busybox
