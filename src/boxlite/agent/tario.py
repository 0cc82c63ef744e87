"""copy_in / copy_out as tar streams, run in a confined child already inside the box root.

Because the child is chrooted into the box and has no capabilities, every path (``..``,
absolute symlinks, links to host files) resolves inside the box: the box cannot be used to
reach host files, whatever the archive or the box's symlinks say. Stdlib only.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from .spawn import ExecSpec


def untar(spec: ExecSpec) -> int:
    """Extract the tar on stdin. Args: ``dest``; ``name`` (top-level member); ``into``.

    ``into`` and an existing directory ``dest``: the entry lands at ``dest/name``; otherwise
    ``name`` itself is renamed to ``dest`` (docker cp semantics).
    """
    import tarfile  # imported in the forked child only: keeps the idle agent small

    args = spec.builtin_args
    dest = str(args["dest"])
    name = str(args.get("name") or "")
    into = bool(args.get("into", True))
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
        out.add(src, arcname=name, recursive=True)
    return 0


def _filter(tarfile: Any) -> dict[str, Any]:
    # Inside the box root any path is the box's own, so the permissive "tar" filter is enough;
    # it still strips setuid bits and absolute names. Older Pythons lack filters.
    return {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}


BUILTINS = {"untar": untar, "tar": tar}
