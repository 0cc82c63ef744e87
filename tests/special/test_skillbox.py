"""Issue 13: ``SkillBox`` runs Claude Code in a box against an Anthropic-compatible endpoint, with
its desktop watchable over noVNC.

The endpoint is a mock Messages API (streaming SSE, as Claude Code asks) on 10.77.0.2:8080 in a
private "internet" (tests/support/privnet.py): the scenario re-runs this file under ``unshare -n
-m``, so no traffic leaves the machine. One SkillBox per engine serves every check (under TCG a
box start and Claude Code's start cost minutes): the module-scoped ``skill_run`` runs the
scenario once and each test asserts its part of the report. The mock logs every request; the
tests check what Claude Code sent (model, prompt, installed skill, credential header), the
answers ``call`` returned (two turns of one conversation), that the credential is nowhere on the
host's disk under the runtime's home, that an endpoint that went away gives ``SkillBoxError``
well within the call timeout, and the desktop (tests/support/skillbox_desktop.py). The
synchronous variant (``SyncSkillBox``) is host code over the same box: its own test runs on the
namespace engine.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
import traceback
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow  # run early: tests/conftest.py orders slow files first

MOCK = "10.77.0.2"
PORT, DEAD_PORT = 8080, 8081
CLOSE_PATH = "/boxlite-test/close"  # the mock stops listening: the endpoint went away
API_KEY = "sk-boxlite-test-0123456789abcdef-secret"
MODEL = "mock-model-7"
ANSWERS = ["MOCK-ANSWER-ONE", "MOCK-ANSWER-TWO"]
SKILL = "zebra-protocol"
SKILL_MD = f"""---
name: {SKILL}
description: Explains the zebra protocol of the BoxLite test suite.
---
Answer every question about zebras with the word STRIPES.
"""

# A git repository in the box holding one skill (install_skill clones it like a GitHub owner/repo).
GIT_REPO = """set -e
mkdir -p /root/src/skills/git-skill && cd /root/src
printf -- '---\\nname: git-skill\\ndescription: A skill from git.\\n---\\nSay GIT.\\n' > skills/git-skill/SKILL.md
git init -q && git add . && git -c user.email=t@example.invalid -c user.name=t commit -qm skill
"""

# --- the mock endpoint (in the "remote" namespace) ------------------------------------------------


def sse(handler: BaseHTTPRequestHandler, model: str, text: str) -> None:
    handler.send_response(200)
    handler.send_header("content-type", "text/event-stream")
    handler.end_headers()
    usage = {"input_tokens": 5, "output_tokens": 1}
    events = [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_mock", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": usage}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": text}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": 3}}),
        ("message_stop", {"type": "message_stop"}),
    ]  # fmt: skip
    for name, data in events:
        handler.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())


def remote_main(log: str) -> None:
    from support.privnet import when_addresses_exist

    turns: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            size = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(min(size, 16 << 20)) or b"{}")
            if self.path == CLOSE_PATH:  # closed before the answer: from then on, connections are refused
                self.server.shutdown()  # serve_forever runs in another thread (and this handler in its own)
                self.server.server_close()
                self.send_response(204)
                self.end_headers()
                return
            with open(log, "a") as f:
                f.write(json.dumps({"path": self.path, "headers": dict(self.headers), "body": body}) + "\n")
            if not self.path.startswith("/v1/messages") or "count_tokens" in self.path:
                out = b'{"input_tokens": 5}'
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)
                return
            text = ANSWERS[min(len(turns), len(ANSWERS) - 1)]
            turns.append(1)
            sse(self, str(body.get("model")), text)

        def log_message(self, *args: Any) -> None:
            pass

    def start() -> None:
        server = ThreadingHTTPServer((MOCK, PORT), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()

    when_addresses_exist(start)
    time.sleep(1800)


# --- the host's side (in the private network namespace) -------------------------------------------


def files_containing(root: Path, needle: bytes, max_size: int = 256 << 20) -> list[str]:
    """Files under ``root`` holding ``needle``. ``os.walk`` skips directories that vanish while it
    walks (``rglob`` raises): a removed box's directory is emptied in the background meanwhile."""
    hits = []
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory, name)
            try:
                if path.is_symlink() or not path.is_file() or path.stat().st_size > max_size:
                    continue
                if needle in path.read_bytes():
                    hits.append(str(path))
            except OSError:
                continue
    return hits


def limit_for(engine: str) -> float:
    return 900.0 if engine == "vm" else 120.0


async def converse(box: Any, report: dict[str, Any], mark: Callable[[str], None]) -> None:
    """Two calls, skills from git, then the endpoint goes away (the mock stops listening)."""
    import boxlite
    from boxlite.skillbox import SkillBoxError

    report["answers"] = [await box.call("What is the zebra protocol? 7f3a")]
    mark("call 1 (skill install, Claude Code start, answer)")
    report["answers"].append(await box.call("And again? 9c2e"))
    mark("call 2")
    await box.exec("sh", "-c", GIT_REPO, timeout=120)
    report["git_skill"] = await box.install_skill("file:///root/src")
    try:
        await box.install_skill("x; rm -rf /")
    except boxlite.ConfigError as e:
        report["bad_skill"] = str(e)
    env = await box.exec("sh", "-c", "env; cat /proc/1/environ | tr '\\0' '\\n'; ls /root/.claude/skills")
    report["box_env_and_skills"] = env.stdout
    mark("skills from git")
    # The endpoint goes away (the mock stops listening): a typed error, not a hang.
    urllib.request.urlopen(urllib.request.Request(f"http://{MOCK}:{PORT}{CLOSE_PATH}", method="POST"), timeout=30)
    start = time.monotonic()
    try:
        await box.call("anyone there?")
        report["fault"] = "no error"
    except SkillBoxError as e:
        report["fault"] = f"SkillBoxError: {e}"
    except Exception as e:
        report["fault"] = f"{type(e).__name__}: {e}"
    report["fault_seconds"] = time.monotonic() - start
    mark("endpoint gone")


async def drive(engine: str, rootfs: str, home: Path, skill_dir: Path) -> dict[str, Any]:
    """One SkillBox: its desktop, then :func:`converse` (a failure of either is reported, not raised)."""
    import boxlite
    from boxlite.skillbox import SkillBox
    from support.skillbox_desktop import desktop_facts, free_port

    t0 = time.monotonic()
    marks: list[tuple[str, float]] = []  # where the time goes (printed by the tests)
    report: dict[str, Any] = {"marks": marks}

    def mark(what: str) -> None:
        marks.append((what, round(time.monotonic() - t0, 1)))

    limit = limit_for(engine)
    https_port = free_port()
    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home / "rt"), engine=engine))
    try:
        async with SkillBox(
            skills=[str(skill_dir)], base_url=f"http://{MOCK}:{PORT}", call_timeout=900, max_retries=0,
            rootfs_path=rootfs, runtime=rt, api_key=API_KEY, model=MODEL, memory_mib=1024, name=None,
            gui_http_port=0, gui_https_port=https_port,
        ) as box:  # fmt: skip
            mark("started")
            await box.wait_until_ready(timeout=limit)
            mark("desktop and claude --version ready")
            try:
                report["desktop"] = await desktop_facts(box, https_port, limit)
            except Exception:  # the call test still runs; the desktop test reports this
                report["desktop_error"] = traceback.format_exc()
            mark("desktop checked")
            try:
                await converse(box, report, mark)
            except Exception:
                report["call_error"] = traceback.format_exc()
        mark("stopped")
        report["key_on_disk"] = files_containing(home / "rt", API_KEY.encode())
    finally:
        await rt.shutdown(timeout=2)
    return report


def dead_endpoint(engine: str, rootfs: str, home: Path) -> dict[str, Any]:
    """The synchronous variant against an endpoint with nothing listening."""
    import boxlite
    from boxlite.skillbox import SkillBoxError, SyncSkillBox

    report: dict[str, Any] = {}
    dead = f"http://{MOCK}:{DEAD_PORT}"
    options = boxlite.Options(home_dir=str(home / "rt-sync"), engine=engine)
    with boxlite.SyncBoxlite(options) as rt, SyncSkillBox(
        rootfs_path=rootfs, runtime=rt, api_key=API_KEY, memory_mib=1024, name=None, base_url=dead, max_retries=0,
        call_timeout=600,
    ) as box:  # fmt: skip
        box.wait_until_ready(timeout=limit_for(engine))
        start = time.monotonic()
        try:
            box.call("anyone there?")
            report["fault"] = "no error"
        except SkillBoxError as e:
            report["fault"] = f"SkillBoxError: {e}"
        except Exception as e:
            report["fault"] = f"{type(e).__name__}: {e}"
        report["fault_seconds"] = time.monotonic() - start
    return report


def scenario_main(engine: str, rootfs: str, home: str) -> None:
    """``home/mode`` says what to run: "sync" (``SyncSkillBox``, dead endpoint) or the full scenario."""
    from support.privnet import build_internet, print_report

    home_dir = Path(home)
    sync = (home_dir / "mode").is_file() and (home_dir / "mode").read_text() == "sync"
    log = home_dir / "requests.jsonl"
    log.touch()
    skill_dir = home_dir / SKILL
    skill_dir.mkdir()
    (skill_dir / "SKILL.md").write_text(SKILL_MD)
    remote = build_internet([sys.executable, __file__, "remote", str(log)], remote=[f"{MOCK}/24"])
    try:
        if sync:
            report = dead_endpoint(engine, rootfs, home_dir)
        else:
            report = asyncio.run(drive(engine, rootfs, home_dir, skill_dir))
    finally:
        remote.kill()
    report["requests"] = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    print_report(report)


if __name__ == "__main__":
    from support import privnet

    privnet.run_main(remote_main, scenario_main)


# --- the tests -------------------------------------------------------------------------------------

ENGINES = [e for e in os.environ.get("BOXLITE_TEST_ENGINES", "namespace").split(",") if e]


@pytest.fixture(scope="module")
def skill_rootfs() -> Path:
    from boxlite.images.recipes import ensure_recipe
    from support.images import CACHE

    return ensure_recipe("skill", CACHE / "recipes")


@pytest.fixture(scope="module", params=ENGINES)
def skill_run(request: pytest.FixtureRequest, skill_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The scenario's report for one engine: one SkillBox serves every test of this module."""
    from support.privnet import run_scenario

    home = tmp_path_factory.mktemp(f"skillbox-{request.param}")
    started = time.monotonic()
    r = run_scenario(__file__, ["scenario", request.param, str(skill_rootfs), str(home)], timeout=2300)
    print(f"\nSkillBox scenario ({request.param}): {time.monotonic() - started:.0f} s; marks: {r['marks']}")
    return r


def _texts(body: dict[str, Any]) -> str:
    return json.dumps(body.get("messages", [])) + json.dumps(body.get("system", ""))


@pytest.mark.timeout(2400)
def test_skillbox_call_through_an_anthropic_compatible_endpoint(skill_run: dict[str, Any]) -> None:
    r = skill_run
    assert "call_error" not in r, r["call_error"]
    assert r["answers"] == ANSWERS, r
    calls = [q for q in r["requests"] if q["path"].startswith("/v1/messages") and "count_tokens" not in q["path"]]
    assert calls, r["requests"]
    first = next(q for q in calls if "7f3a" in _texts(q["body"]))
    assert first["body"]["model"] == MODEL and first["body"].get("stream") is True
    headers = {k.lower(): v for k, v in first["headers"].items()}
    assert headers.get("x-api-key") == API_KEY, headers
    assert SKILL in _texts(first["body"]), "the installed skill is offered to the model"
    second = next(q for q in calls if "9c2e" in _texts(q["body"]))
    assert "7f3a" in _texts(second["body"]) and ANSWERS[0] in _texts(second["body"]), "one conversation"
    # The credential reached only Claude Code's process: not the box's init, not the host's disk.
    assert API_KEY not in r["box_env_and_skills"] and SKILL in r["box_env_and_skills"], r["box_env_and_skills"]
    # Skills from git (cloned in the box); an id that is neither a directory, owner/repo nor a URL.
    assert r["git_skill"] is True and "git-skill" in r["box_env_and_skills"], r
    assert "neither a host directory" in r["bad_skill"], r
    assert r["key_on_disk"] == [], r["key_on_disk"]
    # The endpoint went away: a typed error naming the cause, long before the call timeout.
    assert r["fault"].startswith("SkillBoxError: Claude Code answered with an error"), r["fault"]
    assert r["fault_seconds"] < 300, r["fault_seconds"]
    print("fault:", r["fault"], "after", round(r["fault_seconds"], 1), "s")


@pytest.mark.timeout(2400)
def test_skillbox_desktop_novnc_http_https_and_vnc_password(skill_run: dict[str, Any]) -> None:
    """noVNC answers on host loopback over HTTP (a free port) and HTTPS (the port asked for, the
    box's own self-signed certificate); x11vnc behind it offers VNC password authentication only,
    rejects a wrong password and, with the box's one, serves the live 1024x768 display; a program
    started in the box (no DISPLAY given) draws on that display; Claude Code's environment names it."""
    assert "desktop_error" not in skill_run, skill_run["desktop_error"]
    d = skill_run["desktop"]
    port = d["gui_http_port"]
    assert port and d["http_url"].startswith(f"http://127.0.0.1:{port}/vnc.html"), d
    assert d["http_page_is_novnc"], d
    assert d["gui_https_port"] == d["https_port_asked"], d
    assert d["https_url"].startswith(f"https://127.0.0.1:{d['https_port_asked']}/vnc.html"), d
    assert "BEGIN CERTIFICATE" in d["certificate"] and d["https_page_is_novnc"], d
    assert "CERTIFICATE_VERIFY_FAILED" in d["https_without_pinning"], d  # not a public CA's
    assert isinstance(d["vnc_wrong_password"], str), d  # refused, with the server's reason
    assert d["vnc_password"] == [1024, 768], d
    assert d["red_before"] < 1000 <= d["red_after"], d
    assert d["claude_display"] == ":1", d


@pytest.mark.timeout(900)
@pytest.mark.namespace_only  # host code over the box above (a second box start: minutes under TCG)
def test_syncskillbox_dead_endpoint(engine: str, skill_rootfs: Path, tmp_path: Path) -> None:
    """``SyncSkillBox``: a dead endpoint gives ``SkillBoxError`` naming the cause, within the call timeout."""
    from support.privnet import run_scenario

    (tmp_path / "mode").write_text("sync")
    r = run_scenario(__file__, ["scenario", engine, str(skill_rootfs), str(tmp_path)], timeout=800)
    assert r["fault"].startswith("SkillBoxError: Claude Code answered with an error"), r["fault"]
    assert r["fault_seconds"] < 600, r["fault_seconds"]  # 22 s (namespace)


async def test_skillbox_bad_input(tmp_path: Path) -> None:
    import boxlite
    from boxlite.skillbox import SkillBox

    with pytest.raises(boxlite.ConfigError):
        SkillBox(gui_http_port=3000, gui_https_port=3000, api_key="k")
    with pytest.raises(boxlite.ConfigError):
        SkillBox(api_key="k", base_url="ftp://example")
    with pytest.raises(boxlite.ConfigError):
        SkillBox(api_key="k", env={"ANTHROPIC_API_KEY": "k"})
    with pytest.raises(boxlite.InvalidStateError):
        await SkillBox(api_key="k").call("hi")
    box = SkillBox(runtime=boxlite.Boxlite(boxlite.Options(home_dir=str(tmp_path))), oauth_token="")
    for name in ("CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"):
        box._credentials[name] = ""
    with pytest.raises(boxlite.ConfigError, match="credential"):
        await box.__aenter__()
