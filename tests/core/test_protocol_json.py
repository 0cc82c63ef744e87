"""The agent protocol's JSON bodies (agent/leanjson.py, no ``json`` package): the same bytes as
``json.dumps``, the same values as ``json.loads``, and a hostile peer's body is a ``FrameError``."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from boxlite.agent import leanjson, mainexit
from boxlite.agent import protocol as p

BODIES: list[object] = [
    {"op": "exec", "argv": ["sh", "-c", "echo 'hé' \u2028"], "env": {"A": "b=c"}, "tty": None, "rows": 24},
    {"ok": False, "error": {"type": "NotFoundError", "message": 'no \x00 such "file" \\ here', "errno": 2}},
    {"n": [0, -1, 2**70, 1.5, -0.0, 1e-300, 1e300, True, False, None], "nested": {"a": {"b": [[], {}]}}},
    {"emoji": "\U0001f600", "keys": {"1": 1, "": ""}},
]


@pytest.mark.parametrize("body", BODIES)
def test_bodies_are_the_bytes_json_writes_and_read_back_alike(body: object) -> None:
    text = json.dumps(body, separators=(",", ":"))
    assert leanjson.dumps(body) == text
    assert leanjson.loads(text.encode()) == json.loads(text)
    assert leanjson.loads(b" \n" + text.encode() + b"\t\r\n") == body


def test_non_finite_numbers_and_key_coercion_as_json() -> None:
    assert leanjson.dumps({1: math.inf, None: -math.inf}) == '{"1":Infinity,"null":-Infinity}'
    assert math.isnan(leanjson.loads(b'{"x":NaN}')["x"])


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"   ",
        b"{",
        b"{}x",
        b'{"a":1}}',
        b"[1,]",
        b"\xff\xfe{}",
        b"\xef\xbb\xbf{}",
        b"nul",
        b'{"a":"\\ud800',
        b"[" * 200_000,
    ],
)
def test_hostile_bodies_are_frame_errors(payload: bytes) -> None:
    with pytest.raises(p.FrameError):
        p.decode_json(payload)


def test_a_hostile_main_exit_record_is_no_record(tmp_path: Path) -> None:
    """run/main.exit is written inside the box (4 KiB cap): nesting past the recursion limit is a
    malformed record, not an exception in the host's calls."""
    (tmp_path / mainexit.NAME).write_bytes(b"[" * 4000)
    assert mainexit.read(str(tmp_path)) is None
    (tmp_path / mainexit.NAME).write_bytes(b'{"exit_code": 3}')
    assert mainexit.read(str(tmp_path)) is not None and mainexit.read(str(tmp_path)).exit_code == 3  # type: ignore[union-attr]


def test_values_json_cannot_hold_are_type_errors_and_cycles_value_errors() -> None:
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        leanjson.dumps({"a": {1}})
    cycle: list[object] = []
    cycle.append(cycle)
    with pytest.raises(ValueError, match="Circular"):
        leanjson.dumps(cycle)


def test_the_protocol_module_does_not_load_json_or_re() -> None:
    """What the lean ``boxlite exec`` and every agent process save (~9 ms, a few hundred KiB each)."""
    code = "import sys; import boxlite.agent.protocol; print(sorted({'json', 're', 'enum'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_bad_text_is_a_value_error_where_json_was_never_imported() -> None:
    """``_json``'s scanner raises its error class from ``json.decoder``, and only when that module
    is loaded: in a lean process (agent, VM relay, ``boxlite exec``) a peer's malformed object was
    a SystemError, which the frame decoder's ``except ValueError`` let through."""
    code = (
        "import sys\nfrom boxlite.agent import leanjson, protocol\n"
        "for bad in ('{', '{not json}', '{\"a\" 1}', '[\"x', '{\"a\":\"\\\\q\"}'):\n"
        "    try:\n        leanjson.loads(bad)\n    except ValueError:\n        pass\n"
        "    try:\n        protocol.decode_json(bad.encode())\n    except protocol.FrameError:\n        pass\n"
        "print(sorted({'json', 'json.decoder'} & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True)
    assert (out.returncode, out.stdout.strip()) == (0, "[]"), out.stderr[-2000:]
