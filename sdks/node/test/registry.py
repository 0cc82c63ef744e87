"""Start a local registry with busybox pushed; print its host; stop at EOF on stdin."""

import shutil
import sys
import tempfile
from pathlib import Path

from support.images import busybox_layout
from support.registry import start_registry

workdir = Path(tempfile.mkdtemp(prefix="boxlite-node-registry-"))
server = start_registry(workdir)
try:
    print(server.push_layout(busybox_layout(), "busybox"), flush=True)
    sys.stdin.read()
finally:
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)
