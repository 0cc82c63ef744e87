"""``SkillBox``: Claude Code running in a box, with skills installed, driven by ``call(prompt)``.

One Claude Code process per box (``claude -p`` with stream-JSON input and output) keeps the
conversation across calls, as in BoxLite. The credential reaches only that process's
environment: it is not part of the box's options (which are stored on the host and seen by every
command in the box) and is never written to the box's disk by this module.

The box also runs the ComputerBox desktop (``DISPLAY=:1``, shared code in ``desktopsession``):
noVNC on host loopback over HTTP and HTTPS (a self-signed certificate made for the box), behind a
per-box VNC password, so a person can watch what Claude Code's GUI tools do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any, Self

from ..aio import within
from ..errors import BoxliteError, ConfigError, ExecError, InvalidStateError, TimeoutError
from .desktopsession import DISPLAY, DesktopBox, DesktopError
from .execution import ExecStdin, ExecStream, Execution
from .runtime import Boxlite
from .sync import SyncBoxlite, SyncSimpleBox

SKILLBOX_MEMORY_MIB = 4096
"""BoxLite's default (Node and Claude Code need ~0.5 GiB; skills' tools may need more)."""
CALL_TIMEOUT = 600.0
"""Seconds one ``call`` may take before it raises ``TimeoutError`` (BoxLite: 120 s per chunk)."""
MAX_LINE = 8 * 1024 * 1024
"""Longest JSON line accepted from Claude Code's output (a hostile box could send endless bytes)."""
STDERR_TAIL = 16 * 1024
SKILLS_DIR = "/root/.claude/skills"
CLAUDE_ARGS = [
    "-p", "--input-format", "stream-json", "--output-format", "stream-json", "--verbose",
    "--dangerously-skip-permissions",
]  # fmt: skip
_GITHUB_ID = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_SKILL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
# Installs every directory with a SKILL.md of a git repository ($1: URL) into $2 (no shell
# interpolation of either: both are positional arguments).
_INSTALL_FROM_GIT = r"""
set -e
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
git clone --quiet --depth 1 -- "$1" "$src/repo"
n=0
for f in $(cd "$src/repo" && find . -name SKILL.md -not -path './.git/*'); do
  d=$(dirname "$f"); name=$(basename "$d")
  [ "$d" = "." ] && name=$(basename "$1" .git)
  mkdir -p "$2"; rm -rf "$2/$name"; cp -R "$src/repo/$d" "$2/$name"; n=$((n+1))
done
[ "$n" -gt 0 ] || { echo "no SKILL.md in $1" >&2; exit 3; }
"""


class SkillBoxError(ExecError):
    """Claude Code failed: it could not start, exited, or answered with an error (e.g. the API
    endpoint is down). ``stderr`` holds the tail of its error output."""

    def __init__(self, message: str, stderr: str = "") -> None:
        BoxliteError.__init__(self, message + (f"\n{stderr[-2000:]}" if stderr else ""))
        self.command, self.exit_code, self.stderr = "claude", 1, stderr


class SkillBox(DesktopBox):
    """A box running Claude Code with skills (BoxLite's ``SkillBox``).

    Without ``image``/``rootfs_path`` it uses the ``skill`` image built offline from Debian
    packages and the pinned ``@anthropic-ai/claude-code`` npm package. Credentials: ``oauth_token``
    (or ``CLAUDE_CODE_OAUTH_TOKEN``), ``api_key`` (or ``ANTHROPIC_API_KEY``) or ``auth_token``
    (or ``ANTHROPIC_AUTH_TOKEN``); ``base_url`` (or ``ANTHROPIC_BASE_URL``) selects any
    Anthropic-compatible endpoint. The desktop: :meth:`novnc_url` (``https=True`` for TLS, with
    :attr:`gui_tls_certificate`); ``gui_http_port``/``gui_https_port``: host loopback ports, 0 for
    free ones (the attributes hold the chosen ports once started).
    """

    def __init__(
        self,
        skills: list[str] | None = None,
        oauth_token: str | None = None,
        name: str | None = "skill-box",
        image: str | None = None,
        rootfs_path: str | None = None,
        memory_mib: int | None = SKILLBOX_MEMORY_MIB,
        disk_size_gb: float | None = None,
        gui_http_port: int = 0,
        gui_https_port: int = 0,
        auto_remove: bool | None = True,
        runtime: Boxlite | None = None,
        *,
        api_key: str | None = None,
        auth_token: str | None = None,
        base_url: str | None = None,
        model: str | None = None,
        max_retries: int | None = None,
        call_timeout: float = CALL_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        if _has_credential(kwargs.get("env") or []):
            raise ConfigError("pass credentials as SkillBox arguments, not in env (env is stored with the box)")
        super().__init__(
            gui_http_port, gui_https_port, serve_https=True, image=image, rootfs_path=rootfs_path,
            memory_mib=memory_mib, runtime=runtime, name=name, auto_remove=auto_remove, disk_size_gb=disk_size_gb,
            **kwargs,
        )  # fmt: skip
        self._desktop_missing = ""
        self._skills = list(skills or [])
        env = os.environ
        self._credentials = {
            "CLAUDE_CODE_OAUTH_TOKEN": oauth_token or env.get("CLAUDE_CODE_OAUTH_TOKEN", ""),
            "ANTHROPIC_API_KEY": api_key or env.get("ANTHROPIC_API_KEY", ""),
            "ANTHROPIC_AUTH_TOKEN": auth_token or env.get("ANTHROPIC_AUTH_TOKEN", ""),
        }
        self._base_url = base_url or env.get("ANTHROPIC_BASE_URL", "")
        if self._base_url and not re.match(r"^https?://[^\s]+$", self._base_url):
            raise ConfigError(f"base_url must be an http(s) URL, not {self._base_url!r}")
        self._model = model
        if max_retries is not None and not 0 <= max_retries <= 100:
            raise ConfigError("max_retries must be between 0 and 100")
        self._max_retries = max_retries
        if not call_timeout > 0:
            raise ConfigError("call_timeout must be > 0")
        self._call_timeout = float(call_timeout)
        self._process: Execution | None = None
        self._stdin: ExecStdin | None = None
        self._lines: asyncio.Queue[str | None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stderr_tail = ""
        self._session_id = "default"
        self._setup_complete = False
        self._claude_runs = False  # ``claude --version`` ran: no second probe (seconds of Node start under TCG)
        self._lock = asyncio.Lock()

    # --- lifecycle ------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        if not any(self._credentials.values()):
            raise ConfigError(
                "a credential is required: oauth_token (CLAUDE_CODE_OAUTH_TOKEN), api_key (ANTHROPIC_API_KEY) "
                "or auth_token (ANTHROPIC_AUTH_TOKEN)"
            )
        if self._box is None and self._options.image is None and self._options.rootfs_path is None:
            self._options.image = await asyncio.to_thread(_skill_image, self._runtime)
        await super().__aenter__()
        if self._session is None and not self._desktop_missing:
            try:
                await self._start_session()
            except BoxliteError as e:  # an ``image=`` without the desktop: Claude Code still works
                self._desktop_missing = str(e) or type(e).__name__
            except BaseException:
                await self.stop()
                raise
        return self

    async def stop(self) -> None:
        await self._stop_claude()
        await super().stop()

    async def wait_until_ready(self, timeout: float = 60.0) -> None:
        """Wait until the desktop answers (when the image has one) and ``claude --version`` runs."""
        deadline = time.monotonic() + timeout
        if self._session_task is not None:
            await super().wait_until_ready(timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"Claude Code did not become ready within {timeout:g} seconds")
            with contextlib.suppress(BoxliteError):
                if (await self.exec("claude", "--version", timeout=max(left, 1.0))).exit_code == 0:
                    self._claude_runs = True
                    return
            await asyncio.sleep(0.5)

    def novnc_url(self, https: bool = False) -> str:
        """URL of the noVNC page (host loopback, VNC password included); ``https=True``: over TLS
        with the box's self-signed certificate (:attr:`gui_tls_certificate`)."""
        if self._desktop_missing:
            raise DesktopError(f"this box's image has no desktop: {self._desktop_missing}")
        return super().novnc_url(https)

    # --- work -----------------------------------------------------------------------------
    async def call(self, prompt: str, timeout: float | None = None) -> str:
        """Send ``prompt`` to Claude Code and return its answer (the conversation continues
        across calls). Raises ``SkillBoxError`` when Claude Code reports an error (e.g. the
        endpoint is unreachable) and ``TimeoutError`` after ``timeout`` (default ``call_timeout``)."""
        if self._box is None:
            raise InvalidStateError("SkillBox not started. Use 'async with SkillBox() as box:'")
        if not isinstance(prompt, str):
            raise ConfigError("prompt must be a string")
        async with self._lock:
            if not self._setup_complete:
                await self._setup()
            if self._process is None:
                await self._start_claude()
            try:
                return await within(self._send(prompt), timeout or self._call_timeout)
            except builtins_timeout as e:
                await self._stop_claude()  # its state is unknown: the next call starts afresh
                raise TimeoutError(f"Claude Code did not answer within {timeout or self._call_timeout:g} s") from e

    async def install_skill(self, skill_id: str) -> bool:
        """Install a skill: a host directory (with a SKILL.md, or holding such directories), a
        GitHub ``owner/repo`` or a git URL (cloned in the box: needs the box's network). False
        when the installation failed."""
        if self._box is None:
            raise InvalidStateError("SkillBox not started. Use 'async with SkillBox() as box:'")
        if not self._setup_complete:
            await self._setup()
        return await self._install(skill_id)

    async def _setup(self) -> None:
        if not self._claude_runs:
            probe = await self.exec("claude", "--version", timeout=120)
            if probe.exit_code != 0:
                raise SkillBoxError("Claude Code is not runnable in this box's image", probe.stderr)
            self._claude_runs = True
        for skill in self._skills:
            if not await self._install(skill):
                raise SkillBoxError(f"installing skill {skill!r} failed")
        self._setup_complete = True

    async def _install(self, skill_id: str) -> bool:
        path = Path(skill_id)
        if path.is_dir():
            dirs = [path] if (path / "SKILL.md").is_file() else sorted(p.parent for p in path.glob("*/SKILL.md"))
            if not dirs:
                raise ConfigError(f"{skill_id} holds no SKILL.md (nor */SKILL.md)")
            for d in dirs:
                if not _SKILL_NAME.match(d.name):
                    raise ConfigError(f"skill directory name {d.name!r} is not a valid skill name")
            await self.exec("mkdir", "-p", SKILLS_DIR)
            for d in dirs:
                await self.exec("rm", "-rf", f"{SKILLS_DIR}/{d.name}")
                await self.copy_in(str(d), SKILLS_DIR)
            return True
        if _GITHUB_ID.match(skill_id):
            url = f"https://github.com/{skill_id}.git"
        elif re.match(r"^(https://|file:///)[^\s]+$", skill_id):
            url = skill_id
        else:
            raise ConfigError(f"skill {skill_id!r} is neither a host directory, owner/repo nor a git URL")
        result = await self.exec("sh", "-c", _INSTALL_FROM_GIT, "install-skill", url, SKILLS_DIR, timeout=300)
        return result.exit_code == 0

    # --- the Claude Code process ------------------------------------------------------------
    def _claude_env(self) -> dict[str, str]:
        env = {k: v for k, v in self._credentials.items() if v}
        env.update(
            HOME="/root", SHELL="/bin/bash", IS_SANDBOX="1", DISABLE_AUTOUPDATER="1", DISPLAY=DISPLAY,
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", DISABLE_TELEMETRY="1", DISABLE_ERROR_REPORTING="1",
            PATH="/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
        )  # fmt: skip
        if self._base_url:
            env["ANTHROPIC_BASE_URL"] = self._base_url
        if self._model:
            env["ANTHROPIC_MODEL"] = self._model
        if self._max_retries is not None:
            env["CLAUDE_CODE_MAX_RETRIES"] = str(self._max_retries)
        return env

    async def _start_claude(self) -> None:
        self._process = await self.box.exec("claude", CLAUDE_ARGS, env=self._claude_env(), cwd="/root")
        self._stdin = self._process.stdin()
        self._lines = asyncio.Queue(maxsize=256)
        self._stderr_tail = ""
        self._tasks = [
            asyncio.create_task(self._read_lines(self._process.stdout(), self._lines)),
            asyncio.create_task(self._read_stderr(self._process.stderr())),
        ]

    async def _read_lines(self, stream: ExecStream, out: asyncio.Queue[str | None]) -> None:
        """Split the output into lines; the bounded queue makes the box wait for the reader."""
        buf = ""
        try:
            async for chunk in stream:
                if "\n" not in chunk:
                    buf += chunk
                else:
                    *lines, rest = (buf + chunk).split("\n")
                    buf = rest
                    for line in lines:
                        await out.put(line)
                if len(buf) > MAX_LINE:
                    self._stderr_tail += f"\n[boxlite: an output line of Claude Code exceeded {MAX_LINE} bytes]"
                    break
        finally:
            with contextlib.suppress(asyncio.CancelledError):
                await out.put(None)

    async def _read_stderr(self, stream: ExecStream) -> None:
        async for chunk in stream:
            self._stderr_tail = (self._stderr_tail + chunk)[-STDERR_TAIL:]

    async def _send(self, prompt: str) -> str:
        assert self._stdin is not None and self._lines is not None
        message = {
            "type": "user",
            "message": {"role": "user", "content": prompt},
            "session_id": self._session_id,
            "parent_tool_use_id": None,
        }
        await self._stdin.send_input(json.dumps(message) + "\n")
        fallback = ""
        while True:
            line = await self._lines.get()
            if line is None:
                tail = self._stderr_tail
                await self._stop_claude()
                raise SkillBoxError("Claude Code exited before it answered", tail)
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if not isinstance(msg, dict):
                continue
            if isinstance(msg.get("session_id"), str):
                self._session_id = msg["session_id"]
            if msg.get("type") == "assistant":
                fallback = _text_of(msg) or fallback
            if msg.get("type") == "result":
                text = msg.get("result")
                text = text if isinstance(text, str) else fallback
                if msg.get("is_error"):
                    raise SkillBoxError(f"Claude Code answered with an error: {text or msg.get('subtype')}")
                return text

    async def _stop_claude(self) -> None:
        process, self._process = self._process, None
        if self._stdin is not None:
            with contextlib.suppress(BoxliteError, OSError):
                await self._stdin.close()
            self._stdin = None
        if process is not None:
            with contextlib.suppress(BoxliteError, OSError):
                await within(process.wait(), 5)
            with contextlib.suppress(BoxliteError, OSError, builtins_timeout):
                await process.kill()
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        self._lines = None


builtins_timeout = asyncio.TimeoutError


def _text_of(msg: dict[str, Any]) -> str:
    content = msg.get("message", {}).get("content") if isinstance(msg.get("message"), dict) else None
    for item in content if isinstance(content, list) else []:
        if isinstance(item, dict) and item.get("type") == "text" and isinstance(item.get("text"), str):
            return str(item["text"])
    return ""


def _has_credential(env: Any) -> bool:
    names = {"CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"}
    pairs = env.items() if isinstance(env, dict) else env
    return any(isinstance(p, (tuple, list)) and p and p[0] in names for p in pairs)


def _skill_image(runtime: Boxlite | None) -> str:
    """The offline ``skill`` image in the runtime's image store (built on first use): its reference."""
    from ..images.recipes import recipe_image

    rt = runtime or Boxlite.default()
    return recipe_image("skill", rt.home.root)


class SyncSkillBox(SyncSimpleBox):
    """``SkillBox`` for synchronous code: ``call``, ``install_skill``, ``wait_until_ready``."""

    _box_class = SkillBox

    def __init__(self, skills: list[str] | None = None, oauth_token: str | None = None, name: str | None = "skill-box",
                 image: str | None = None, rootfs_path: str | None = None, memory_mib: int | None = SKILLBOX_MEMORY_MIB,
                 runtime: SyncBoxlite | None = None, auto_remove: bool = True, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(image=image, rootfs_path=rootfs_path, memory_mib=memory_mib, runtime=runtime, name=name,
                         auto_remove=auto_remove, skills=skills, oauth_token=oauth_token, **kwargs)  # fmt: skip

    def _skill(self) -> SkillBox:
        assert isinstance(self._box, SkillBox)
        return self._box

    def call(self, prompt: str, timeout: float | None = None) -> str:
        return self._run(self._skill().call(prompt, timeout))

    def install_skill(self, skill_id: str) -> bool:
        return self._run(self._skill().install_skill(skill_id))

    def wait_until_ready(self, timeout: float = 60.0) -> None:
        self._run(self._skill().wait_until_ready(timeout))

    def novnc_url(self, https: bool = False) -> str:
        return self._skill().novnc_url(https)

    @property
    def gui_http_port(self) -> int | None:
        return self._skill().gui_http_port

    @property
    def gui_https_port(self) -> int | None:
        return self._skill().gui_https_port


__all__ = ["SkillBox", "SkillBoxError", "SyncSkillBox"]
