"""Fixtures for the images tests: local registries (plain, htpasswd, token), fault proxy."""

from __future__ import annotations

import dataclasses
import inspect
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
for p in (str(ROOT), str(ROOT / "src")):
    if p not in sys.path:
        sys.path.insert(0, p)

from tests.support.images import busybox_layout, python_layout  # noqa: E402
from tests.support.registry import RegistryServer, start_registry  # noqa: E402
from tests.support.registry_proxy import FaultProxy  # noqa: E402

from boxlite.images import ImageManager, ImageRegistry  # noqa: E402
from boxlite.images.retry import RetryPolicy  # noqa: E402


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        fn = getattr(item, "function", None)
        if fn and inspect.iscoroutinefunction(fn) and here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.asyncio)


@dataclass
class Registry:
    """A started registry with the test images pushed."""

    server: RegistryServer
    busybox: str
    python: str | None

    @property
    def host(self) -> str:
        return self.server.host

    def config(self, **kw: object) -> ImageRegistry:
        return ImageRegistry(
            self.host, transport="http", username=self.server.username, password=self.server.password, **kw
        )  # type: ignore[arg-type]


def _start(tmp: Path, auth: str | None, with_python: bool, tls: bool = False) -> Iterator[Registry]:
    server = start_registry(tmp, auth, tls)
    try:
        bb = server.push_layout(busybox_layout(), "library/busybox")
        server.push_layout(busybox_layout(), "busybox")
        py = server.push_layout(python_layout(), "python") if with_python else None
        yield Registry(server, bb, py)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """Registry without auth, holding busybox (``library/busybox`` and ``busybox``) + python."""
    yield from _start(tmp_path_factory.mktemp("reg-plain"), None, True)


@pytest.fixture(scope="session")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """Registry with htpasswd (bcrypt) basic auth, holding busybox."""
    yield from _start(tmp_path_factory.mktemp("reg-basic"), "htpasswd", False)


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """Registry with token auth (tiny token server; anonymous pull allowed), holding busybox."""
    yield from _start(tmp_path_factory.mktemp("reg-token"), "token", False)


@pytest.fixture(scope="session")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """HTTPS registry with a self-signed certificate (no auth), holding busybox."""
    yield from _start(tmp_path_factory.mktemp("reg-tls"), None, False, tls=True)


@pytest.fixture
def proxy(registry: Registry) -> Iterator[FaultProxy]:
    """Fault-injecting proxy in front of ``registry``."""
    p = FaultProxy(registry.host)
    yield p
    p.stop()


FAST_RETRY = RetryPolicy(attempts=5, base_delay=0.01, max_delay=0.05)


@pytest.fixture
def make_manager(tmp_path: Path) -> Callable[..., ImageManager]:
    """``make_manager(*registries, home=None, uid_base=100000)`` with fast retries."""

    def make(*registries: ImageRegistry, home: Path | None = None, uid_base: int = 100000) -> ImageManager:
        m = ImageManager(home or tmp_path / "home", list(registries), uid_base)
        m.retry = dataclasses.replace(FAST_RETRY)  # a copy: tests may tune it
        return m

    return make


@pytest.fixture
def python_layout_dir() -> Path:
    return python_layout()
