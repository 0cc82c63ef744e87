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
MAX_DESKTOPS = 8
"""Desktop boxes (``create_computer_box``) one server keeps at once (each is 2 CPUs, 2 GiB by default)."""
DESKTOP_CREATE_TIMEOUT = 600.0
"""Seconds ``create_computer_box`` may take by default (a first use builds the desktop image)."""
DESKTOP_ACTION_TIMEOUT = 30.0
"""Seconds one desktop action (xdotool, xwd in the box) may take by default."""
MIN_SCREEN_SIDE = 64
MAX_SCREEN_SIDE = 4096
MAX_SCREEN_PIXELS = 2560 * 1600
"""Largest desktop screen (a screenshot of it is at most 16 MiB raw from the box)."""
XWD_SLACK = 64 << 10
"""Bytes of a raw screenshot beyond its pixels (XWD header and colormap) the box may send."""
MAX_SCREENSHOT_PNG = 8 << 20
"""Bytes of one ``screenshot`` PNG (base64 in the result: about 11 MiB)."""
MAX_TYPE_TEXT = 4096
"""Characters one ``type_text`` call types (12 ms each in the box)."""
MAX_LAUNCHED = 16
"""Programs started by ``launch`` that may run at once on one desktop."""
