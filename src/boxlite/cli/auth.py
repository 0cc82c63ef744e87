"""``boxlite auth login|logout|status|whoami``: logins to ``boxlite serve`` servers, as BoxLite's CLI.

``login`` checks the key against the server before storing it (cli/credentials.py); afterwards
every verb works on that server's boxes (``--url``/``--ray`` still choose another target;
``logout`` returns to this machine's home). API keys only: BoxLite's browser and device logins
need an OIDC provider (``--method browser|device`` says so).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from ..errors import BoxliteError, UnauthorizedError, UnsupportedOptionError
from . import credentials
from .common import STATE, print_json, want_json
from .errors import fail

API_KEY_ENV = "BOXLITE_API_KEY"
URL_ENV = "BOXLITE_REST_URL"
MAX_KEY = 4096


def profile_name() -> str:
    return credentials.check_name(STATE.profile or credentials.DEFAULT_PROFILE)


@click.group()
def auth() -> None:
    """Log in to a 'boxlite serve' server: later commands then work on its boxes."""


@auth.command()
@click.option("--url", metavar="URL", help="Server URL (default: $BOXLITE_REST_URL, else this home's socket).")
@click.option("--api-key-stdin", is_flag=True, help="Read the API key from stdin (one line), not a prompt.")
@click.option("--method", type=click.Choice(["api-key", "browser", "device"]), help="How to log in (api-key only).")
def login(url: str | None, api_key_stdin: bool, method: str | None) -> int:
    """Check an API key against a server and store it (<home>/credentials.toml, mode 0600)."""
    if method not in (None, "api-key"):
        raise UnsupportedOptionError(f"auth login --method {method}", "OIDC logins need an identity provider")
    name = profile_name()
    target = url or os.environ.get(URL_ENV) or _default_url()
    if api_key_stdin:
        key = _stdin_line()
    else:
        import getpass

        try:
            key = getpass.getpass("API key: ").strip()
        except EOFError:
            key = ""
    if not key or len(key) > MAX_KEY or any(ord(c) < 0x21 or ord(c) == 0x7F for c in key):
        raise fail("the API key is empty or not printable (credentials not saved)")
    if _in_clear(target):
        click.echo(f"boxlite: warning: {target} is plain HTTP: the API key crosses the network unencrypted", err=True)
    who = _check(target, key)
    profile = {"url": target, "api_key": key, "auth_method": "api_key"}
    prefix = who.get("path_prefix") if who else None
    if isinstance(prefix, str) and prefix:
        profile["path_prefix"] = prefix  # what BoxLite's CLI stores: it reads this file too
    file = credentials.save(STATE.home, name, profile)
    subject = _shown(who)
    click.echo(f"Logged in to {target} as {subject} (profile {name}, {file})" if subject else f"Logged in to {target}")
    return 0


@auth.command()
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def logout(yes: bool) -> int:
    """Forget the stored login of the profile (--profile, default 'default')."""
    name = profile_name()
    if credentials.load(STATE.home, name) is None:
        click.echo(f"Not logged in (profile {name}).")
        return 0
    if not yes and not click.confirm(f"Remove the stored login of profile {name} ({credentials.path(STATE.home)})?"):
        click.echo("Aborted.")
        return 1
    credentials.delete(STATE.home, name)
    click.echo(f"Logged out (profile {name}).")
    return 0


@auth.command()
def status() -> int:
    """Where later commands go and with which credential (never shows the secret)."""
    name = profile_name()
    stored = credentials.load(STATE.home, name)
    env_key = os.environ.get(API_KEY_ENV)
    url = os.environ.get(URL_ENV) or (stored or {}).get("url")
    if env_key and url:
        source = f"{API_KEY_ENV} env var"
    elif stored is not None:
        source = f"{credentials.path(STATE.home)} [{name}]"
    else:
        if want_json():
            print_json({"logged_in": False, "profile": name})
        else:
            click.echo(f"Not logged in (profile {name}).")
        return 0
    kind = "OIDC bearer token" if (stored or {}).get("auth_method") == "oidc" and not env_key else "API key"
    if want_json():
        print_json({"logged_in": True, "profile": name, "url": url, "credential": kind, "source": source})
        return 0
    click.echo(f"Logged in to:    {url}")
    click.echo(f"Credential:      {kind} (from {source})")
    return 0


@auth.command()
def whoami() -> int:
    """Ask the server who the stored (or environment's) credential is."""
    name = profile_name()
    stored = credentials.load(STATE.home, name) or {}
    url = STATE.url or os.environ.get(URL_ENV) or stored.get("url")
    if not url:
        raise fail(f"not logged in (profile {name}): run 'boxlite auth login'")
    key = STATE.api_key or (credentials.bearer(stored) if stored.get("url") == url else None)
    who = _check(url, key)
    if want_json():
        print_json({"url": url, **(who or {})})
    else:
        click.echo(f"{url}: {_shown(who) or 'accepted'}")
    return 0


def _in_clear(url: str) -> bool:
    """Plain HTTP to another machine (loopback and unix sockets stay on this one)."""
    import ipaddress
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme != "http":
        return False
    host = parts.hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def _shown(who: dict[str, Any] | None) -> str | None:
    """Who the server says the key is, fit for a terminal: the server chooses these strings, so
    anything but printable text (escape sequences) is dropped, and at most 200 characters."""
    value = (who or {}).get("display_name") or (who or {}).get("sub")
    if not isinstance(value, str):
        return None
    return "".join(c for c in value if c.isprintable())[:200] or None


def _default_url() -> str:
    """This home's ``boxlite serve`` socket (BoxLite's default is its own port 8100)."""
    return "unix://" + os.path.join(credentials.home_dir(STATE.home), "boxlite.sock")


def _stdin_line() -> str:
    line = sys.stdin.readline(MAX_KEY + 2)
    if not line:
        raise fail("no API key on stdin (credentials not saved)")
    return line.rstrip("\r\n")


def _check(url: str, key: str | None) -> dict[str, Any] | None:
    """The server's answer to ``GET /v1/me`` with ``key`` (None if it has no such route, after a
    box listing showed the key works); a refused key or an unreachable server fails the login."""
    import asyncio

    from ..api.runtime import Boxlite

    async def ask() -> dict[str, Any] | None:
        rt = Boxlite.rest(url, key)
        try:
            return await rt.whoami()
        finally:
            await rt.shutdown()

    try:
        return asyncio.run(ask())
    except UnauthorizedError as e:
        raise fail(f"{url} refused the API key: {e} (credentials not saved)") from None
    except BoxliteError as e:
        raise fail(f"cannot reach {url}: {e} (credentials not saved)") from None
