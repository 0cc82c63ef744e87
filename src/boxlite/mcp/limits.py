"""What one MCP tool call may move or take: an MCP client is an untrusted agent, and a box's
output is hostile bytes. The HTTP transport also has the REST server's request body limit
(``server.limits.MAX_BODY``), which a ``write_file`` call fits within."""

from __future__ import annotations

MAX_OUTPUT = 256 << 10
"""Bytes of stdout (and, separately, of stderr) an ``exec``/``run_code`` result carries; more
is read and dropped (the command keeps running until it ends or times out)."""
PROGRESS_CHUNK = 8 << 10
"""Largest output slice sent in one progress notification."""
DEFAULT_TIMEOUT = 60.0
"""Seconds an ``exec``/``run_code`` may run when the client gives no timeout."""
MAX_TIMEOUT = 1800.0
"""Largest timeout a client may ask for."""
KILL_GRACE = 10.0
"""Seconds past the timeout after which the server kills the command itself and returns."""
MAX_FILE = 512 << 10
"""Bytes of one file ``read_file`` returns or ``write_file`` writes."""
MAX_LIST_ENTRIES = 1000
"""Entries ``list_files`` returns (``truncated`` says when there were more)."""
MAX_LIST_SCAN = 64 << 20
"""Bytes of the directory's tar stream ``list_files`` reads (entries are listed from headers;
file contents are skipped but still cross the wire)."""
FILE_DEADLINE = 60.0
"""Seconds a ``read_file``/``write_file``/``list_files`` call may take."""
LOG_TAIL = 64 << 10
"""Bytes of a box's main-process log the ``boxlite://boxes/{box}/logs`` resource returns (its end)."""
MAX_PATH = 4096
"""Bytes of a box path argument."""
MAX_ARGS = 4096
"""Entries of a command line (arguments and environment)."""
MAX_SESSIONS = 64
"""MCP sessions a ``serve --mcp`` keeps at once over HTTP (the SDK's default is 10,000)."""
SESSION_IDLE = 600.0
"""Seconds an idle HTTP session is kept."""
MAX_CODE = 256 << 10
"""Bytes of source ``run_code`` accepts."""
