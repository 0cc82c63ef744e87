"""BrowserBox on both engines: the box's Chromium driven from the host by Playwright for Python
(over CDP and through the Playwright server in the box) and by Puppeteer from Node; its CDP
port only on the host's loopback and only for the endpoint's secret path; Chromium as a
non-root user; a Chromium that crashes or never listens fails fast with its log."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import boxlite
from boxlite.api import browsergate
from boxlite.api.browserbox import BrowserBox
from support.browser import PAGE_PORT, PAGE_SERVER, browser_rootfs, page_html, run_puppeteer, seed_home_images

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # VM under TCG: Chromium's first start takes minutes
REPO = Path(__file__).resolve().parents[2]
# Chromium's first start under TCG takes minutes on a loaded 2-core machine.
TIMEOUT = {"namespace": 120.0, "vm": 900.0}


async def serve_page(bb: BrowserBox, title: str, heading: str) -> str:
    """Serve one page from inside the box (boxes cannot reach the host); its URL for the box."""
    write = (
        "import os, sys; os.makedirs('/tmp/site', exist_ok=True); open('/tmp/site/index.html', 'w').write(sys.argv[1])"
    )
    wrote = await bb.exec("python3", "-c", write, page_html(title, heading), user="1000")
    assert wrote.exit_code == 0, wrote.stderr
    await bb.box.exec("python3", ["-c", PAGE_SERVER, "/tmp/site", str(PAGE_PORT)], user="1000", stdin=False)
    for _ in range(200):
        probe = await bb.exec(
            "python3", "-c", f"import urllib.request as u; print(u.urlopen('http://127.0.0.1:{PAGE_PORT}/').status)"
        )
        if probe.stdout.strip() == "200":
            return f"http://127.0.0.1:{PAGE_PORT}/"
        await asyncio.sleep(0.2)
    raise AssertionError(f"page server never answered: {probe.stderr[-500:]}")


def listening_addresses(port: int) -> set[str]:
    """Local addresses of host sockets listening on TCP ``port`` (hex, as /proc/net/tcp has them)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.rsplit(":", 1)
            if state == "0A" and int(hexport, 16) == port:
                found.add(addr)
    return found


async def test_playwright_and_puppeteer_drive_the_box_chromium(runtime: boxlite.Boxlite, engine: str) -> None:
    """Built on first use (from the seeded cache); Playwright over CDP, Puppeteer from Node and
    Playwright through the box's Playwright server read the title of a page served in the box;
    the security properties."""
    seed_home_images(runtime.home.root)
    from playwright.async_api import async_playwright

    title = f"boxlite-{secrets.token_hex(4)}"
    async with BrowserBox(runtime=runtime) as bb:
        endpoint = await bb.endpoint(timeout=TIMEOUT[engine])
        url = await serve_page(bb, title, "Hello from a BrowserBox")
        host_port = int(endpoint.split(":")[2].split("/")[0])
        assert endpoint.startswith("ws://127.0.0.1:") and "/devtools/browser/" in endpoint
        async with async_playwright() as pw:
            browser = await pw.chromium.connect_over_cdp(endpoint, timeout=TIMEOUT[engine] * 1000)
            context = browser.contexts[0] if browser.contexts else await browser.new_context()
            page = await context.new_page()
            await page.set_viewport_size({"width": 800, "height": 360})
            await page.goto(url, timeout=TIMEOUT[engine] * 1000)
            assert await page.title() == title
            shot = await page.screenshot(timeout=TIMEOUT[engine] * 1000)
            assert shot[:8] == b"\x89PNG\r\n\x1a\n"
            if os.environ.get("BOXLITE_DOCS_SCREENSHOTS") == "1":
                (REPO / "docs" / "images").mkdir(exist_ok=True)
                (REPO / "docs" / "images" / "browserbox.png").write_bytes(shot)
            await browser.close()  # over CDP: disconnects, the box's Chromium stays up

        # Puppeteer (npm puppeteer-core, from Node on the host) on the same endpoint.
        result = await asyncio.to_thread(run_puppeteer, endpoint, url, TIMEOUT[engine] + 120)
        assert result == {"title": title, "text": "Hello from a BrowserBox"}

        # The published CDP port listens on the host's loopback only ...
        assert listening_addresses(host_port) == {"0100007F"}
        # ... and answers only the endpoint's secret path: no /json listing, no guessed ids.
        for path in ("/json/version", "/json/list", "/devtools/browser/00000000-0000-0000-0000-000000000000"):
            with pytest.raises(urllib.error.HTTPError) as denied:
                urllib.request.urlopen(f"http://127.0.0.1:{host_port}{path}", timeout=30)
            assert denied.value.code == 403

        # Chromium runs as the box's user 1000, never as root.
        owners = await bb.exec(
            "sh", "-c", "for p in /proc/[0-9]*; do grep -q ^chrom $p/comm 2>/dev/null && stat -c %u $p; done"
        )
        uids = set(owners.stdout.split())
        assert uids == {"1000"}, owners.stdout
        gate_uids = await bb.exec(
            "sh",
            "-c",
            "for p in /proc/[0-9]*; do grep -q ^python $p/comm && grep -q gate.py $p/cmdline && stat -c %u $p; done",
        )
        assert set(gate_uids.stdout.split()) == {"65534"}, gate_uids.stdout  # not killable by Chromium's user

        # The Playwright server in the box (the host driver's Node, the box's Chromium) ...
        browser = await bb.connect(timeout=TIMEOUT[engine])
        page = await browser.new_page()
        await page.goto(url, timeout=TIMEOUT[engine] * 1000)
        assert await page.title() == title
        await browser.close()
        # ... also only for its secret path.
        server = await bb.playwright_endpoint()
        assert server.startswith("ws://127.0.0.1:")
        guessed = server.rsplit("/", 1)[0] + "/"
        async with async_playwright() as pw:
            with pytest.raises(Exception, match="400"):
                await pw.chromium.connect(guessed, timeout=60_000)


def fake_chromium_rootfs(base: Path, dest: Path, script: str) -> Path:
    """``base`` (busybox) plus a "Chromium" that is the shell ``script``."""
    shutil.copytree(base, dest, symlinks=True)
    target = dest / "usr" / "bin" / "chromium"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("#!/bin/sh\n" + script)
    target.chmod(0o755)
    return dest


async def test_crashing_chromium_fails_fast_with_its_log(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, tmp_path: Path, engine: str
) -> None:
    rootfs = fake_chromium_rootfs(busybox_rootfs, tmp_path / "crash", "echo 'FATAL: chromium fell over' >&2\nexit 3\n")
    async with BrowserBox(runtime=runtime, rootfs_path=str(rootfs)) as bb:
        started = time.monotonic()
        with pytest.raises(boxlite.ExecError) as err:
            await bb.endpoint(timeout=TIMEOUT[engine])
        assert time.monotonic() - started < TIMEOUT[engine] / 2  # the exit is noticed, not waited out
    assert err.value.exit_code == 3
    assert "FATAL: chromium fell over" in str(err.value)


async def test_chromium_that_never_listens_times_out(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, tmp_path: Path, engine: str
) -> None:
    rootfs = fake_chromium_rootfs(busybox_rootfs, tmp_path / "hang", "echo 'stuck in startup'\nexec sleep 1000\n")
    limit = 8.0 if engine == "namespace" else 30.0
    async with BrowserBox(runtime=runtime, rootfs_path=str(rootfs)) as bb:
        started = time.monotonic()
        with pytest.raises(boxlite.TimeoutError) as err:
            await bb.endpoint(timeout=limit)
        elapsed = time.monotonic() - started
        assert "stuck in startup" in str(err.value)
        left = await bb.exec("sh", "-c", "ps | grep -c '[s]leep 1000'")
    assert limit <= elapsed < limit + 30
    assert left.stdout.strip() == "0"  # the hung browser was killed


async def test_other_browsers_are_refused() -> None:
    with pytest.raises(boxlite.UnsupportedOptionError):
        BrowserBox(boxlite.BrowserBoxOptions(browser="firefox"))
    with pytest.raises(boxlite.ConfigError):
        BrowserBox(boxlite.BrowserBoxOptions(cdp_port=70000))


# --- the gate (host-side unit tests of the script the box runs) ---------------------------------
@pytest.fixture
def gate() -> Iterator[tuple[int, str]]:
    """browsergate.py in a subprocess on the host, in front of a fake DevTools echo server."""
    upstream = socket.socket()
    upstream.bind(("127.0.0.1", 0))
    upstream.listen(8)

    def echo() -> None:
        while True:
            try:
                conn, _ = upstream.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"UPSTREAM:" + conn.recv(65536))

    threading.Thread(target=echo, daemon=True).start()
    path = f"/devtools/browser/{secrets.token_hex(16)}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        listen = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, browsergate.__file__, str(listen), str(upstream.getsockname()[1]), path],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and "listening" in proc.stdout.readline()
    yield listen, path
    proc.kill()
    proc.wait()
    upstream.close()


def ask(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_gate_forwards_only_the_secret_path(gate: tuple[int, str]) -> None:
    port, path = gate
    good = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\r\n".encode()
    assert ask(port, good) == b"UPSTREAM:" + good
    for bad in (
        f"GET {path}x HTTP/1.1",
        "GET /json/version HTTP/1.1",
        f"POST {path} HTTP/1.1",
        f"GET  {path} HTTP/1.1",
    ):
        assert ask(port, f"{bad}\r\nHost: x\r\n\r\n".encode()).startswith(b"HTTP/1.1 403 ")


def test_gate_bounds_request_heads(gate: tuple[int, str]) -> None:
    port, path = gate
    huge = f"GET {path} HTTP/1.1\r\nX-Pad: {'a' * (browsergate.MAX_HEAD + 10)}\r\n\r\n".encode()
    assert ask(port, huge) == b""  # dropped, not forwarded
    # A client that never finishes its head is dropped after the deadline.
    with socket.create_connection(("127.0.0.1", port), timeout=browsergate.HEAD_DEADLINE + 20) as s:
        s.sendall(b"GET / HTTP/1.1\r\n")
        started = time.monotonic()
        assert s.recv(100) == b""
        assert time.monotonic() - started < browsergate.HEAD_DEADLINE + 5


def test_images_build_cli(tmp_path: Path) -> None:
    cli = [str(Path(sys.executable).parent / "boxlite")]
    env = {**os.environ, "BOXLITE_HOME": str(tmp_path / "home")}
    bad = subprocess.run([*cli, "images", "build", "nope"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode != 0 and "unknown image recipe 'nope'" in bad.stderr
    seed_home_images(tmp_path / "home")
    ok = subprocess.run([*cli, "images", "build", "browser"], capture_output=True, text=True, env=env, timeout=600)
    assert ok.returncode == 0, ok.stderr
    ref, tree = ok.stdout.strip(), browser_rootfs()
    assert ref == f"boxlite.local/browser:{tree.name}"  # the cached build (named by its key), not a second one
    assert (tree / "usr/lib/chromium/chromium").is_file() and stat.S_IMODE(tree.stat().st_mode) == 0o755
    listed = subprocess.run([*cli, "images", "-q"], capture_output=True, text=True, env=env, timeout=120)
    assert {ref, "boxlite.local/browser:latest"} <= set(listed.stdout.split()), listed.stdout


def test_recipe_build_failure_is_an_image_error(tmp_path: Path) -> None:
    """A package apt cannot provide (as with no mirror reachable) fails the build with ImageError
    and leaves no half-built tree behind."""
    from boxlite.images.debian import ensure_keyed_rootfs

    with pytest.raises(boxlite.ImageError):
        ensure_keyed_rootfs(tmp_path, ["boxlite-no-such-package"])
    assert not (tmp_path / "rootfs").exists() or not any((tmp_path / "rootfs").iterdir())
