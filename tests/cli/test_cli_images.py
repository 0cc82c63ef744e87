"""``pull``, ``images``, ``rmi`` and ``run IMAGE`` against a real local registry; ``serve``."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cli import Cli, assert_one_line_error
from support.images import busybox_layout
from support.registry import REGISTRY_BIN, RegistryServer, start_registry

needs_registry = pytest.mark.skipif(
    not Path(REGISTRY_BIN).exists() or shutil.which("skopeo") is None, reason="docker-registry/skopeo not installed"
)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RegistryServer, str]]:
    server = start_registry(tmp_path_factory.mktemp("registry"))
    try:
        yield server, server.push_layout(busybox_layout(), "tools/busybox", "1.0")
    finally:
        server.stop()


@needs_registry
def test_pull_images_run_rmi(cli: Cli, registry: tuple[RegistryServer, str]) -> None:
    server, ref = registry
    cli.home.mkdir(parents=True, exist_ok=True)
    registries = [{"host": server.host, "transport": "http"}]
    (cli.home / "config.json").write_text(json.dumps({"image_registries": registries}))
    auto = cli("run", "--rm", ref, "echo", "auto-pulled")  # like docker run: pull when missing
    assert auto.returncode == 0 and auto.stdout == "auto-pulled\n", auto.stderr
    assert f"Unable to find image '{ref}' locally" in auto.stderr
    cli.ok("rmi", ref)
    out = cli.ok("pull", ref)
    assert out.startswith(f"{ref}: pulled sha256:") and "1 layers" in out
    digest = cli.ok("pull", "-q", ref).strip()  # BoxLite's -q: the config digest alone
    assert digest.startswith("sha256:") and len(digest) == 71 and cli.ok("images", "-a", "-q") == f"{ref}\n"
    [image] = cli.json("images", "--format", "json")  # type: ignore[misc]
    assert image["reference"] == ref and image["size"] > 0
    assert cli.ok("images", "-q") == f"{ref}\n"
    assert ref in cli.ok("images")
    # the image's default command (/bin/sh) runs when no CMD is given
    assert cli.ok("run", "--rm", "-i", ref, input="echo from-image\n") == "from-image\n"
    assert cli.ok("run", "--rm", "--entrypoint", "echo", ref, "hello", "world") == "hello world\n"
    cli.ok("run", "-d", "--name", "bg", ref, "sh", "-c", "echo bg-main; sleep 600")
    assert cli.ok("exec", "bg", "echo", "up") == "up\n"
    cli.ok("rm", "-f", "bg")
    [insp] = cli.json("inspect", ref)  # type: ignore[misc]
    assert insp["type"] == "image" and insp["digest"] == image["digest"]
    assert cli.ok("rmi", ref) == f"Untagged: {ref}\n"
    assert cli.ok("images", "-q") == ""
    assert_one_line_error(cli("pull", f"{server.host}/tools/missing:1"), 125, "missing")


def test_serve_delegates_to_the_server_module(cli: Cli, tmp_path: Path) -> None:
    import socket
    import subprocess
    import time

    if importlib.util.find_spec("boxlite.server") is None:
        assert_one_line_error(cli("serve"), 125, "not available")
        return
    sock_path = tmp_path / "api.sock"
    server = subprocess.Popen(cli.argv("serve", "--socket", str(sock_path), "--exit-on-stdin-eof"),
                              stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=cli.env())  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not sock_path.exists():
            assert server.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock_path))
            s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            reply = b"".join(iter(lambda: s.recv(65536), b""))
        assert reply.startswith(b"HTTP/1.1 200") and b'"ok"' in reply
        assert server.stdin is not None
        server.stdin.close()  # --exit-on-stdin-eof
        assert server.wait(timeout=30) == 0
    finally:
        server.kill()


@needs_registry
def test_config_file_and_registry_flags(tmp_path: Path) -> None:
    """``--config FILE`` (BoxLite's JSON: home_dir, image_registries with its tagged ``auth``) and
    ``--registry HOST`` (HTTPS, tried first for unqualified names)."""
    import subprocess

    from support.cli import CLI
    from support.registry import PASSWORD, USERNAME

    server = start_registry(tmp_path / "registry", auth="htpasswd")
    try:
        server.push_layout(busybox_layout(), "tools/busybox", "1.0")
        home = tmp_path / "home"
        cli = Cli(home, tmp_path)

        def config(**entry: object) -> str:
            file = tmp_path / f"config-{len(list(tmp_path.glob('config-*')))}.json"
            registry = {"host": server.host, "transport": "http", "search": True, **entry}
            file.write_text(json.dumps({"home_dir": str(home), "image_registries": [registry]}))
            return str(file)

        good = config(auth={"type": "basic", "username": USERNAME, "password": PASSWORD})
        # No --home: the config's home_dir is the home; the unqualified name is found on its registry.
        run = subprocess.run([*CLI, "--config", good, "pull", "tools/busybox:1.0"], capture_output=True, text=True,
                             env=cli.env(), timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip
        assert run.returncode == 0 and "pulled sha256:" in run.stdout, run.stderr
        assert cli.ok("images", "-q") == f"{server.host}/tools/busybox:1.0\n"
        cli.ok("rmi", f"{server.host}/tools/busybox:1.0")
        # BoxLite's documented `protocol` works as `transport`; wrong credentials are refused.
        documented = json.loads(Path(good).read_text())
        documented["image_registries"][0]["protocol"] = documented["image_registries"][0].pop("transport")
        Path(good).write_text(json.dumps(documented))
        assert "pulled sha256:" in cli.ok("--config", good, "pull", "tools/busybox:1.0")
        # Wrong credentials are refused (a qualified name: a failed search would go on to Docker Hub).
        wrong = config(auth={"type": "basic", "username": USERNAME, "password": "wrong"})
        assert_one_line_error(cli("--config", wrong, "pull", f"{server.host}/tools/busybox:1.0"), 125)
        # --registry hosts are searched first (HTTPS); one that does not answer is skipped.
        skipped = cli("--registry", "127.0.0.1:1", "--config", good, "pull", "tools/busybox:1.0", timeout=120)
        assert skipped.returncode == 0 and "pulled sha256:" in skipped.stdout, skipped.stderr
        from boxlite.cli import common

        saved = dataclasses.replace(common.STATE)
        try:
            common.STATE.home, common.STATE.registries = str(home), ["mirror.example:5000"]
            common.apply_config_file(good)
            rt = common.open_runtime()
            hosts = [(r.host, r.transport, r.search) for r in rt._local().image_manager.registries]
            assert hosts == [("mirror.example:5000", "https", True), (server.host, "http", True)]
        finally:
            common.STATE.__dict__.update(saved.__dict__)
        # Malformed files: one line each, nothing pulled.
        malformed = [
            ("{", "not valid JSON"),
            ('{"home": "/x"}', "home_dir and image_registries only"),
            ('{"image_registries": [{"host": "h", "auth": {"type": "basic"}}]}', "'auth' must be"),
        ]
        for text, needle in malformed:
            bad = tmp_path / "bad.json"
            bad.write_text(text)
            assert_one_line_error(cli("--config", str(bad), "images"), 125, needle)
        assert_one_line_error(cli("--config", str(tmp_path / "missing.json"), "images"), 125, "cannot read")
    finally:
        server.stop()
