"""First sentence of each verb's help, for ``boxlite --help``: listing the verbs from here spares
importing every verb's module (and the SDK) only to print that sentence (~250 -> ~90 ms). A test
keeps the table equal to what the verbs' own help shows (tests/cli/test_cli_fastexec.py)."""

from __future__ import annotations

SUMMARIES: dict[str, str] = {
    "run": "Create a box and run a command in it.",
    "exec": "Run a command in a running box (exit status is the command's).",
    "create": "Create a box without starting it; prints its id.",
    "start": "Start stopped boxes (in the background; they keep running after boxlite exits).",
    "stop": "Stop running boxes (boxes created with --rm are removed).",
    "restart": "Stop then start boxes.",
    "ls": "List boxes.",
    "rm": "Remove boxes (each one it can; errors are reported one per line).",
    "inspect": "Show boxes (or images) as JSON, or fields of them (--format).",
    "logs": "Print the output of a box's main process (or of the `boxlite run` that created it).",
    "stats": "Resource usage of running boxes (Ctrl-C ends the live view).",
    "cp": "Copy files between a box and the host: `cp BOX:PATH HOSTPATH` or `cp HOSTPATH BOX:PATH`.",
    "pull": "Download an image from a registry.",
    "images": "List stored images (``images build NAME``: build an offline image of a specialised box).",
    "rmi": "Remove images.",
    "volume": "Manage named volumes (a box mounts one with -v VOLUME_ID:/path).",
    "serve": "Serve the BoxLite REST API for this home (until Ctrl-C).",
    "mcp": "Serve MCP tools (boxes, exec, files, code) on stdin/stdout until stdin closes.",
    "pause": "Pause running boxes: every process stops where it is and uses no CPU until resumed.",
    "resume": (
        "Resume paused boxes (a box paused to disk is restored in the background: "
        "it keeps running after boxlite exits)."
    ),
    "fork": (
        "Copy a running box (VM engine): new running boxes that go on from its memory and disk as they are now; "
        "prints their ids."
    ),
    "snapshot": "Named copy-on-write snapshots of a box's disk.",
    "clone": "Create a new stopped box with BOX's disk as it is now; prints its id.",
    "export": "Write BOX (config, disk, image) to one .boxlite archive; prints its path.",
    "import": "Create a stopped box from a .boxlite archive (checked before anything is kept); prints its id.",
    "kill": "Kill running boxes (their main process and every other process; --rm boxes are removed).",
    "wait": "Block until boxes stop, then print each one's exit code (its main process's; 0 when none).",
    "version": "Versions of boxlite and its platform.",
    "info": "The runtime: version, home, virtualization, box and image counts (BoxLite's fields).",
    "completion": "Print the completion script of SHELL, e.g.",
    "auth": "Log in to a 'boxlite serve' server: later commands then work on its boxes.",
    "network": "Reach services inside boxes.",
}
