"""``python -m boxlite.server``: run the REST server (the ``boxlite serve`` CLI calls ``serve``)."""

from __future__ import annotations

import argparse
import sys

from ..errors import BoxliteError
from .listen import serve


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m boxlite.server", description=__doc__)
    ap.add_argument("--home", help="runtime home (default: $BOXLITE_HOME or ~/.boxlite)")
    ap.add_argument("--socket", dest="socket_path", help="unix socket path (default: <home>/boxlite.sock)")
    ap.add_argument("--host", help="TCP address to listen on (needs an API key)")
    ap.add_argument("--port", type=int, help="TCP port")
    ap.add_argument("--api-key", help="bearer token clients must send (default: $BOXLITE_API_KEY)")
    ap.add_argument("--insecure-no-auth", action="store_true", help="allow TCP without a key (loopback only)")
    ap.add_argument("--exit-on-stdin-eof", action="store_true", help="stop when stdin is closed")
    ap.add_argument("--log-level", default="warning")
    ap.add_argument("--mcp", action="store_true", help="also serve MCP (streamable HTTP) at /mcp")
    ap.add_argument(
        "--allow-host-path", action="append", default=[], metavar="DIR",
        help="TCP clients may name DIR itself as a volume or rootfs_path (repeatable; default: none)",
    )  # fmt: skip
    ap.add_argument(
        "--allow-any-host-path", action="store_true",
        help="TCP clients may name any host path (they get the host: BoxLite's behaviour)",
    )  # fmt: skip
    ap.add_argument(
        "--allow-registry", action="append", default=[], metavar="HOST[:PORT]",
        help="pulls for TCP clients may reach this registry at a non-public address (repeatable)",
    )  # fmt: skip
    ap.add_argument(
        "--allow-any-registry", action="store_true",
        help="pulls for TCP clients may connect anywhere (BoxLite's behaviour)",
    )  # fmt: skip
    ap.add_argument(
        "--allow-box-lan", action="store_true",
        help="boxes TCP clients create may reach private networks (default: public addresses only)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    try:
        serve(args.home, args.socket_path, args.host, args.port, args.api_key, args.insecure_no_auth,
              exit_on_stdin_eof=args.exit_on_stdin_eof, log_level=args.log_level, mcp=args.mcp,
              allow_host_paths=args.allow_host_path, allow_any_host_path=args.allow_any_host_path,
              allow_registries=args.allow_registry, allow_any_registry=args.allow_any_registry,
              allow_box_lan=args.allow_box_lan)  # fmt: skip
    except BoxliteError as e:
        print(f"boxlite serve: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
