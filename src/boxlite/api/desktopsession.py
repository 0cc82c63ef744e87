"""``DesktopBox``: the X desktop session shared by ``ComputerBox`` and ``SkillBox``.

The box runs ``boxlite-desktop`` (Xvfb + openbox + x11vnc + websockify/noVNC, from
``images/recipes/desktop.py``); noVNC is published on host loopback only, behind a per-box VNC
password. Every program on the display runs as one ``exec`` with argv entries (never a shell
string), a deadline and a cap on what the box may send back: the box is assumed hostile.
Optionally a second websockify serves noVNC over TLS with a self-signed certificate made on the
host for this box only (its fingerprint is what a person pins).
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import contextlib
import datetime
import ipaddress
import secrets
import string
import time
from typing import Any

from ..aio import within
from ..errors import BoxliteError, ConfigError, TimeoutError
from ..images.recipes.desktop import SESSION_PATH
from .execution import Execution
from .simplebox import SimpleBox

DISPLAY = ":1"
DISPLAY_WIDTH = 1024
DISPLAY_HEIGHT = 768
NOVNC_GUEST_PORT = 6080
NOVNC_TLS_GUEST_PORT = 6081
VNC_GUEST_PORT = 5900
DESKTOP_READY_TIMEOUT = 60.0
READY_RETRY_DELAY = 0.5
ACTION_TIMEOUT = 30.0
"""Seconds one action (xdotool, xwd) may take before it is killed and TimeoutError raised."""
MAX_OUTPUT_BYTES = 64 * 1024
"""Output of an action read at most unless the caller allows more (xdotool prints a few bytes)."""
LOG_TAIL_BYTES = 8 * 1024
MAX_COORDINATE = 32767
TLS_CERT_DAYS = 30
"""Validity of a box's self-signed noVNC certificate (a box lives far shorter)."""
TLS_PEM_PATH = "/tmp/boxlite-desktop/novnc-tls.pem"
# Started after the session: websockify on the TLS port, certificate + key from the environment
# ($BOXLITE_TLS_PEM) written to a 0600 file (the box holds only its own key); argv: the ports.
_TLS_SCRIPT = r"""
umask 077
mkdir -p "${0%/*}"
printf '%s' "$BOXLITE_TLS_PEM" >"$0"
unset BOXLITE_TLS_PEM
exec websockify --ssl-only --cert "$0" --web /usr/share/novnc "0.0.0.0:$1" "127.0.0.1:$2"
"""


class DesktopError(BoxliteError):
    """The desktop session in the box exited or an action on it failed (message: its log tail)."""


class DesktopNotReadyError(DesktopError, TimeoutError):
    """The desktop did not become ready within the timeout (message: its log tail)."""


class DesktopBox(SimpleBox):
    """A box with a desktop on ``DISPLAY=:1`` and noVNC on host loopback (base of ComputerBox and
    SkillBox). ``gui_http_port``/``gui_https_port``: host port, ``None`` for a free one; the HTTPS
    port is published only when ``serve_https``."""

    def __init__(
        self,
        gui_http_port: int | None = None,
        gui_https_port: int | None = None,
        *,
        serve_https: bool = False,
        width: int = DISPLAY_WIDTH,
        height: int = DISPLAY_HEIGHT,
        action_timeout: float = ACTION_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        self._width = _dimension(width, "width")
        self._height = _dimension(height, "height")
        self._action_timeout = float(_positive(action_timeout, "action_timeout"))
        gui_http_port, gui_https_port = _port(gui_http_port, "gui_http_port"), _port(gui_https_port, "gui_https_port")
        if serve_https and gui_http_port is not None and gui_http_port == gui_https_port:
            raise ConfigError("gui_http_port and gui_https_port must differ")
        env = dict(kwargs.pop("env", None) or {})
        env.setdefault("DISPLAY", DISPLAY)
        ports = list(kwargs.pop("ports", None) or [])
        ports.insert(0, {"guest_port": NOVNC_GUEST_PORT, "host_port": gui_http_port, "host_ip": "127.0.0.1"})
        if serve_https:
            ports.insert(1, {"guest_port": NOVNC_TLS_GUEST_PORT, "host_port": gui_https_port, "host_ip": "127.0.0.1"})
        super().__init__(env=env, ports=ports, **kwargs)
        self._requested_ports = {NOVNC_GUEST_PORT: gui_http_port, NOVNC_TLS_GUEST_PORT: gui_https_port}
        self._serve_https = serve_https
        self._tls_cert_pem: bytes | None = None
        # VNC allows 8 password characters; they keep other local users of the host out.
        self._vnc_password = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(8))
        self._session: Execution | None = None
        self._session_task: asyncio.Task[int | None] | None = None
        self._tls_task: asyncio.Task[int | None] | None = None
        self._session_log: collections.deque[bytes] = collections.deque()
        self._session_log_size = 0

    # --- lifecycle --------------------------------------------------------------------------
    async def stop(self) -> None:
        tasks = [t for t in (self._session_task, self._tls_task) if t is not None]
        self._session_task, self._tls_task, self._session = None, None, None
        await super().stop()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def _start_session(self) -> None:
        argv = [str(self._width), str(self._height), str(VNC_GUEST_PORT), str(NOVNC_GUEST_PORT)]
        env = {"BOXLITE_VNC_PASSWORD": self._vnc_password, "DISPLAY": DISPLAY}
        self._session = await self.box.exec(SESSION_PATH, argv, env=env, stdin=False)
        self._session_task = asyncio.create_task(self._watch(self._session))
        if self._serve_https:
            cert, key = await asyncio.to_thread(self_signed_pem)
            self._tls_cert_pem = cert
            tls_argv = ["-c", _TLS_SCRIPT, TLS_PEM_PATH, str(NOVNC_TLS_GUEST_PORT), str(VNC_GUEST_PORT)]
            tls_env = {"BOXLITE_TLS_PEM": (cert + key).decode("ascii")}
            tls = await self.box.exec("sh", tls_argv, env=tls_env, stdin=False)
            self._tls_task = asyncio.create_task(self._watch(tls))

    async def _watch(self, execution: Execution) -> int | None:
        """Keep the last LOG_TAIL_BYTES of the output (shared by the session's programs); return
        the exit code."""

        async def drain(chunks: Any) -> None:
            async for chunk in chunks:
                self._session_log.append(chunk)
                self._session_log_size += len(chunk)
                while self._session_log_size > LOG_TAIL_BYTES and len(self._session_log) > 1:
                    self._session_log_size -= len(self._session_log.popleft())

        await asyncio.gather(drain(execution.stdout().bytes()), drain(execution.stderr().bytes()))
        status = await execution.wait()
        return status.exit_code

    def _log_tail(self) -> str:
        return b"".join(self._session_log)[-LOG_TAIL_BYTES:].decode("utf-8", "replace")

    async def _program_logs(self) -> str:
        """The tail of each desktop program's log in the box (best effort, capped)."""
        with contextlib.suppress(BoxliteError):
            logs = (f"/tmp/boxlite-desktop/{n}.log" for n in ("xvfb", "openbox", "x11vnc", "websockify"))
            out = await self._run("tail", "-n", "15", *logs, timeout=10.0, limit=LOG_TAIL_BYTES * 4, check=False)
            return out.decode("utf-8", "replace")[-LOG_TAIL_BYTES:]
        return ""

    async def _session_failure(self) -> DesktopError | None:
        for what, task in (("desktop session", self._session_task), ("noVNC TLS server", self._tls_task)):
            if task is None or not task.done():
                continue
            code = None if task.cancelled() or task.exception() else task.result()
            return DesktopError(f"the {what} exited (status {code}):\n{self._log_tail()}")
        return None

    async def wait_until_ready(self, timeout: float = DESKTOP_READY_TIMEOUT) -> None:
        """Return once the display answers and the window manager runs.

        Raises DesktopError at once if the session exits, DesktopNotReadyError after ``timeout``
        seconds; both carry the log tail."""
        deadline = time.monotonic() + float(timeout)
        while True:
            failure = await self._session_failure()
            if failure is not None:
                raise failure
            left = deadline - time.monotonic()
            if left <= 0:
                logs = await self._program_logs()
                raise DesktopNotReadyError(
                    f"desktop not ready within {timeout:g} s; session output:\n{self._log_tail()}\nlogs:\n{logs}"
                )
            try:
                step = max(1.0, min(left, self._action_timeout))
                if b"session up" in b"".join(self._session_log):
                    await self._run("xprop", "-root", "_NET_SUPPORTING_WM_CHECK", timeout=step)
                    await self._run("xdotool", "getdisplaygeometry", timeout=step)
                    return
            except DesktopError:
                pass
            await asyncio.sleep(min(READY_RETRY_DELAY, max(0.0, deadline - time.monotonic())))

    # --- one action -------------------------------------------------------------------------
    async def _run(
        self, *argv: str, timeout: float | None = None, limit: int = MAX_OUTPUT_BYTES, check: bool = True,
        too_large: type[DesktopError] = DesktopError,
    ) -> bytes:  # fmt: skip
        """Run ``argv`` on the display; stdout (at most ``limit`` bytes) within ``timeout``."""
        timeout = self._action_timeout if timeout is None else timeout
        execution = await self.box.exec(argv[0], list(argv[1:]), env={"DISPLAY": DISPLAY}, stdin=False)
        out = bytearray()
        err = bytearray()

        async def read() -> None:
            async for chunk in execution.stdout().bytes():
                out.extend(chunk)
                if len(out) > limit:
                    raise too_large(f"{argv[0]} sent more than {limit} bytes")

        async def read_err() -> None:
            async for chunk in execution.stderr().bytes():
                if len(err) < LOG_TAIL_BYTES:
                    err.extend(chunk[: LOG_TAIL_BYTES - len(err)])

        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(read(), read_err())
                status = await execution.wait()
        except BaseException as e:
            with contextlib.suppress(BaseException):
                await within(execution.kill(), 5)
            if isinstance(e, (builtins.TimeoutError, asyncio.TimeoutError)) and not isinstance(e, BoxliteError):
                raise DesktopError(f"{argv[0]} did not finish within {timeout:g} s") from None
            raise
        if check and status.exit_code != 0:
            what, stderr = " ".join(argv[:2]), err.decode("utf-8", "replace").strip()
            raise DesktopError(f"{what} exited with status {status.exit_code}: {stderr}")
        return bytes(out)

    # --- noVNC ---------------------------------------------------------------------------------
    def _published(self, guest_port: int) -> tuple[str, int] | None:
        if self._box is None:
            return None
        network = self.info().network
        for port in (network.published_ports if network else None) or []:
            if port.guest_port == guest_port and port.protocol == "tcp":
                return (f"[{port.host_ip}]" if ":" in port.host_ip else port.host_ip), port.host_port
        return None

    @property
    def gui_http_port(self) -> int | None:
        """Host port of noVNC over HTTP (the one chosen once started; before: what was asked)."""
        found = self._published(NOVNC_GUEST_PORT)
        return found[1] if found else self._requested_ports[NOVNC_GUEST_PORT]

    @property
    def gui_https_port(self) -> int | None:
        """Host port of noVNC over HTTPS (None when not served)."""
        if not self._serve_https:
            return None
        found = self._published(NOVNC_TLS_GUEST_PORT)
        return found[1] if found else self._requested_ports[NOVNC_TLS_GUEST_PORT]

    @property
    def gui_tls_certificate(self) -> bytes | None:
        """PEM of the box's self-signed noVNC certificate (trust or pin it), once started."""
        return self._tls_cert_pem

    def novnc_url(self, https: bool = False) -> str:
        """URL of the noVNC page (host loopback) that connects to this desktop, password included."""
        if https and not self._serve_https:
            raise DesktopError("noVNC is not served over HTTPS by this box")
        found = self._published(NOVNC_TLS_GUEST_PORT if https else NOVNC_GUEST_PORT)
        if found is None:
            raise DesktopError("the noVNC port is not published")
        scheme = "https" if https else "http"
        return f"{scheme}://{found[0]}:{found[1]}/vnc.html?autoconnect=1&password={self._vnc_password}"


def self_signed_pem() -> tuple[bytes, bytes]:
    """(certificate, key) PEM of a fresh P-256 self-signed certificate for 127.0.0.1/localhost."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "boxlite noVNC")])
    now = datetime.datetime.now(datetime.timezone.utc)
    san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=TLS_CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _port(value: Any, name: str) -> int | None:
    """A host port; None or 0: a free one chosen when the box starts."""
    if value is None or value == 0:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(f"{name} must be 0 (a free port) or a port number up to 65535, got {value!r}")
    return value


def _coordinate(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COORDINATE:
        raise ConfigError(f"{name} must be an integer from 0 to {MAX_COORDINATE}, got {value!r}")
    return str(value)


def _dimension(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 64 <= value <= 8192:
        raise ConfigError(f"{name} must be an integer from 64 to 8192, got {value!r}")
    return value


def _positive(value: Any, name: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    return value
