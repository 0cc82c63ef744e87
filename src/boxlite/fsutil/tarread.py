"""A tar reader for streams nobody vouches for (a box's copy_out, a hostile guest agent).

Python's ``tarfile`` is not used to parse these: its parser differs between the 3.11 patch
releases this project runs on (Debian's 3.11.2 has no extraction filters and the PAX-header
ReDoS of CVE-2024-6232; both lack the CVE-2025-8194 fix for negative offsets), it keeps every
member in memory and reads a PAX or GNU long-name header of any size into memory. This reader
keeps only the current entry, caps every header, and accepts what GNU tar and Python write:
ustar, PAX (path, linkpath, size, mtime, GNU sparse 0.0 / 0.1 / 1.0) and GNU long names.
Anything else is refused with :class:`UnsafeArchiveError`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..errors import UnsafeArchiveError

BLOCK = 512
MAX_META_BYTES = 1 << 20  # PAX + GNU long-name headers in front of one entry
MAX_SPARSE_REGIONS = 1 << 16  # data regions of one sparse file
MAX_MTIME = 9_000_000_000  # (year 2255) times in ns still fit the kernel's 64 bits
MAX_FILE_SIZE = 1 << 60  # larger sizes and offsets would overflow off_t arithmetic
CHUNK = 1 << 20
_ZERO_BLOCK = bytes(BLOCK)
_KINDS = {
    b"0": "file", b"\0": "file", b"7": "file", b"1": "hardlink", b"2": "symlink", b"5": "dir",
    b"3": "special", b"4": "special", b"6": "special",
}  # fmt: skip


@dataclass
class Entry:
    """One member. ``regions``: (offset, length) of the data a regular file holds (a dense file
    is one region); everything else in ``[0, realsize)`` is a hole."""

    name: str
    kind: str  # file | dir | symlink | hardlink | special
    mode: int
    mtime: float
    linkname: str = ""
    realsize: int = 0
    regions: list[tuple[int, int]] = field(default_factory=list)


def _bad(what: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"malformed archive: {what}")


def _number(field_: bytes, what: str) -> int:
    """An octal or base-256 (GNU) header number; negative values are refused."""
    if field_[:1] == b"\x80":
        return int.from_bytes(field_[1:], "big")
    if field_[:1] and field_[0] & 0x80:
        raise _bad(f"negative or oversized {what}")
    text = field_.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    if not all(48 <= c <= 55 for c in text):
        raise _bad(f"{what} is not an octal number")
    return int(text, 8)


def _decimal(text: bytes | str, what: str) -> int:
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogateescape")
    if not text or len(text) > 20 or not text.isdigit():
        raise _bad(f"{what} is not a decimal number")
    return int(text)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _cstr(raw: bytes) -> str:
    return _text(raw.split(b"\0", 1)[0])


def _checksum_ok(buf: bytes) -> bool:
    stored = _number(buf[148:156], "checksum")
    unsigned = sum(buf[:148]) + 256 + sum(buf[156:])
    signed = sum(struct.unpack("148b8x356b", buf)) + 256
    return stored in (unsigned, signed)


def parse_pax(data: bytes) -> tuple[dict[str, str], list[int], list[int]]:
    """PAX records ``"%d key=value\\n"`` -> (keys, GNU.sparse.offset list, numbytes list)."""
    out: dict[str, str] = {}
    offsets: list[int] = []
    numbytes: list[int] = []
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.find(b" ", pos, pos + 21)
        if space < 0:
            raise _bad("PAX record without length")
        length = _decimal(data[pos:space], "PAX record length")
        end = pos + length
        if end <= space + 1 or end > len(data) or data[end - 1] != 0x0A:
            raise _bad("PAX record length")
        key, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not eq or not key:
            raise _bad("PAX record without '='")
        skey = _text(key)
        if skey == "GNU.sparse.offset":
            offsets.append(_decimal(value, skey))
        elif skey == "GNU.sparse.numbytes":
            numbytes.append(_decimal(value, skey))
        else:
            out[skey] = _text(value)
        pos = end
    return out, offsets, numbytes


class TarReader:
    """Entries of a tar stream, one at a time. ``read(n)`` returns up to ``n`` bytes (``b""``
    at the end). The data of an entry not read through :meth:`data` is skipped."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._src = read
        self._remaining = 0  # data bytes of the current entry still in the stream
        self._padding = 0
        self._entry: Entry | None = None
        self.done = False

    # -- raw reading ----------------------------------------------------------------------
    def _exact(self, n: int) -> bytes:
        parts: list[bytes] = []
        got = 0
        while got < n:
            chunk = self._src(min(n - got, CHUNK))
            if not chunk:
                raise _bad("unexpected end of stream")
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def _skip(self, n: int) -> None:
        while n > 0:
            n -= len(self._exact(min(n, CHUNK)))

    def _meta(self, size: int, budget: list[int]) -> bytes:
        """An extended header's content (size checked against the per-entry budget)."""
        budget[0] -= size
        if budget[0] < 0:
            raise _bad(f"extended headers larger than {MAX_META_BYTES} bytes")
        data = self._exact(size)
        self._skip(-size % BLOCK)
        return data

    # -- entries --------------------------------------------------------------------------
    def next(self) -> Entry | None:
        """The next entry, or None at the end of the archive (zero block or end of stream)."""
        if self.done:
            return None
        self._skip(self._remaining + self._padding)
        self._remaining = self._padding = 0
        pax: dict[str, str] = {}
        offsets: list[int] = []
        numbytes: list[int] = []
        longname = longlink = None
        budget = [MAX_META_BYTES]
        while True:
            first = self._src(BLOCK)
            if not first:
                if pax or longname is not None or longlink is not None:
                    raise _bad("extended header without an entry")
                self.done = True
                return None
            buf = first if len(first) == BLOCK else first + self._exact(BLOCK - len(first))
            if buf == _ZERO_BLOCK:
                self.done = True
                return None
            if not _checksum_ok(buf):
                raise _bad("header checksum")
            kind = buf[156:157]
            size = _number(buf[124:136], "size")
            if kind == b"x":
                more, offs, nums = parse_pax(self._meta(size, budget))
                pax.update(more)
                offsets += offs
                numbytes += nums
            elif kind == b"g":
                self._meta(size, budget)  # global defaults: not applied
            elif kind == b"L":
                longname = _cstr(self._meta(size, budget))
            elif kind == b"K":
                longlink = _cstr(self._meta(size, budget))
            else:
                return self._entry_from(buf, kind, size, pax, longname, longlink, offsets, numbytes)

    def _entry_from(
        self, buf: bytes, kind: bytes, size: int, pax: dict[str, str], longname: str | None,
        longlink: str | None, offsets: list[int], numbytes: list[int],
    ) -> Entry:  # fmt: skip
        self._entry = None
        name = _cstr(buf[0:100])
        if buf[257:263] == b"ustar\x00" and buf[345] != 0:  # POSIX ustar prefix field
            name = _cstr(buf[345:500]) + "/" + name
        name = pax.get("GNU.sparse.name") or pax.get("path") or longname or name
        if kind not in _KINDS:
            raise UnsafeArchiveError(f"unsupported archive entry type {kind!r} for {name!r}")
        what = _KINDS[kind]
        if kind == b"\0" and name.endswith("/"):
            what = "dir"  # pre-POSIX directory
        if "size" in pax:
            size = _decimal(pax["size"], "PAX size")
        if size > MAX_FILE_SIZE:
            raise _bad(f"size of {name!r}")
        try:
            mtime = float(pax["mtime"]) if "mtime" in pax else float(_number(buf[136:148], "mtime"))
        except ValueError:
            raise _bad(f"mtime of {name!r}") from None
        entry = Entry(
            name=name,
            kind=what,
            mode=_number(buf[100:108], "mode") & 0o7777,
            mtime=min(max(mtime, 0.0), MAX_MTIME) if mtime == mtime else 0.0,
            linkname=pax.get("linkpath") or longlink or _cstr(buf[157:257]),
        )
        if what != "file":  # like GNU tar and tarfile: only regular files carry data
            return entry
        self._remaining, self._padding = size, -size % BLOCK
        entry.realsize, entry.regions = size, [(0, size)]
        self._sparse(entry, pax, offsets, numbytes)
        self._entry = entry
        return entry

    def _sparse(self, entry: Entry, pax: dict[str, str], offsets: list[int], numbytes: list[int]) -> None:
        """Apply GNU sparse information (PAX 0.0, 0.1 or 1.0) to a regular file."""
        if pax.get("GNU.sparse.major") == "1" and pax.get("GNU.sparse.minor") == "0":
            realsize = pax.get("GNU.sparse.realsize")
            numbers = self._sparse_map()
        elif "GNU.sparse.map" in pax:
            realsize = pax.get("GNU.sparse.size")
            raw = pax["GNU.sparse.map"]
            numbers = [_decimal(x, "sparse map") for x in raw.split(",")] if raw else []
        elif "GNU.sparse.size" in pax:
            realsize = pax["GNU.sparse.size"]
            if len(offsets) != len(numbytes):
                raise _bad("sparse offsets and sizes do not pair up")
            numbers = [n for pair in zip(offsets, numbytes, strict=True) for n in pair]
        else:
            return
        if realsize is None:
            raise _bad(f"sparse file {entry.name!r} without its real size")
        if len(numbers) % 2 or len(numbers) > 2 * MAX_SPARSE_REGIONS:
            raise _bad(f"sparse map of {entry.name!r}")
        entry.realsize = _decimal(realsize, "sparse size")
        if entry.realsize > MAX_FILE_SIZE:
            raise _bad(f"sparse size of {entry.name!r}")
        regions = list(zip(numbers[::2], numbers[1::2], strict=True))
        end = 0
        for offset, length in regions:
            if offset < end or offset + length > entry.realsize:
                raise _bad(f"sparse map of {entry.name!r} overlaps or runs past the file")
            end = offset + length
        if sum(length for _, length in regions) != self._remaining:
            raise _bad(f"sparse map of {entry.name!r} does not match its data")
        entry.regions = regions

    def _sparse_map(self) -> list[int]:
        """GNU sparse 1.0: decimal lines (count, then offset/size pairs) at the start of the
        data, padded to a block."""
        numbers: list[int] = []
        need: int | None = None
        pending = b""
        while need is None or len(numbers) < need:
            if self._remaining < BLOCK:
                raise _bad("sparse map runs past its entry")
            pending += self._exact(BLOCK)
            self._remaining -= BLOCK
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if need is not None and len(numbers) >= need:
                    break  # the rest of the block is padding
                value = _decimal(line, "sparse map")
                if need is None:
                    if value > MAX_SPARSE_REGIONS:
                        raise _bad(f"more than {MAX_SPARSE_REGIONS} sparse regions")
                    need = 2 * value
                else:
                    numbers.append(value)
            if (need is None or len(numbers) < need) and len(pending) > 20:
                raise _bad("sparse map number too long")
        return numbers

    def data(self) -> Iterator[tuple[int, bytes]]:
        """(file offset, bytes) of the current regular file's data, in stream order."""
        entry, self._entry = self._entry, None
        if entry is None:
            return
        for offset, length in entry.regions:
            while length > 0:
                chunk = self._exact(min(length, CHUNK))
                self._remaining -= len(chunk)
                yield offset, chunk
                offset += len(chunk)
                length -= len(chunk)
