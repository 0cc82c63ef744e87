"""Run Debian's ``docker-registry`` (distribution v2) locally for tests.

``start_registry(workdir, auth=None|"htpasswd"|"token")`` starts one on 127.0.0.1 with a free
port and returns a :class:`RegistryServer`; ``stop()`` ends it. Token auth uses the tiny token
server in :mod:`tests.support.registry_token`.
"""

from __future__ import annotations

import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from support.hostprocs import free_port

REGISTRY_BIN = "/usr/bin/docker-registry"
USERNAME = "boxlite"
PASSWORD = "s3cret-pass"


def _no_verify() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass
class RegistryServer:
    """A running registry: ``host`` is ``127.0.0.1:PORT``; credentials if auth is on."""

    host: str
    workdir: Path
    auth: str | None
    proc: subprocess.Popen[bytes]
    username: str | None = None
    password: str | None = None
    extras: list[object] = field(default_factory=list)

    tls: bool = False

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for extra in self.extras:
            stop = getattr(extra, "stop", None)
            if stop:
                stop()

    def push_layout(self, layout: Path, name: str, tag: str = "latest", src_tag: str | None = None) -> str:
        """Push an OCI layout with skopeo; returns ``host/name:tag``."""
        dest = f"{self.host}/{name}:{tag}"
        cmd = [
            "skopeo",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--all",
            f"oci:{layout}" + (f":{src_tag}" if src_tag else ""),
            f"docker://{dest}",
        ]
        if self.username:
            cmd[3:3] = ["--dest-creds", f"{self.username}:{self.password}"]
        subprocess.run(cmd, check=True, capture_output=True)
        return dest


def _write_config(workdir: Path, port: int, auth_yaml: str, http_extra: str = "") -> Path:
    cfg = workdir / "config.yml"
    cfg.write_text(f"""version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {workdir / "data"}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  secret: boxlite-test-secret
{http_extra}{auth_yaml}""")
    return cfg


def _self_signed(workdir: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert path, key path)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = workdir / "tls.crt", workdir / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def start_registry(workdir: Path, auth: str | None = None, tls: bool = False) -> RegistryServer:
    """Start a registry (``auth``: None, ``"htpasswd"`` or ``"token"``; ``tls``: https with a
    self-signed certificate) and wait for it."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    auth_yaml = ""
    username = password = None
    extras: list[object] = []
    if auth == "htpasswd":
        htpasswd = workdir / "htpasswd"
        subprocess.run(["htpasswd", "-Bbc", str(htpasswd), USERNAME, PASSWORD], check=True, capture_output=True)
        auth_yaml = f"auth:\n  htpasswd:\n    realm: boxlite-test\n    path: {htpasswd}\n"
        username, password = USERNAME, PASSWORD
    elif auth == "token":
        from .registry_token import TokenServer

        ts = TokenServer(workdir / "token", {USERNAME: PASSWORD})
        ts.start()
        extras.append(ts)
        auth_yaml = (
            f"auth:\n  token:\n    realm: {ts.realm}\n    service: {ts.service}\n"
            f"    issuer: {ts.issuer}\n    rootcertbundle: {ts.cert_path}\n"
        )
        username, password = USERNAME, PASSWORD
    elif auth is not None:
        raise ValueError(f"unknown auth mode {auth!r}")
    http_extra = ""
    if tls:
        cert, key = _self_signed(workdir)
        http_extra = f"  tls:\n    certificate: {cert}\n    key: {key}\n"
    cfg = _write_config(workdir, port, auth_yaml, http_extra)
    with open(workdir / "registry.log", "wb") as log:
        proc = subprocess.Popen([REGISTRY_BIN, "serve", str(cfg)], stdout=log, stderr=log)
    server = RegistryServer(f"127.0.0.1:{port}", workdir, auth, proc, username, password, extras, tls)
    deadline = time.monotonic() + 15
    while True:
        try:
            urllib.request.urlopen(f"{server.url}/v2/", timeout=1, context=_no_verify()).close()
            break
        except urllib.error.HTTPError:
            break  # 401: up, wants auth
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                server.stop()
                log_text = (workdir / "registry.log").read_text()
                raise RuntimeError(f"registry did not start: {log_text}") from None
            time.sleep(0.05)
    return server
