"""``boxlite auth login|status|whoami|logout`` (BoxLite's CLI): a stored login sends every later
verb to its server, through a real ``boxlite serve`` with an API key; a credentials file that is
not safe to trust, or not BoxLite's shape, is refused with one clear line and never overwritten."""

from __future__ import annotations

import os
import stat
from datetime import datetime, timezone
from pathlib import Path

import pytest
import tomllib

from boxlite.cli import credentials
from boxlite.errors import ConfigError
from rest.serverproc import API_KEY, free_port
from support.cli import Cli, Served, assert_one_line_error


def login(cli: Cli, url: str, key: str, *extra: str) -> tuple[int, str, str]:
    proc = cli("auth", "login", "--url", url, "--api-key-stdin", *extra, input=key + "\n")
    return proc.returncode, proc.stdout, proc.stderr


def test_a_stored_login_sends_later_commands_to_its_server(cli: Cli, served: Served) -> None:
    file = cli.home / credentials.FILE_NAME
    assert cli.ok("auth", "status") == "Not logged in (profile default).\n"
    # A refused key or an unreachable server: nothing is stored.
    assert_one_line_error(cli("auth", "login", "--url", served.url, "--api-key-stdin", input="wrong\n"), 125,
                          "refused the API key", "credentials not saved")  # fmt: skip
    closed = f"http://127.0.0.1:{free_port()}"
    assert_one_line_error(cli("auth", "login", "--url", closed, "--api-key-stdin", input=API_KEY + "\n"), 125,
                          "cannot reach", "credentials not saved")  # fmt: skip
    assert not file.exists()
    code, out, err = login(cli, served.url, API_KEY)
    assert code == 0 and out.startswith(f"Logged in to {served.url} as boxlite serve"), (out, err)
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    stored = tomllib.loads(file.read_text())["profiles"]["default"]
    assert stored == {"url": served.url, "api_key": API_KEY, "auth_method": "api_key", "path_prefix": "default"}
    status = cli.ok("auth", "status")
    assert status.splitlines() == [
        f"Logged in to:    {served.url}",
        f"Credential:      API key (from {file} [default])",
    ]
    assert API_KEY not in status
    assert cli.ok("auth", "whoami") == f"{served.url}: boxlite serve\n"
    # Every verb now works on the server's boxes: run, ls, exec (whose lean path must not run it
    # locally), rm.
    box_id = cli.ok("run", "-d", "--name", "far", "--rootfs", str(cli.rootfs), "sleep", "600").strip()
    assert cli.ok("ls", "-q").split() == [box_id[-12:]]
    assert cli.ok("exec", "far", "echo", "remote") == "remote\n"
    completion = cli("rm", "fa", env={"_BOXLITE_COMPLETE": "bash_complete", "COMP_CWORD": "4",
                                      "COMP_WORDS": f"boxlite --home {cli.home} rm fa"})  # fmt: skip
    assert completion.stdout.splitlines() == ["plain,far"], completion  # names of the server's boxes
    # The environment's key wins over the stored one (BoxLite's order); a wrong one is refused.
    env_status = cli("auth", "status", env={"BOXLITE_API_KEY": "elsewhere"})
    assert "from BOXLITE_API_KEY env var" in env_status.stdout, env_status
    assert_one_line_error(cli("ls", env={"BOXLITE_API_KEY": "wrong"}), 125)
    # The stored key goes to its own URL only, never to another server named with --url.
    other = cli("--url", closed, "ls")
    assert other.returncode != 0 and API_KEY not in other.stderr
    assert_one_line_error(cli("--profile", "other", "ls"), 125, "no stored login named 'other'")
    # logout: asks first; then the home on this machine again (it has no boxes of its own).
    proc = cli("auth", "logout", input="n\n")
    assert proc.returncode == 1 and "Aborted." in proc.stdout and file.exists()
    cli.ok("--url", served.url, "--api-key", API_KEY, "rm", "-f", box_id)
    assert cli.ok("auth", "logout", "-y") == "Logged out (profile default).\n"
    assert not file.exists() and cli.ok("ls", "-a", "-q") == ""
    assert cli.ok("auth", "logout", "-y") == "Not logged in (profile default).\n"


def test_profiles_are_separate_and_other_fields_are_kept(cli: Cli, served: Served) -> None:
    file = cli.home / credentials.FILE_NAME
    expires = datetime(2027, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    credentials.save(str(cli.home), "cloud", {"url": "https://boxlite.example", "api_key": "k\"\\\n\u00e9",
                                              "expires_at": expires, "scopes": ["a", "b"], "retries": 3})  # fmt: skip
    assert cli("--profile", "local", "auth", "login", "--url", served.url, "--api-key-stdin",
               input=API_KEY + "\n").returncode == 0  # fmt: skip
    profiles = tomllib.loads(file.read_text())["profiles"]
    assert profiles["cloud"] == {"url": "https://boxlite.example", "api_key": "k\"\\\n\u00e9", "expires_at": expires,
                                 "scopes": ["a", "b"], "retries": 3}  # fmt: skip
    assert profiles["local"]["url"] == served.url and "default" not in profiles
    assert cli.ok("--profile", "local", "ls", "-q") == ""
    assert "Not logged in (profile default)." in cli.ok("auth", "status")
    assert cli.ok("--profile", "local", "auth", "logout", "-y") == "Logged out (profile local).\n"
    assert set(tomllib.loads(file.read_text())["profiles"]) == {"cloud"}


@pytest.fixture
def offline(tmp_path: Path) -> Cli:
    """The CLI on a home with no server anywhere: only the credentials file matters."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    return Cli(home, tmp_path)


def test_an_untrustworthy_credentials_file_is_refused(offline: Cli, tmp_path: Path) -> None:
    file = offline.home / credentials.FILE_NAME
    file.write_text('[profiles.default]\nurl = "http://127.0.0.1:9"\napi_key = "k"\n')
    file.chmod(0o620)  # someone else could point this user's commands (and key) at their server
    assert_one_line_error(offline("ls"), 125, "not trusted", "chmod 600")
    file.chmod(0o600)
    elsewhere = tmp_path / "planted.toml"
    file.rename(elsewhere)
    file.symlink_to(elsewhere)
    assert_one_line_error(offline("ls"), 125, "cannot read the credentials file")
    file.unlink()
    file.write_text("[profiles.default\nurl = ")
    file.chmod(0o600)
    assert_one_line_error(offline("ls"), 125, "not valid TOML")
    file.write_text("[profiles.default]\napi_key = 'no url'\n")
    assert_one_line_error(offline("auth", "status"), 125, "has no url")
    file.write_bytes(b"#" * (credentials.MAX_FILE + 1))
    assert_one_line_error(offline("ls"), 125, "larger than")
    # A file this code cannot rewrite whole (a table inside a profile) is left as it is.
    text = '[profiles.default]\nurl = "http://127.0.0.1:9"\n[profiles.default.extra]\nx = 1\n'
    file.write_text(text)
    with pytest.raises(ConfigError, match="cannot rewrite"):
        credentials.save(str(offline.home), "other", {"url": "http://127.0.0.1:10", "api_key": "k"})
    assert file.read_text() == text
    with pytest.raises(ConfigError, match="profile names"):
        credentials.save(str(offline.home), "bad name]", {"url": "http://x"})
    assert_one_line_error(offline("auth", "login", "--method", "browser"), 125, "OIDC")
    assert_one_line_error(offline("auth", "login", "--url", "http://127.0.0.1:9", "--api-key-stdin", input="\n"),
                          125, "empty")  # fmt: skip


def test_the_lean_exec_path_leaves_a_logged_in_home_to_the_full_cli(offline: Cli) -> None:
    """With a credentials file the lean ``boxlite exec`` steps aside (the full CLI decides where
    the command goes): here the stored server does not answer, so the exec fails reaching it."""
    file = offline.home / credentials.FILE_NAME
    file.write_text(f'[profiles.default]\nurl = "http://127.0.0.1:{free_port()}"\napi_key = "k"\n')
    file.chmod(0o600)
    proc = offline("exec", "somebox", "true")
    assert proc.returncode == 125 and "127.0.0.1" in proc.stderr, proc.stderr
    assert os.path.exists(file)
