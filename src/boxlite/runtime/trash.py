"""Box directories deleted off the caller's path.

Removing a box used to delete its directory before returning (a millisecond or more per box:
every layer directory, the agent's files). Now the directory is renamed into ``<home>/trash``
at once (the box is gone: its id and name are free, nothing reads it again) and emptied by one
background thread. The thread is not a daemon: a process that exits waits for it, so a CLI
``run --rm`` leaves nothing behind; what a killed process left is emptied by the next runtime
that opens the home (:func:`Trash.sweep`). Where the rename cannot be made (another file system
mounted at ``boxes/``), the directory is deleted in place as before.
"""

from __future__ import annotations

import collections
import os
import secrets
import threading
from pathlib import Path

from ..fsutil.dirfd import remove_tree


class Trash:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._pending: collections.deque[Path] = collections.deque()
        self._worker: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()

    def discard(self, path: Path) -> None:
        """Make ``path`` disappear now; its contents are deleted in the background."""
        moved = self.root / f"{path.name}.{secrets.token_hex(4)}"
        try:
            try:
                os.rename(path, moved)
            except FileNotFoundError:
                if not os.path.lexists(path):
                    return  # nothing to delete
                os.makedirs(self.root, 0o700, exist_ok=True)  # first use in this home
                os.rename(path, moved)
        except OSError:
            remove_tree(path)
            return
        self._queue(moved)

    def sweep(self) -> None:
        """Queue what a killed process left in the trash (nothing to do in the usual case)."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return
        for name in names:
            self._queue(self.root / name)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the trash is empty (True) or ``timeout`` passes (False)."""
        return self._idle.wait(timeout)

    def _queue(self, path: Path) -> None:
        with self._lock:
            self._pending.append(path)
            self._idle.clear()
            if self._worker is None:
                self._worker = threading.Thread(target=self._drain, name="boxlite-trash")
                self._worker.start()

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._worker = None
                    self._idle.set()
                    return
                path = self._pending.popleft()
            remove_tree(path)
