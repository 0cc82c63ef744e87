"""Moving a finished copy_out from its staging directory into place.

A box's archive is extracted into a fresh directory beside the destination; only a complete,
checked extraction is moved out of it, so a copy that fails (a limit, a deadline, a hostile or
broken archive, a full disk) leaves the destination exactly as it was: no partial file in place
of a whole one, no existing file lost. Every move is planned before the first one is made (a
conflict the archive causes, such as a non-empty directory it would replace, is found while
nothing has changed yet), then made with ``rename`` inside one file system. Both trees are
walked with :class:`.dirfd.DirWalker` (``O_NOFOLLOW`` at every step): a symlink that a box
planted in the destination by an earlier copy is replaced or kept, never followed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from ..errors import UnsafeArchiveError
from .dirfd import DirWalker, is_dir, lstat_at

Action = Literal["move", "replace"]
Parts = tuple[str, ...]


@dataclass(frozen=True)
class Step:
    parts: Parts  # the same path below the staging directory and below the destination's parent
    action: Action  # move: nothing there; replace: remove what is there first


def plan(stage: DirWalker, dest: DirWalker, top: Parts, overwrite: bool) -> list[Step]:
    """What to move, in order, without changing anything. Existing directories are merged
    into (they stay, with their owner, mode and times, and only their entries are planned);
    anything else there is replaced only with ``overwrite`` (and a directory only when empty),
    otherwise kept."""
    steps: list[Step] = []
    todo = [top]
    while todo:
        parts = todo.pop()
        staged = lstat_at(stage.open_dir(parts[:-1], create=False), parts[-1])
        there = lstat_at(dest.open_dir(parts[:-1], create=False), parts[-1])
        if staged is None:
            continue
        if there is None:
            steps.append(Step(parts, "move"))
        elif is_dir(there) and is_dir(staged):
            names = sorted(os.listdir(stage.open_dir(parts, create=False)), reverse=True)
            todo.extend((*parts, name) for name in names)
        elif overwrite:
            if is_dir(there) and os.listdir(dest.open_dir(parts, create=False)):
                kind = "directory" if is_dir(staged) else "file or link"
                raise UnsafeArchiveError(
                    f"copy_out would replace the non-empty directory {'/'.join(parts)!r} with a {kind}"
                )
            steps.append(Step(parts, "replace"))
    return steps


def apply(steps: list[Step], stage: DirWalker, dest: DirWalker) -> MovedTrees:
    """Make the planned moves; returns what now lies in the destination because of them."""
    moved: set[Parts] = set()
    for step in steps:
        parts, name = step.parts, step.parts[-1]
        src_fd = stage.open_dir(parts[:-1], create=False)
        dst_fd = dest.open_dir(parts[:-1], create=False)
        if step.action == "replace":
            there, staged = lstat_at(dst_fd, name), lstat_at(src_fd, name)
            if there is not None and (is_dir(there) or is_dir(staged)):  # rename swaps only like for like
                if is_dir(there):
                    os.rmdir(name, dir_fd=dst_fd)
                else:
                    os.unlink(name, dir_fd=dst_fd)
        os.rename(name, name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
        stage.forget(parts)
        dest.forget(parts)
        moved.add(parts)
    return MovedTrees(moved)


class MovedTrees:
    """Whether a path now lies in the destination because it, or a directory above it, was
    moved. Answers are remembered per path, so asking for every directory of a deep tree costs
    about one step each (not one per level: 500,000 directories 1,000 deep would take hours)."""

    def __init__(self, moved: set[Parts]) -> None:
        self._known: dict[Parts, bool] = dict.fromkeys(moved, True)

    def __contains__(self, parts: Parts) -> bool:
        unknown = []
        while parts and parts not in self._known:
            unknown.append(parts)
            parts = parts[:-1]
        answer = self._known.get(parts, False) if parts else False
        for path in unknown:
            self._known[path] = answer
        return answer
