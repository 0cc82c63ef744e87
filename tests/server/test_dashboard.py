"""The web dashboard (``/dashboard/``) and ``/docs`` of a real ``boxlite serve`` with an API key,
driven in Debian's chromium by Playwright (no downloaded browser, nothing fetched off the host).

Screenshots of each step are kept under pytest's tmp dir (the path is printed); with
``BOXLITE_DOCS_SCREENSHOTS=1`` the dashboard one is also copied to docs/images/dashboard.png.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, sync_playwright
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

import boxlite
from rest.serverproc import API_KEY, free_port, stop_server, wait_ready
from support.images import busybox_layout

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
CHROMIUM = "/usr/bin/chromium"  # Debian's package (scripts/test.sh installs it)
IMAGE = "localhost/busybox:latest"
HOSTILE_NAME = "<img src=x onerror=window.__pwned=1>"
HOSTILE_LOG = "<script>window.__pwned=2</script><b>bold</b>"
HOSTILE_FILE = "<img src=x onerror=window.__pwned=3>.txt"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)


async def _load_busybox(home: Path) -> None:
    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home)))
    try:
        await rt.images.load(busybox_layout())  # tagged localhost/busybox:latest
    finally:
        await rt.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``boxlite serve`` on a free loopback port with an API key, busybox in its image store."""
    home = tmp_path_factory.mktemp("dash") / "home"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # sync Playwright may own this thread's loop
        pool.submit(asyncio.run, _load_busybox(home)).result()
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    env.setdefault("BOXLITE_ENGINE", os.environ.get("BOXLITE_TEST_ENGINES", "namespace").split(",")[0])
    args = ["--home", str(home), "serve", "--host", "127.0.0.1", "--port", str(port), "--api-key", API_KEY]
    proc = subprocess.Popen([sys.executable, "-m", "boxlite.cli", *args], env=env, stdin=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url)
        yield Server(url, proc)
    finally:
        stop_server(proc)  # the boxes are the server's children: they stop with it


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dashboard-screenshots")
    print(f"dashboard screenshots: {path}")
    return path


@dataclass
class Watched:
    """A browser context that refuses (and records) every request off the server's origin and
    records CSP violations and page errors."""

    context: BrowserContext
    page: Page
    external: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def csp_violations(self) -> list[str]:
        return list(self.page.evaluate("() => window.__cspViolations || []"))

    def check_clean(self) -> None:
        assert self.external == [], f"requests off the server: {self.external}"
        assert self.csp_violations() == []
        assert self.errors == []


CSP_WATCH = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation',
  (e) => window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));
"""


@pytest.fixture
def watched(browser: Browser, server: Server, shots: Path, request: pytest.FixtureRequest) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    w = Watched(context, context.new_page())

    def guard(route: Route) -> None:
        url = route.request.url
        if url.startswith(server.url + "/") or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            w.external.append(url)
            route.abort()

    context.route("**/*", guard)
    context.add_init_script(CSP_WATCH)
    w.page.on("pageerror", lambda e: w.errors.append(str(e)))
    try:
        yield w
    finally:
        try:  # how the page looked at the end (the artefact to look at when a step failed)
            w.page.screenshot(path=str(shots / f"{request.node.name}-last.png"), full_page=True)
            (shots / f"{request.node.name}-errors.txt").write_text(w.page.inner_text("body"))
        finally:
            context.close()


def wait_until(check: Callable[[], object], page: Page, timeout: float = 30.0, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        page.wait_for_timeout(100)
    raise AssertionError(f"timed out waiting for {what or check}")


def terminal_lines(page: Page) -> list[str]:
    rows = page.evaluate("() => [...document.querySelectorAll('#terminal .xterm-rows > div')].map(d => d.textContent)")
    return [r.replace("\xa0", " ").rstrip() for r in rows]


def login(page: Page, server: Server) -> None:
    page.goto(server.url + "/dashboard/")
    page.fill("#login-key", API_KEY)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#view-boxes:not([hidden])")


def stty_size(page: Page) -> tuple[int, int]:
    before = len([line for line in terminal_lines(page) if re.fullmatch(r"\d+ \d+", line)])
    page.keyboard.type("stty size\n")

    def sizes() -> list[str]:
        found = [line for line in terminal_lines(page) if re.fullmatch(r"\d+ \d+", line)]
        return found if len(found) > before else []

    rows, cols = str(wait_until(sizes, page, what="stty size output")[-1]).split()  # type: ignore[index]
    return int(rows), int(cols)


def test_dashboard_end_to_end(watched: Watched, server: Server, shots: Path, tmp_path: Path) -> None:
    page = watched.page
    # Log in: a wrong key is refused, the right one opens the boxes view; the key is in no URL.
    page.goto(server.url + "/dashboard/")
    page.fill("#login-key", "wrong-key")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#login-error:has-text('Wrong API key')")
    page.screenshot(path=str(shots / "01-login.png"))
    requested: list[str] = []
    page.on("request", lambda req: requested.append(req.url))
    page.fill("#login-key", API_KEY)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#view-boxes:not([hidden])")

    # Images view lists the stored image; "Create box" takes it to the create form.
    page.click("nav .tab[data-view=images]")
    row = page.locator("#images tbody tr", has_text=IMAGE)
    row.wait_for()
    row.locator("button[data-action=use]").click()
    assert page.input_value("#create-image") == IMAGE
    page.fill("#create-name", "dash-web")
    page.click("#create-submit")
    page.wait_for_selector("#detail:not([hidden])", timeout=60_000)
    box_row = page.locator("#boxes tbody tr", has_text="dash-web")
    box_row.locator("td", has_text="running").wait_for()

    # Terminal: a TTY shell over the exec WebSocket.
    page.click("#term-open")
    page.wait_for_selector("#term-status:has-text('connected')", timeout=30_000)
    page.click("#terminal")
    page.keyboard.type("echo hi\n")
    wait_until(lambda: "hi" in terminal_lines(page), page, what="'hi' on a line of its own")
    rows, cols = stty_size(page)
    wait_until(lambda: box_row.locator("svg.spark").count() == 2, page, what="CPU and memory sparklines")
    page.screenshot(path=str(shots / "02-terminal.png"), full_page=True)
    if os.environ.get("BOXLITE_DOCS_SCREENSHOTS") == "1":
        (ROOT / "docs" / "images").mkdir(exist_ok=True)
        shutil.copy(shots / "02-terminal.png", ROOT / "docs" / "images" / "dashboard.png")
    page.set_viewport_size({"width": 900, "height": 700})  # the terminal follows (resize message)
    page.click("#terminal")
    new_rows, new_cols = wait_until(lambda: (s := stty_size(page)) != (rows, cols) and s, page, what="resize")  # type: ignore[misc]
    assert new_cols < cols and new_rows > 0

    # Files: upload a file with a hostile name into /tmp, see it listed as text, download it back.
    page.click(".subtab[data-sub=files]")
    page.fill("#files-path", "/tmp")
    page.click("#files-form button[type=submit]")
    page.wait_for_selector("#files[data-path='/tmp']")
    local = tmp_path / HOSTILE_FILE
    content = b"uploaded through the dashboard\n" + bytes(range(256))
    local.write_bytes(content)
    page.set_input_files("#upload-file", str(local))
    page.click("#upload-submit")
    listed = page.locator("#files tbody tr", has_text=HOSTILE_FILE)
    listed.wait_for()
    assert listed.locator(".file-name").inner_text() == HOSTILE_FILE
    assert page.locator("#files img").count() == 0
    with page.expect_download() as download:
        listed.locator("button[data-action=download]").click()
    assert Path(download.value.path()).read_bytes() == content
    page.screenshot(path=str(shots / "03-files.png"), full_page=True)
    with server.api() as api:  # and it really is in the box
        r = api.get("/v1/boxes/dash-web/archive", params={"path": f"/tmp/{HOSTILE_FILE}"})
        assert r.status_code == 200 and content in r.content

    # A box whose name and output are markup, created by someone else: shown as text, no element
    # made of it, no script run (the table picks it up on its next refresh).
    with server.api() as api:
        r = api.post(
            "/v1/boxes",
            json={
                "name": HOSTILE_NAME,
                "options": {"image": IMAGE, "cmd": ["sh", "-c", f"echo '{HOSTILE_LOG}'; sleep 600"]},
            },
        )
        assert r.status_code == 201, r.text
        api.post(f"/v1/boxes/{r.json()['id']}/start").raise_for_status()
    hostile_cell = page.locator("#boxes td.box-name", has_text=HOSTILE_NAME)
    hostile_cell.wait_for()
    assert hostile_cell.inner_text() == HOSTILE_NAME
    assert page.locator("#boxes img").count() == 0
    # Its logs: the markup is text too.
    page.locator("#boxes tbody tr", has_text=HOSTILE_NAME).locator("button[data-action=open]").click()
    page.click(".subtab[data-sub=logs]")
    page.wait_for_selector(f"#logs:has-text('{HOSTILE_LOG}')")
    assert page.locator("#logs *").count() == 0
    assert page.inner_text("#detail-name") == HOSTILE_NAME
    page.screenshot(path=str(shots / "04-logs.png"), full_page=True)

    assert page.evaluate("() => window.__pwned") is None
    assert not [u for u in requested if API_KEY in u]
    watched.check_clean()


def test_docs_are_bundled_and_behind_the_key(watched: Watched, server: Server, shots: Path) -> None:
    page = watched.page
    response = page.goto(server.url + "/docs")
    assert response is not None and response.status == 401
    assert page.locator("#swagger-ui").count() == 0
    login(page, server)
    response = page.goto(server.url + "/docs")
    assert response is not None and response.status == 200
    page.wait_for_selector(".swagger-ui .info .title:has-text('BoxLite')", timeout=60_000)
    page.locator(".opblock-summary-path", has_text="/v1/boxes").first.wait_for()
    page.screenshot(path=str(shots / "05-docs.png"), full_page=False)
    # "Try it out" goes through the session (Swagger UI sends the CSRF token).
    op = page.locator("#operations-images-nativeListImages")
    op.locator(".opblock-summary").click()
    op.locator("button.try-out__btn").click()
    op.locator("button.execute").click()
    op.locator(".live-responses-table .response-col_status", has_text="200").wait_for()
    assert IMAGE in op.locator(".live-responses-table tbody .response-col_description").first.inner_text()
    watched.check_clean()
    with httpx.Client(base_url=server.url) as client:  # FastAPI's CDN pages stay off
        assert client.get("/redoc").status_code in (401, 404)
        assert client.get("/docs", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200


def _login(client: httpx.Client) -> str:
    r = client.post("/dashboard/login", json={"key": API_KEY})
    assert r.status_code == 200, r.text
    assert API_KEY not in r.text and API_KEY not in str(r.headers)
    return str(r.json()["csrf"])


def test_session_rules(server: Server) -> None:
    """The cookie alone is not the key: API requests need the CSRF token and this origin, the
    WebSocket handshake this origin; logging out ends the session."""
    origin = server.url
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post("/dashboard/login", json={"key": "nope"}).status_code == 401
        r = client.post("/dashboard/login", json={"key": API_KEY}, headers={"Origin": "http://evil.example"})
        assert r.status_code == 403 and not client.cookies
        csrf = _login(client)
        cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
        assert client.get("/v1/boxes").status_code == 401  # cookie without the CSRF token
        assert client.get("/v1/boxes", headers={"X-Boxlite-CSRF": "x" * len(csrf)}).status_code == 401
        assert client.get("/v1/boxes", headers={"X-Boxlite-CSRF": csrf}).status_code == 200
        foreign = {"X-Boxlite-CSRF": csrf, "Origin": "http://evil.example"}
        assert client.get("/v1/boxes", headers=foreign).status_code == 401
        assert client.get("/dashboard/api/boxes/x/logs").status_code == 401

        url = server.url.replace("http://", "ws://") + "/v1/boxes/nope/exec"
        for headers, ws_origin in (({"Cookie": cookie}, "http://evil.example"), ({"Cookie": cookie}, None)):
            with pytest.raises(InvalidStatus) as refused:
                ws_connect(url, additional_headers=headers, origin=ws_origin, proxy=None)  # type: ignore[arg-type]
            assert refused.value.response.status_code == 401
        with ws_connect(url, additional_headers={"Cookie": cookie}, origin=origin, proxy=None) as ws:  # type: ignore[arg-type]
            ws.send(json.dumps({"type": "start", "command": "true"}))
            assert json.loads(ws.recv(timeout=30))["error"]["type"] == "NotFoundError"  # in: the box is unknown

        session = client.get("/dashboard/session").json()
        assert session == {"auth_required": True, "authenticated": True, "csrf": csrf}
        assert client.post("/dashboard/logout", headers={"X-Boxlite-CSRF": csrf}).status_code == 204
        client.cookies.clear()
        r = client.get("/v1/boxes", headers={"X-Boxlite-CSRF": csrf, "Cookie": cookie})
        assert r.status_code == 401


def test_pages_headers_and_static_files(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        r = client.get("/dashboard/")
        assert r.status_code == 200
        policy = r.headers["content-security-policy"]
        assert "script-src 'self';" in policy and "unsafe" not in policy and "frame-ancestors 'none'" in policy
        assert "require-trusted-types-for 'script'" in policy
        nonce = re.search(r"'nonce-([^']+)'", policy)
        assert nonce and f'content="{nonce.group(1)}"' in r.text
        assert nonce.group(1) not in client.get("/dashboard/").headers["content-security-policy"]  # per response
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "http://" not in r.text.replace("http://www.w3.org", "") and "https://" not in r.text
        assert client.get("/dashboard/static/vendor/xterm/xterm.js").status_code == 200
        bad_paths = ["/dashboard/static/../pages.py", "/dashboard/static/%2e%2e/pages.py", "/dashboard/nope"]
        for bad in [*bad_paths, "/dashboard/static/index.html", "/dashboard/static/vendor"]:
            assert client.get(bad).status_code == 404, bad


def test_package_data_ships_every_asset() -> None:
    """pyproject's package-data globs cover every file the pages serve (the wheel carries them)."""
    pkg = SRC / "boxlite" / "server" / "dashboard"
    entry = re.search(r'^"boxlite\.server\.dashboard" = (\[[^\]]*\])', (ROOT / "pyproject.toml").read_text(), re.M)
    assert entry, "pyproject.toml: no package-data entry for boxlite.server.dashboard"
    globs = json.loads(entry.group(1))
    files = [p.relative_to(pkg).as_posix() for p in (pkg / "static").rglob("*") if p.is_file()]
    assert "static/vendor/xterm/xterm.js" in files and "static/vendor/swagger-ui/LICENSE.txt" in files
    missing = [f for f in files if not any(fnmatch.fnmatch(f, g) and f.count("/") == g.count("/") for g in globs)]
    assert missing == []


def test_without_a_key_on_loopback_only_its_own_pages_get_in(tmp_path: Path) -> None:
    """``--insecure-no-auth``: the dashboard needs no login and its own origin may call the API;
    any other origin (a web page elsewhere) is still refused, for HTTP and WebSocket alike."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    env.setdefault("BOXLITE_ENGINE", os.environ.get("BOXLITE_TEST_ENGINES", "namespace").split(",")[0])
    args = ["--home", str(tmp_path / "home"), "serve", "--host", "127.0.0.1", "--port", str(port), "--insecure-no-auth"]
    proc = subprocess.Popen([sys.executable, "-m", "boxlite.cli", *args], env=env, stdin=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url)
        with httpx.Client(base_url=url, timeout=30) as client:
            session = client.get("/dashboard/session").json()
            assert session == {"auth_required": False, "authenticated": True, "csrf": ""}
            assert client.get("/docs").status_code == 200
            assert client.post("/v1/images/gc", headers={"Origin": url}).status_code == 200
            for foreign in ("http://evil.example", f"http://localhost:{port}", "null"):
                assert client.post("/v1/images/gc", headers={"Origin": foreign}).status_code == 403, foreign
        ws_url = url.replace("http://", "ws://") + "/v1/boxes/nope/exec"
        with pytest.raises(InvalidStatus):
            ws_connect(ws_url, origin="http://evil.example", proxy=None)  # type: ignore[arg-type]
        with ws_connect(ws_url, origin=url, proxy=None) as ws:  # type: ignore[arg-type]
            ws.send(json.dumps({"type": "start", "command": "true"}))
            assert json.loads(ws.recv(timeout=30))["error"]["type"] == "NotFoundError"
    finally:
        stop_server(proc)


def test_sessions_expire_and_are_capped() -> None:
    from boxlite.server.dashboard.sessions import Sessions, cookie_token, same_origin

    sessions = Sessions(ttl=0.3, limit=2)
    first, second, third = sessions.create(), sessions.create(), sessions.create()
    assert sessions.get(first.token) is None  # over the cap: the oldest went
    assert sessions.get(second.token) == second and sessions.get(third.token) == third
    assert len({first.token, second.token, third.token, first.csrf}) == 4
    time.sleep(0.35)
    assert sessions.get(third.token) is None and sessions.get("") is None
    host = [(b"host", b"127.0.0.1:8080")]
    assert cookie_token([*host, (b"cookie", f"a=1; boxlite_session_8080={second.token}".encode())]) == second.token
    assert cookie_token([*host, (b"cookie", f"boxlite_session_9090={second.token}".encode())]) is None  # other port
    assert cookie_token([*host, (b"cookie", b'boxlite_session_8080="unterminated')]) is None
    assert same_origin([*host, (b"origin", b"http://127.0.0.1:8080")], required=True)
    assert not same_origin([*host, (b"origin", b"http://127.0.0.1:8081")], required=False)
    assert not same_origin(host, required=True) and same_origin(host, required=False)
