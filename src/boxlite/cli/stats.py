"""``stats``: CPU, memory and pids of running boxes (live on a terminal, else one snapshot)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator

import click

from ..api.box import Box
from ..api.results import BoxMetrics
from ..api.runtime import Boxlite
from .common import complete_box, find_box, human_size, print_json, print_table, short_id, want_json, with_runtime

HEADERS = ["ID", "NAME", "CPU %", "MEM", "MEM PEAK", "PIDS", "NET I/O", "REFUSED"]


@click.command()
@click.option("--no-stream", is_flag=True, help="Print one snapshot (the default when stdout is not a terminal).")
@click.option("-s", "--stream", is_flag=True,
              help="Keep updating into a pipe too (BoxLite's flag): a table per interval.")  # fmt: skip
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds between live updates.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "yaml"]), default="table", show_default=True,
              help="json: one JSON line per interval (streams until Ctrl-C unless --no-stream); "
                   "yaml: one snapshot (a document per interval with --stream).")  # fmt: skip
@click.argument("boxes", nargs=-1, metavar="[BOX]...", shell_complete=complete_box)
@with_runtime
async def stats(
    rt: Boxlite, boxes: tuple[str, ...], no_stream: bool, interval: float, fmt: str = "table", stream: bool = False
) -> int:
    """Resource usage of running boxes (Ctrl-C ends the live view)."""
    if stream and no_stream:
        raise click.UsageError("--stream and --no-stream exclude each other")
    targets = [await find_box(rt, ref) for ref in boxes] if boxes else await _running(rt)
    metrics = await _sample(targets)
    pause = max(interval, 0.1)
    if fmt == "json":
        await _json_lines(rt, boxes, targets, metrics, None if no_stream else pause)
    elif fmt == "yaml":
        await _yaml_documents(rt, boxes, targets, metrics, pause if stream else None)
    elif want_json():
        print_json([{"id": b.id, "name": b.name, **m.__dict__} for b, m in zip(targets, metrics, strict=True)])
    elif stream and not sys.stdout.isatty():
        await _tables(rt, boxes, targets, metrics, pause)
    elif no_stream or not sys.stdout.isatty():
        print_table(HEADERS, _rows(targets, metrics, None, 0.0))
    else:
        await _live(rt, boxes, targets, metrics, pause)
    return 0


async def _running(rt: Boxlite) -> list[Box]:
    return [b for i in await rt.list_info("running") if (b := await rt.get(i.id)) is not None]


async def _sample(targets: list[Box]) -> list[BoxMetrics]:
    return list(await asyncio.gather(*(b.metrics() for b in targets)))


def _rows(
    targets: list[Box], metrics: list[BoxMetrics], before: dict[str, float] | None, elapsed: float
) -> list[tuple[object, ...]]:
    """CPU % over the last interval when a previous sample exists, else since the box started."""
    rows: list[tuple[object, ...]] = []
    for box, m in zip(targets, metrics, strict=True):
        cpu = m.cpu_percent
        if before is not None and box.id in before and m.cpu_time_ms is not None and elapsed > 0:
            cpu = (m.cpu_time_ms - before[box.id]) / (elapsed * 1000) * 100
        cpu_text = "-" if cpu is None else f"{cpu:.2f}%"
        pids = "-" if m.pids is None else m.pids
        rows.append((short_id(box.id), box.name or "", cpu_text, human_size(m.memory_bytes),
                     human_size(m.memory_peak_bytes), pids, _net_io(m), _refused(m)))  # fmt: skip
    return rows


def _net_io(m: BoxMetrics) -> str:
    """Received / sent, as docker stats shows it."""
    if m.network_bytes_received is None and m.network_bytes_sent is None:
        return "-"
    return f"{human_size(m.network_bytes_received)} / {human_size(m.network_bytes_sent)}"


def _refused(m: BoxMetrics) -> str:
    """Flows (and DNS names) the box's allow-list refused; "-" for a box without one."""
    if m.network_connections_refused is None:
        return "-"
    return str(m.network_connections_refused + (m.network_dns_refused or 0))


async def _live(rt: Boxlite, refs: tuple[str, ...], targets: list[Box], metrics: list[BoxMetrics],
                interval: float) -> None:  # fmt: skip
    from rich.live import Live
    from rich.table import Table

    def render(rows: list[tuple[object, ...]]) -> Table:
        table = Table(box=None, pad_edge=False, header_style="bold")
        for h in HEADERS:
            table.add_column(h)
        for row in rows:
            table.add_row(*(str(c) for c in row))
        return table

    live: Live | None = None
    try:
        async for boxes, now, before, elapsed in _samples(rt, refs, targets, metrics, interval):
            table = render(_rows(boxes, now, before, elapsed))
            if live is None:
                live = Live(table, auto_refresh=False)
                live.start()
            else:
                live.update(table, refresh=True)
    finally:
        if live is not None:
            live.stop()


async def _samples(
    rt: Boxlite, refs: tuple[str, ...], targets: list[Box], metrics: list[BoxMetrics], interval: float | None
) -> AsyncIterator[tuple[list[Box], list[BoxMetrics], dict[str, float] | None, float]]:
    """The boxes and their metrics now, then every ``interval`` s (None: only now), with the CPU
    times of the sample before and the seconds since it (CPU % over the last interval)."""
    before: dict[str, float] | None = None
    last = time.monotonic()
    while True:
        now = time.monotonic()
        yield targets, metrics, before, now - last
        if interval is None:
            return
        before = {b.id: m.cpu_time_ms for b, m in zip(targets, metrics, strict=True) if m.cpu_time_ms is not None}
        last = now
        await asyncio.sleep(interval)
        if not refs:  # no boxes named: whichever run now
            targets = await _running(rt)
        metrics = await _sample(targets)


async def _tables(
    rt: Boxlite, refs: tuple[str, ...], targets: list[Box], metrics: list[BoxMetrics], interval: float
) -> None:
    """``--stream`` into a pipe or file: a plain table per interval, a blank line between (no
    terminal control codes)."""
    async for boxes, now, before, elapsed in _samples(rt, refs, targets, metrics, interval):
        print_table(HEADERS, _rows(boxes, now, before, elapsed))
        click.echo()
        sys.stdout.flush()


async def _yaml_documents(
    rt: Boxlite, refs: tuple[str, ...], targets: list[Box], metrics: list[BoxMetrics], interval: float | None
) -> None:
    """The boxes' metrics as a YAML list; with ``interval`` a ``---`` document per interval."""
    from . import yamlout

    async for boxes, now, _, _ in _samples(rt, refs, targets, metrics, interval):
        data = [{"id": b.id, "name": b.name, **m.__dict__} for b, m in zip(boxes, now, strict=True)]
        click.echo(("---\n" if interval is not None else "") + yamlout.dump(data), nl=False)
        sys.stdout.flush()


async def _json_lines(
    rt: Boxlite, refs: tuple[str, ...], targets: list[Box], metrics: list[BoxMetrics], interval: float | None
) -> None:
    """One JSON object per line and interval: ``{"time": ISO, "boxes": [{id, name, cpu_percent, ...}]}``,
    CPU % over the last interval (since the box started on the first line). ``interval`` None: one line."""
    import json
    from datetime import datetime, timezone

    async for boxes, now, before, elapsed in _samples(rt, refs, targets, metrics, interval):
        rows = []
        for box, m in zip(boxes, now, strict=True):
            data = {"id": box.id, "name": box.name, **m.__dict__}
            if before is not None and box.id in before and m.cpu_time_ms is not None and elapsed > 0:
                data["cpu_percent"] = round((m.cpu_time_ms - before[box.id]) / (elapsed * 1000) * 100, 2)
            rows.append(data)
        stamp = datetime.now(timezone.utc).isoformat()
        click.echo(json.dumps({"time": stamp, "boxes": rows}, default=str))
        sys.stdout.flush()
