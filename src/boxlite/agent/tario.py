"""copy_in / copy_out as tar streams, run in a confined child already inside the box root.

Because the child is chrooted into the box and has no capabilities, every path (``..``,
absolute symlinks, links to host files) resolves inside the box: the box cannot be used to
reach host files, whatever the archive or the box's symlinks say. Stdlib only.
"""

from __future__ import annotations

import errno
import os
import sys

from .spawn import ExecSpec

TYPE_CHECKING = False  # not from typing (~2 ms to import into every box's agent)
if TYPE_CHECKING:
    from typing import Any

MAX_DEPTH = 1024  # levels below the copied path; the host refuses deeper names too
MAX_NAME_BYTES = 4096  # one member name (PATH_MAX)
MAX_SPARSE_REGIONS = 1 << 16  # more: sent dense (the host caps regions at this number)
USTAR_MAX_SIZE = 0o77777777777


def untar(spec: ExecSpec) -> int:
    """Extract the tar on stdin. Args: ``dest``; ``name`` (top-level member); ``into``.

    ``into`` and an existing directory ``dest``: the entry lands at ``dest/name``; otherwise
    ``name`` itself is renamed to ``dest`` (docker cp semantics). ``overwrite`` false: files
    that exist already are kept (directories still merge).
    """
    import tarfile  # imported in the forked child only: keeps the idle agent small

    args = spec.builtin_args
    dest = str(args["dest"])
    name = str(args.get("name") or "")
    into = bool(args.get("into", True))
    overwrite = bool(args.get("overwrite", True))
    if into and os.path.isdir(dest):
        base, rename = dest, None
    else:
        base, rename = os.path.dirname(dest.rstrip("/")) or "/", os.path.basename(dest.rstrip("/"))
        os.makedirs(base, exist_ok=True)
    with tarfile.open(fileobj=os.fdopen(0, "rb", buffering=0), mode="r|") as tar:
        for member in tar:
            parts = member.name.split("/")
            if rename is not None and parts[0] == name:
                member.name = "/".join([rename, *parts[1:]])
            if member.name.startswith("/") or ".." in member.name.split("/"):
                print(f"refusing unsafe member {member.name!r}", file=sys.stderr)
                return 1
            if len(parts) > MAX_DEPTH + 1 or len(os.fsencode(member.name)) > MAX_NAME_BYTES:
                print(f"refusing member deeper than {MAX_DEPTH} levels or longer than {MAX_NAME_BYTES} bytes",
                      file=sys.stderr)  # fmt: skip
                return 1
            if not overwrite and not member.isdir() and os.path.lexists(os.path.join(base, member.name)):
                continue  # kept as it is (BoxLite's overwrite=False)
            tar.extract(member, base, numeric_owner=True, **_filter(tarfile))
    return 0


def tar(spec: ExecSpec) -> int:
    """Write a tar of ``src`` (member name ``name``) to stdout.

    Symlinks inside a directory are archived as links. When ``src`` itself is a symlink it is
    resolved here, inside the box root, so the box's file is copied: archiving the link would
    hand the host a link that, followed there, reads the host's file of that name.
    """
    import tarfile

    src = str(spec.builtin_args["src"])
    name = str(spec.builtin_args.get("name") or os.path.basename(src.rstrip("/")) or "root")
    if os.path.islink(src):
        src = os.path.realpath(src)
    if not os.path.lexists(src):
        print(f"no such file or directory: {spec.builtin_args['src']}", file=sys.stderr)
        return 2
    follow = bool(spec.builtin_args.get("follow_symlinks"))  # links inside dirs: copy their targets
    stream = os.fdopen(1, "wb", buffering=0)
    with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT, dereference=follow) as out:
        write_tree(out, src, name)
    return 0


class TreeLimitError(ValueError):
    """A tree too deep (or with names too long) to archive: every reader would refuse it."""


def write_tree(out: Any, src: str, arcname: str) -> None:
    """Add ``src`` to the ``tarfile.TarFile`` ``out`` as ``arcname``, like ``out.add`` (same
    order, links kept unless ``out.dereference``) but without recursion (any depth up to
    ``MAX_DEPTH`` fails cleanly, a link loop too) and with sparse files kept sparse (GNU sparse
    1.0: only data regions are sent). Shared by the agent (copy_out) and the host (copy_in)."""
    stack = [(src, arcname, 0)]
    while stack:
        path, arc, depth = stack.pop()
        if depth > MAX_DEPTH or len(os.fsencode(arc)) > MAX_NAME_BYTES:
            raise TreeLimitError(
                f"path deeper than {MAX_DEPTH} levels or longer than {MAX_NAME_BYTES} bytes: {arc[:120]}..."
            )
        info = out.gettarinfo(path, arc)
        if info is None:  # a socket: tar skips it too
            continue
        if info.isreg():
            _add_file(out, info, path)
        else:
            out.addfile(info)
        if info.isdir():
            for child in sorted(os.listdir(path), reverse=True):
                stack.append((os.path.join(path, child), f"{arc}/{child}", depth + 1))


def _add_file(out: Any, info: Any, path: str) -> None:
    with open(path, "rb") as f:  # opened before the header is written: an unreadable file adds nothing
        regions = data_regions(f.fileno(), info.size)
        if regions is None:
            out.addfile(info, f)
            return
        numbers = [len(regions)] + [n for region in regions for n in region]
        head = "".join(f"{n}\n" for n in numbers).encode()
        head += bytes(-len(head) % 512)
        stored = len(head) + sum(length for _, length in regions)
        if stored > USTAR_MAX_SIZE:  # Python's tarfile misreads sparse members needing a PAX size
            out.addfile(info, f)
            return
        parent, base = os.path.split(info.name)
        fake = f"{parent}/GNUSparseFile.0/{base}" if parent else f"GNUSparseFile.0/{base}"
        # "path" first: readers apply PAX keys in order, so GNU.sparse.name wins
        info.pax_headers = {
            "path": fake, "GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": info.name,
            "GNU.sparse.realsize": str(info.size),
        }  # fmt: skip
        info.name, info.size = fake, stored
        out.addfile(info, _SparseSource(f.fileno(), head, regions))


def data_regions(fd: int, size: int) -> list[tuple[int, int]] | None:
    """(offset, length) of the data of a file with holes; None for a dense file (or when the
    file system cannot tell, or the file has too many regions)."""
    try:
        if size == 0 or os.lseek(fd, 0, os.SEEK_HOLE) >= size:
            return None
        regions: list[tuple[int, int]] = []
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:  # only a hole from here on
                    break
                raise
            if start >= size:
                break
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            regions.append((start, end - start))
            if len(regions) > MAX_SPARSE_REGIONS:
                return None
            pos = end
        return regions
    except OSError:
        return None
    finally:
        os.lseek(fd, 0, os.SEEK_SET)


class _SparseSource:
    """File-like: the sparse map, then the data regions (read with ``pread``). A file that
    shrank meanwhile reads as zeros, so the archive stays well-formed."""

    def __init__(self, fd: int, head: bytes, regions: list[tuple[int, int]]) -> None:
        self._fd = fd
        self._head = head
        self._regions = regions
        self._index = 0

    def read(self, n: int) -> bytes:
        out = []
        if self._head:
            out.append(self._head[:n])
            self._head = self._head[n:]
            n -= len(out[0])
        while n > 0 and self._index < len(self._regions):
            offset, length = self._regions[self._index]
            want = min(n, length)
            data = os.pread(self._fd, want, offset)
            data += bytes(want - len(data))
            out.append(data)
            n -= want
            if want == length:
                self._index += 1
            else:
                self._regions[self._index] = (offset + want, length - want)
        return b"".join(out)


def _filter(tarfile: Any) -> dict[str, Any]:
    # Inside the box root any path is the box's own, so the permissive "tar" filter is enough;
    # it still strips setuid bits and absolute names. Older Pythons lack filters.
    return {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}


BUILTINS = {"untar": untar, "tar": tar}
