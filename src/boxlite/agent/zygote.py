"""Fork server for the namespace engine: starts boxes without paying interpreter start-up.

The host runs one zygote per runtime (``python3 -I -S -c <bootstrap> zygote <fd>``); it has the
agent imported already. Each message on its SOCK_SEQPACKET socket is a box config (JSON) with
the box's status pipe, boot log and, optionally, lifeline fds attached (SCM_RIGHTS). The zygote
forks; the child runs :func:`nsboot.boot`. The zygote exits when the socket closes.
Stdlib only.
"""

from __future__ import annotations

import os
import signal
import socket
import sys

from . import leanjson, nsboot


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # boot processes are reaped automatically
    idmaps: dict[tuple[int, int], int] = {}  # uid range -> id-mapping user namespace fd
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 1 << 16, 4)
        except OSError:
            msg = b""
        if not msg:  # the runtime is gone: nothing to clean up (no interpreter teardown, ~10 ms)
            os._exit(0)
        config = leanjson.loads(msg)
        names = ["status_fd", "log_fd", "lifeline_fd"][: len(fds)]
        config.update(zip(names, fds, strict=False))
        nsboot.reuse_idmap(config, idmaps)
        if os.fork() == 0:
            sock.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            try:
                nsboot.boot(config)
            except BaseException:
                import traceback

                traceback.print_exc()  # lands in the box's boot log (or agent log, once serving)
                sys.stderr.flush()
            finally:
                os._exit(1)
        for fd in fds:
            os.close(fd)


if __name__ == "__main__":
    main()
