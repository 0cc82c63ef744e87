"""Shared plumbing: global options, the runtime, box lookup, output formatting."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..errors import NotFoundError
from .errors import fail

if TYPE_CHECKING:  # imported when a verb opens the runtime: `boxlite --help` needs none of it
    from ..api.box import Box
    from ..api.runtime import Boxlite
    from ..layout import BoxLayout

T = TypeVar("T")
SHORT_ID = 12
MIN_PREFIX = 4
"""Shortest id prefix (or suffix) a box reference may be: fewer characters match too much by chance."""


@dataclass
class Globals:
    """Options given before the verb (``boxlite --home H --debug --json VERB``)."""

    home: str | None = None
    debug: bool = False
    json: bool = False
    url: str | None = None
    """``--url``: a ``boxlite serve`` server instead of the home on this machine."""
    api_key: str | None = None
    ray: str | None = None
    """``--ray``: the address of a Ray cluster whose nodes hold the boxes."""
    profile: str | None = None
    """``--profile``: the stored login (cli/credentials.py) to use; None: "default"."""
    registries: list[str] = field(default_factory=list)
    """``--registry HOST``: tried first for unqualified image names (HTTPS, searched)."""
    config_registries: list[Any] = field(default_factory=list)
    """``image_registries`` of ``--config FILE`` (``ImageRegistry`` objects)."""

    @property
    def remote(self) -> bool:
        return bool(self.url or self.ray)


STATE = Globals()


def configure_logging(debug: bool) -> None:
    """Library warnings are noise in a CLI (e.g. VM probe results when the namespace engine
    is used): errors only, unless ``--debug`` or ``BOXLITE_LOG`` (see ``logsetup``)."""
    from .logsetup import configure

    configure(debug)


def apply_stored_login() -> None:
    """A stored login (``boxlite auth login``) sends the verb to its server unless ``--url`` or
    ``--ray`` chose a target. Its key goes only to its own URL: with ``--url`` naming another
    server, the key must come from ``--api-key``/``$BOXLITE_API_KEY``, which win anyway."""
    from . import credentials

    if STATE.ray or not credentials.exists(STATE.home):
        if STATE.profile and not STATE.ray:
            raise fail(f"no stored login named {STATE.profile!r} (see 'boxlite auth login')")
        return
    stored = credentials.load(STATE.home, STATE.profile or credentials.DEFAULT_PROFILE)
    if stored is None:
        if STATE.profile:
            raise fail(f"no stored login named {STATE.profile!r} (see 'boxlite auth login')")
        return
    if STATE.url is None:
        STATE.url = stored["url"]
    if STATE.api_key is None and STATE.url == stored["url"]:
        STATE.api_key = credentials.bearer(stored)


MAX_CONFIG_FILE = 1 << 20


def apply_config_file(file: str) -> None:
    """``--config FILE``: BoxLite's runtime options as JSON, ``{"home_dir": ..., "image_registries":
    [...]}`` (``--home`` wins over ``home_dir``; ``--registry`` hosts go before these)."""
    import json

    from ..errors import ConfigError
    from ..images.registry_config import ImageRegistry

    try:
        with open(file, "rb") as f:
            raw = f.read(MAX_CONFIG_FILE + 1)
    except OSError as e:
        raise ConfigError(f"cannot read the config file {file}: {e.strerror}") from None
    if len(raw) > MAX_CONFIG_FILE:
        raise ConfigError(f"the config file {file} is larger than {MAX_CONFIG_FILE} bytes")
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise ConfigError(f"the config file {file} is not valid JSON: {e}") from None
    known = {"home_dir", "image_registries"}
    if not isinstance(doc, dict) or set(doc) - known:
        extra = sorted(set(doc) - known) if isinstance(doc, dict) else type(doc).__name__
        raise ConfigError(f"the config file {file} takes home_dir and image_registries only, not {extra}")
    home, entries = doc.get("home_dir"), doc.get("image_registries", [])
    if home is not None and (not isinstance(home, str) or not home):
        raise ConfigError(f"the config file {file}: home_dir must be a path")
    if not isinstance(entries, list):
        raise ConfigError(f"the config file {file}: image_registries must be a list")
    STATE.config_registries = [ImageRegistry.from_dict(e) for e in entries]
    if STATE.home is None and home:
        STATE.home = os.path.expanduser(home)


def open_runtime() -> Boxlite:
    """The home on this machine, or (``--url``) a ``boxlite serve`` server, or (``--ray``) a Ray cluster."""
    from ..api.options import Options
    from ..api.runtime import Boxlite
    from ..images.registry_config import ImageRegistry

    if STATE.url and STATE.ray:
        raise fail("give --url or --ray, not both")
    if STATE.url:
        return Boxlite.rest(STATE.url, STATE.api_key)
    if STATE.ray:
        return Boxlite.ray(address=STATE.ray, lazy_create=False)  # a box is used by later commands: made at once
    registries = [ImageRegistry(host, search=True) for host in STATE.registries] + STATE.config_registries
    return Boxlite(Options(home_dir=STATE.home, image_registries=registries))


def is_local(rt: Boxlite) -> bool:
    """Whether ``rt`` has a home on this machine (its boxes' log files can be read directly)."""
    from ..errors import InvalidStateError

    try:
        rt._local()
    except InvalidStateError:
        return False
    return True


def local_only(rt: Boxlite, what: str) -> None:
    """Refuse, in one line, what needs the box files of a home on this machine."""
    if not is_local(rt):
        raise fail(f"{what} needs a home on this machine: not available with --url or --ray")


def run_async(fn: Callable[[Boxlite], Awaitable[T]]) -> T:
    """Run ``fn(runtime)`` on a fresh event loop and shut the runtime down afterwards."""

    async def body() -> T:
        rt = open_runtime()
        try:
            return await fn(rt)
        finally:
            await rt.shutdown()

    import asyncio  # here, not at the top: `boxlite --help` / `--version` need no event loop

    return asyncio.run(body())


def with_runtime(fn: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """Decorator: an ``async def verb(rt, **params)`` becomes a synchronous click callback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        return run_async(lambda rt: fn(rt, *args, **kwargs))

    return wrapper


async def find_box(rt: Boxlite, ref: str) -> Box:
    """A box by full id, name, unique id prefix, or unique short id (the last 12 characters).
    A prefix or short id shared by several boxes is an error naming them (docker's habit)."""
    if not ref:
        raise NotFoundError("no such box: ''")
    box = await rt.get(ref)
    if box is not None:
        return box
    if len(ref) >= MIN_PREFIX:
        key = ref.upper()
        matches = [i.id for i in await rt.list_info() if i.id.upper().startswith(key) or i.id.upper().endswith(key)]
        if len(matches) == 1:
            found = await rt.get(matches[0])
            if found is not None:
                return found
        if len(matches) > 1:
            shown = ", ".join(short_id(m) for m in matches[:5]) + (", ..." if len(matches) > 5 else "")
            raise fail(f"box reference {ref!r} is ambiguous: {len(matches)} boxes match ({shown}); type more of it")
    raise NotFoundError(f"no such box: {ref}")


def short_id(box_id: str) -> str:
    return box_id[-SHORT_ID:]


def box_layout(rt: Boxlite, box_id: str) -> BoxLayout:
    """The files of a box of this (local) runtime: its main log, the recorded output of a
    foreground ``run`` (``cli_console_log``), diagnostics."""
    return rt.home.layout(box_id)


def want_json(local: bool = False, fmt: str | None = None) -> bool:
    return local or STATE.json or fmt == "json"


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Plain columns separated by three spaces (stable for humans and ``awk``)."""
    cells = [[str(c) for c in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def human_size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.3g}{unit}"
        n /= 1000
    return f"{n}"


def ago(iso_time: str | None) -> str:
    """'3 seconds ago' style age of an ISO-8601 timestamp."""
    if not iso_time:
        return "-"
    try:
        then = datetime.fromisoformat(iso_time)
    except ValueError:
        return iso_time
    secs = max(0, int((datetime.now(timezone.utc) - then).total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if secs >= size:
            n = secs // size
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "just now" if secs < 2 else f"{secs} seconds ago"


def parse_size(value: str | None, option: str, unit: int = 1 << 20) -> int | None:
    """'100k', '512m', '2g', '1.5GiB', '4096b' → bytes; a plain number counts in ``unit``."""
    if value is None:
        return None
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(i?b)?\s*", value.lower())
    if not m:
        raise fail(f"invalid {option} value {value!r} (examples: 100k, 512m, 2g)")
    scale = 1 << (10 * "kmgt".index(m[2]) + 10) if m[2] else (1 if m[3] else unit)
    size = int(float(m[1]) * scale)
    if size <= 0:
        raise fail(f"invalid {option} value {value!r} (must be more than 0)")
    return size


def parse_memory(value: str | None, option: str = "--memory") -> int | None:
    """'512m', '2g', '1.5G', '256' (a plain number is MiB) → MiB."""
    size = parse_size(value, option)
    return None if size is None else size >> 20


def env_pairs(items: Sequence[str]) -> list[tuple[str, str]]:
    """``-e KEY=VAL`` (or ``-e KEY`` to pass the host's value through, like docker)."""
    out: list[tuple[str, str]] = []
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise fail(f"invalid environment variable {item!r} (expected KEY=VALUE)")
        if not sep:
            if key not in os.environ:
                continue
            value = os.environ[key]
        out.append((key, value))
    return out


def complete_box(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Shell completion of a BOX argument: names and short ids of the boxes (``boxlite completion``).
    Never fails: a completion that cannot list boxes offers nothing."""
    from click.shell_completion import CompletionItem

    root = ctx.find_root().params
    STATE.home, STATE.url, STATE.api_key, STATE.ray, STATE.profile = (
        root.get("home"), root.get("url"), root.get("api_key"), root.get("ray"), root.get("profile")
    )  # fmt: skip

    async def names(rt: Boxlite) -> list[Any]:
        return await rt.list_info()

    try:
        apply_stored_login()  # the boxes the completed command would work on
        infos = run_async(names)
    except Exception:
        return []
    out = []
    for info in infos:
        for word in (info.name, short_id(info.id)):
            if word and word.startswith(incomplete):
                out.append(CompletionItem(word, help=f"{info.image} {info.state}"))
    return out
