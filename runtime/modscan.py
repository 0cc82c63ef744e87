"""Run by the *guest* Python at build time: print the stdlib files the agent may import.

Usage: python3.11 -I -S modscan.py AGENT_PARENT_DIR
Prints one JSON object: {"files": [absolute paths of .py/.so files], "missing": [...]}.
"""

from __future__ import annotations

import json
import modulefinder
import os
import sys

# Imported by the interpreter itself or lazily by name (codecs), invisible to modulefinder.
ALWAYS = [
    "encodings",
    "encodings.aliases",
    "encodings.utf_8",
    "encodings.utf_8_sig",
    "encodings.ascii",
    "encodings.latin_1",
    "encodings.idna",
    "encodings.punycode",
    "codecs",
    "io",
    "abc",
    "os",
    "stat",
    "posixpath",
    "genericpath",
    "_collections_abc",
    "_sitebuiltins",
    "traceback",
    "linecache",
    "tokenize",
    "token",
]
# Optional imports we never want in the guest (need libssl, a display, or are dev tools).
EXCLUDE = {
    "ssl",
    "_ssl",
    "_hashlib",
    "tkinter",
    "_tkinter",
    "idlelib",
    "lib2to3",
    "ensurepip",
    "distutils",
    "pydoc",
    "pydoc_data",
    "doctest",
    "unittest",
    "test",
    "turtle",
    "venv",
    "sqlite3",
    "_sqlite3",
    "curses",
    "_curses",
    "readline",
    "dbm",
    "xmlrpc",
    "http.server",
    "_ctypes_test",
    "_testcapi",
    "_testinternalcapi",
    "lzma",
    "_lzma",
    "_bz2",
    "bz2",
    "_decimal",
    "decimal",
    "_pydecimal",
    "multiprocessing.popen_spawn_win32",
    "asyncio.windows_events",
    "asyncio.windows_utils",
    "_winapi",
    "msvcrt",
    "winreg",
    "nturl2path",
    "ntpath",
    "_osx_support",
    "_aix_support",
    "_bootsubprocess",
    "pdb",
    "cProfile",
    "profile",
    "pstats",
    "email",
    "http",
    "urllib.request",
    "ftplib",
    "smtplib",
    "imaplib",
    "poplib",
    "nntplib",
    "mailbox",
    "xml",
    "pyexpat",
    "plistlib",
    "ctypes.macholib",
    "zoneinfo",
}

# Platform-specific optional imports that are absent on Linux by design.
IGNORE_MISSING = {"_frozen_importlib", "_frozen_importlib_external", "_winreg", "java", "nt", "org", "vms_lib"}


def _excluded(name: str) -> bool:
    parts = name.split(".")
    return any(".".join(parts[:i]) in EXCLUDE for i in range(1, len(parts) + 1))


def main() -> None:
    agent_parent = sys.argv[1]
    agent_dir = os.path.join(agent_parent, "agent")
    mods = sorted("agent." + f[:-3] for f in os.listdir(agent_dir) if f.endswith(".py") and f != "__init__.py")
    entry = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"boxlite-modscan-{os.getpid()}.py")
    with open(entry, "w") as f:
        f.write("import agent\n" + "".join(f"import {m}\n" for m in mods + ALWAYS))
    finder = modulefinder.ModuleFinder(path=[agent_parent, *sys.path], excludes=sorted(EXCLUDE))
    try:
        finder.run_script(entry)
    finally:
        os.unlink(entry)
    files = set()
    for name, mod in finder.modules.items():
        path = mod.__file__
        if name == "__main__" or _excluded(name) or not path or path.startswith(agent_parent):
            continue
        files.add(path)
        if mod.__path__:  # a package: keep its __init__
            files.add(os.path.join(mod.__path__[0], "__init__.py"))
    missing = sorted(n for n in finder.badmodules if not _excluded(n) and "." not in n and n not in IGNORE_MISSING)
    print(json.dumps({"files": sorted(files), "missing": missing}))


if __name__ == "__main__":
    main()
