"""Helpers of the BrowserBox tests: the cached browser image, a page server inside the box,
npm's ``puppeteer-core`` installed once into the test cache (CI needs ``nodejs``/``npm``)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support.images import CACHE

PUPPETEER_VERSION = "25.16.0"
PAGE_PORT = 8000


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def browser_rootfs() -> Path:
    """The BrowserBox image, built once into the test cache (``recipes/browser``)."""
    from boxlite.images.recipes import ensure_recipe

    return ensure_recipe("browser", CACHE / "recipes")


def seed_home_images(home: Path) -> None:
    """Point a runtime home's image cache at the test cache, so a BrowserBox built "on first
    use" there finds the image built once per machine instead of rebuilding it (a minute)."""
    browser_rootfs()
    images = home / "images"
    images.mkdir(parents=True, exist_ok=True)
    link = images / "browser"
    if not link.exists():
        link.symlink_to(CACHE / "recipes" / "browser")


def puppeteer_dir() -> Path:
    """A directory with ``node_modules/puppeteer-core`` (npm install once, under a lock)."""
    npm = shutil.which("npm")
    assert npm is not None, "the Puppeteer test needs npm (apt-get install npm)"
    dest = CACHE / f"npm-puppeteer-{PUPPETEER_VERSION}"
    with _lock(CACHE / "npm-puppeteer.lock"):
        if not (dest / "node_modules" / "puppeteer-core" / "package.json").is_file():
            dest.mkdir(parents=True, exist_ok=True)
            (dest / "package.json").write_text(json.dumps({"name": "boxlite-test-puppeteer", "private": True}))
            subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", f"puppeteer-core@{PUPPETEER_VERSION}"],
                cwd=dest,
                check=True,
                capture_output=True,
                timeout=600,
                env={**os.environ, "PUPPETEER_SKIP_DOWNLOAD": "1"},
            )
    return dest


PUPPETEER_SCRIPT = """
const puppeteer = require('puppeteer-core');
(async () => {
  const browser = await puppeteer.connect({browserWSEndpoint: process.argv[2], protocolTimeout: 600000});
  const page = await browser.newPage();
  await page.goto(process.argv[3], {timeout: 600000});
  console.log(JSON.stringify({title: await page.title(), text: await page.$eval('h1', e => e.textContent)}));
  await page.close();
  browser.disconnect();
})().catch(e => { console.error(e); process.exit(1); });
"""


def run_puppeteer(endpoint: str, url: str, timeout: float) -> dict[str, str]:
    """Open ``url`` through Puppeteer connected to ``endpoint``; its title and <h1> text."""
    node = shutil.which("node")
    assert node is not None, "the Puppeteer test needs nodejs"
    workdir = puppeteer_dir()
    script = workdir / "title.js"
    script.write_text(PUPPETEER_SCRIPT)
    proc = subprocess.run(
        [node, str(script), endpoint, url], cwd=workdir, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, str] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


PAGE_SERVER = (
    "import http.server, functools, sys\n"
    "h = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])\n"
    "http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[2])), h).serve_forever()\n"
)


def page_html(title: str, heading: str) -> str:
    return (
        f"<!doctype html><html><head><title>{title}</title></head>"
        "<body style='font-family:sans-serif;background:#f4f7fb;margin:40px'>"
        f"<h1 style='color:#1d4ed8'>{heading}</h1>"
        "<p>Served inside a BoxLite box, rendered by the box's headless Chromium, "
        "driven from the host over CDP.</p></body></html>"
    )
