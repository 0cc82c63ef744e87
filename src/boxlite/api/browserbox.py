"""``BrowserBox``: a headless Chromium in a box, driven from the host over CDP or Playwright.

The image is built offline from Debian packages (``images/recipes/browser.py``) on first use,
unless ``image=``/``rootfs_path=`` names another one (it needs python3 and a Chromium). The
browser starts lazily, on the first ``endpoint()`` / ``playwright_endpoint()``, as the box's
unprivileged user 1000. Both endpoints are published on the host's loopback only and are
capability URLs: the CDP one passes the box's gate (``browsergate.py``) only with the browser's
random websocket path, the Playwright one only with a random ``wsPath``. Chromium's own sandbox
is off (boxes have no user namespaces for it): the box is the sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shlex
import socket
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ExecError, ImageError, TimeoutError, UnsupportedOptionError
from .execution import Execution
from .later import BrowserBoxOptions
from .runtime import Boxlite
from .simplebox import SimpleBox

CDP_PORT = 9222
"""Box port of the CDP gate (BoxLite's CDP port); Chromium itself listens on a random loopback port."""
PLAYWRIGHT_PORT = 3000
"""Box port of the Playwright server (BoxLite's ``BROWSERBOX_PORT``)."""
BROWSER_USER = "1000:1000"
GATE_USER = "65534:65534"
WORK_DIR = "/tmp/boxlite-browser"
PROFILE_DIR = f"{WORK_DIR}/profile"
CHROMIUM_LOG = f"{WORK_DIR}/chromium.log"
PLAYWRIGHT_LOG = f"{WORK_DIR}/playwright.log"
DRIVER_MOUNT = "/opt/boxlite/playwright"
LOG_TAIL_BYTES = 4000
POLL_INTERVAL = 0.25
DEFAULT_TIMEOUT = 60.0

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--metrics-recording-only",
    "--password-store=basic",
)
# Where a Chromium may live in an ``image=`` override (the built image has the first).
CHROMIUM_CANDIDATES = (
    "/usr/lib/chromium/chromium",
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
    "/ms-playwright/chromium-*/chrome-linux*/chrome",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _playwright_driver() -> Path | None:
    """The host's Playwright driver (Node + playwright-core) from the PyPI package, if installed:
    mounted read-only into the box, so the server there always matches the Python client."""
    try:
        import playwright
    except ImportError:
        return None
    driver = Path(playwright.__file__).parent / "driver"
    return driver if (driver / "node").is_file() and (driver / "package" / "cli.js").is_file() else None


class BrowserBox(SimpleBox):
    """A box running headless Chromium; see the module docstring and docs/browserbox.md."""

    def __init__(
        self,
        options: BrowserBoxOptions | None = None,
        runtime: Boxlite | None = None,
        *,
        image: str | None = None,
        rootfs_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        opts = options or BrowserBoxOptions()
        if opts.browser != "chromium":
            raise UnsupportedOptionError(
                "BrowserBoxOptions.browser", f"only 'chromium' is built offline, not {opts.browser!r}"
            )
        for field_name in ("port", "cdp_port"):
            value = getattr(opts, field_name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536):
                raise ConfigError(f"BrowserBoxOptions.{field_name} must be a port number, got {value!r}")
        self._browser = opts.browser
        self._cdp_host_port = opts.cdp_port or _free_port()
        self._host_port = opts.port or _free_port()
        ports = [(self._cdp_host_port, CDP_PORT), (self._host_port, PLAYWRIGHT_PORT), *kwargs.pop("ports", [])]
        self._driver = _playwright_driver()
        volumes = list(kwargs.pop("volumes", []))
        if self._driver is not None:
            volumes.append((str(self._driver), DRIVER_MOUNT, True))
        self._build_image = image is None and rootfs_path is None
        super().__init__(
            image=image,
            rootfs_path=rootfs_path,
            memory_mib=kwargs.pop("memory_mib", opts.memory),
            cpus=kwargs.pop("cpus", opts.cpu),
            runtime=runtime,
            ports=ports,
            volumes=volumes,
            **kwargs,
        )
        self._procs: dict[str, _Proc] = {}
        self._cdp_path: str | None = None
        self._ws_path = "/" + secrets.token_urlsafe(24)
        self._lock = asyncio.Lock()
        self._pw: Any = None

    @property
    def browser(self) -> str:
        return self._browser

    async def __aenter__(self) -> BrowserBox:
        if self._box is None and self._build_image:
            from ..images.recipes import recipe_image

            runtime = self._runtime or Boxlite.default()
            self._runtime = runtime
            self._options.image = await asyncio.to_thread(recipe_image, "browser", runtime.home.root)
        await super().__aenter__()
        return self

    async def stop(self) -> None:
        if self._pw is not None:
            pw, self._pw = self._pw, None
            with contextlib.suppress(Exception):
                await pw.stop()
        for proc in self._procs.values():
            proc.waiter.cancel()
        self._procs.clear()
        self._cdp_path = None
        await super().stop()

    # --- endpoints --------------------------------------------------------------------------
    async def endpoint(self, timeout: float = DEFAULT_TIMEOUT) -> str:
        """The CDP websocket URL (``ws://127.0.0.1:<port>/devtools/browser/<id>``) for Puppeteer's
        ``connect`` or Playwright's ``connect_over_cdp``; starts Chromium on first use."""
        async with self._lock:
            if self._cdp_path is None or not self._alive("chromium") or not self._alive("gate"):
                self._cdp_path = await self._start_chromium(timeout)
        return f"ws://127.0.0.1:{self._cdp_host_port}{self._cdp_path}"

    async def playwright_endpoint(self, timeout: float = DEFAULT_TIMEOUT) -> str:
        """The websocket URL of a Playwright server in the box (``browser_type.connect``), using
        the box's Chromium; needs the PyPI ``playwright`` package on the host (same version)."""
        async with self._lock:
            if not self._alive("playwright"):
                await self._start_playwright(timeout)
        return f"ws://127.0.0.1:{self._host_port}{self._ws_path}"

    async def connect(self, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """A Playwright ``Browser`` connected to :meth:`playwright_endpoint` (closed with the box)."""
        ws = await self.playwright_endpoint(timeout)
        try:
            from playwright.async_api import async_playwright
        except ImportError:
            raise UnsupportedOptionError(
                "BrowserBox.connect", "needs the 'playwright' package (pip install playwright)"
            ) from None
        if self._pw is None:
            self._pw = await async_playwright().start()
        return await self._pw.chromium.connect(ws, timeout=timeout * 1000)

    # --- internals --------------------------------------------------------------------------
    def _alive(self, role: str) -> bool:
        proc = self._procs.get(role)
        return proc is not None and not proc.waiter.done()

    async def _spawn(self, role: str, script: str, user: str = BROWSER_USER) -> _Proc:
        """Run ``sh -c script`` as ``user``, in the background (output goes to files)."""
        old = self._procs.pop(role, None)
        if old is not None:
            await old.kill()
        env = {"HOME": WORK_DIR, "XDG_CONFIG_HOME": f"{WORK_DIR}/config", "XDG_CACHE_HOME": f"{WORK_DIR}/cache"}
        execution = await self.box.exec("sh", ["-c", script], env=env, user=user, stdin=False)
        proc = self._procs[role] = _Proc(execution, asyncio.ensure_future(execution.wait()))
        return proc

    async def _log_tail(self, path: str) -> str:
        try:
            result = await self.exec(
                "sh", "-c", f"tail -c {LOG_TAIL_BYTES} {shlex.quote(path)} 2>/dev/null", timeout=30
            )
        except ExecError as e:
            return f"(log unavailable: {e})"
        return result.stdout.strip()

    async def _wait_ready(self, proc: _Proc, probe: str, what: str, log: str, timeout: float) -> str:
        """Poll ``sh -c probe`` until it prints something; fail fast with the log tail if the
        process exits first, and kill it after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            if proc.waiter.done():
                code = proc.exit_code()
                raise ExecError(what, code, f"exited before it listened; log: {await self._log_tail(log)}")
            left = deadline - time.monotonic()
            if left <= 0:
                await proc.kill()
                raise TimeoutError(f"{what} did not listen within {timeout:g}s; log: {await self._log_tail(log)}")
            try:
                result = await self.exec("sh", "-c", probe, user=BROWSER_USER, timeout=max(1.0, min(left, 30.0)))
            except ExecError:
                # A probe that could not start (a box starved by a starting browser under TCG
                # can exceed the agent's start deadline) says nothing: poll again until ours.
                result = None
            if result is not None and result.exit_code == 0 and result.stdout.strip():
                return result.stdout.strip()
            await asyncio.wait([proc.waiter], timeout=max(0.0, min(POLL_INTERVAL, deadline - time.monotonic())))

    async def _find_chromium(self) -> str:
        globs = " ".join(CHROMIUM_CANDIDATES)
        result = await self.exec(
            "sh", "-c", f'for f in {globs}; do [ -x "$f" ] && echo "$f" && break; done', timeout=30
        )
        path = result.stdout.strip()
        if not path:
            raise ImageError(f"no Chromium in the box's image (looked at {', '.join(CHROMIUM_CANDIDATES)})")
        return path

    async def _start_chromium(self, timeout: float) -> str:
        chromium = await self._find_chromium()
        flags = " ".join(CHROMIUM_FLAGS)
        script = (
            f"mkdir -p {WORK_DIR} && rm -rf {PROFILE_DIR} && "
            f"exec {shlex.quote(chromium)} {flags} --remote-debugging-port=0 --user-data-dir={PROFILE_DIR} "
            f"about:blank >{CHROMIUM_LOG} 2>&1"
        )
        proc = await self._spawn("chromium", script)
        port_file = f"{PROFILE_DIR}/DevToolsActivePort"
        active = await self._wait_ready(
            proc, f"test -s {port_file} && cat {port_file}", "chromium", CHROMIUM_LOG, timeout
        )
        lines = active.split()
        if len(lines) < 2 or not lines[1].startswith("/devtools/browser/"):
            raise ExecError("chromium", 0, f"unexpected DevToolsActivePort: {active[:200]!r}")
        await self._start_gate(int(lines[0]), lines[1], timeout)
        return lines[1]

    async def _start_gate(self, cdp_port: int, cdp_path: str, timeout: float) -> None:
        """(Re)start the gate in front of this Chromium's port and path, as ``nobody``."""
        source = (Path(__file__).parent / "browsergate.py").read_text()
        gate_dir = f"/tmp/boxlite-gate-{secrets.token_hex(8)}"  # fresh: nothing Chromium's user prepared
        script = (
            f"mkdir -m 755 {gate_dir} && printf %s {shlex.quote(source)} >{gate_dir}/gate.py && "
            f"exec python3 {gate_dir}/gate.py {CDP_PORT} {cdp_port} {shlex.quote(cdp_path)} >{gate_dir}/log 2>&1"
        )
        proc = await self._spawn("gate", script, user=GATE_USER)
        probe = f"grep -q listening {gate_dir}/log && echo up"
        await self._wait_ready(proc, probe, "the CDP gate", f"{gate_dir}/log", timeout)

    async def _start_playwright(self, timeout: float) -> None:
        if self._driver is None:
            raise UnsupportedOptionError(
                "BrowserBox.playwright_endpoint",
                "needs the 'playwright' package on the host (its driver runs the server in the box)",
            )
        chromium = await self._find_chromium()
        config = {
            "executablePath": chromium,
            "headless": True,
            "chromiumSandbox": False,
            "args": [f for f in CHROMIUM_FLAGS if f not in ("--headless", "--no-sandbox")],
            "host": "0.0.0.0",
            "port": PLAYWRIGHT_PORT,
            "wsPath": self._ws_path,
        }
        script = (
            f"mkdir -p {WORK_DIR} && umask 077 && "
            f"printf %s {shlex.quote(json.dumps(config))} >{WORK_DIR}/playwright.json && "
            f"PLAYWRIGHT_SKIP_VALIDATE_HOST_REQUIREMENTS=1 exec {DRIVER_MOUNT}/node {DRIVER_MOUNT}/package/cli.js "
            f"launch-server --browser chromium --config {WORK_DIR}/playwright.json >{PLAYWRIGHT_LOG} 2>&1"
        )
        proc = await self._spawn("playwright", script)
        await self._wait_ready(
            proc, f"grep -q '^ws://' {PLAYWRIGHT_LOG} && echo up", "the Playwright server", PLAYWRIGHT_LOG, timeout
        )


class _Proc:
    """A background process of the box and the task waiting for its exit."""

    def __init__(self, execution: Execution, waiter: asyncio.Future[Any]) -> None:
        self.execution = execution
        self.waiter = waiter

    def exit_code(self) -> int:
        if self.waiter.cancelled() or self.waiter.exception() is not None:
            return -1
        code = self.waiter.result().exit_code
        return -1 if code is None else int(code)

    async def kill(self) -> None:
        with contextlib.suppress(Exception):
            await self.execution.kill()
        self.waiter.cancel()
