"""The committed openapi/openapi.json is the document the server generates and serves."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient
from openapi_spec_validator import validate

from boxlite.server.apidoc import websocket_paths
from boxlite.server.app import create_app
from boxlite.server.openapi import document, render
from rest.serverproc import Server

COMMITTED = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


def test_committed_openapi_is_up_to_date() -> None:
    assert COMMITTED.read_text() == render(), (
        "openapi/openapi.json is stale: run  PYTHONPATH=src python -m boxlite.server.openapi openapi/openapi.json"
    )


def test_server_serves_the_same_document(server: Server) -> None:
    if server.url.startswith("unix://"):
        transport = httpx.HTTPTransport(uds=server.url[len("unix://") :])
        client = httpx.Client(transport=transport, base_url="http://boxlite")
    else:
        client = httpx.Client(base_url=server.url)
    with client:
        served = client.get("/openapi.json").json()
    assert served == json.loads(json.dumps(document()))
    assert {"/v1/boxes", "/v1/boxes/{box_id}/archive", "/v1/images/pull", "/v1/metrics"} <= set(served["paths"])


READABLE_ID = re.compile(r"^[a-z]+(?:[A-Z][a-z0-9]*)+$")  # camelCase: a verb, then words
WIRE_SLOT = "/v1/{prefix}/"
PUBLIC = {"/v1/health", "/v1/config"}
WIRE_IMAGE_PULLS = {"createBox", "pullImage"}  # BoxLite's 422: an image that cannot be pulled


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, ops in doc["paths"].items() for method, op in ops.items()]


def test_every_operation_has_a_readable_unique_id() -> None:
    ops = operations(document())
    ids = [op.get("operationId", "") for _, _, op in ops]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    generated = [i for i in ids if not READABLE_ID.match(i)]
    assert not generated, generated  # FastAPI's own look like list_boxes_v1_boxes_get
    for _, path, op in ops:
        ours = not path.startswith(WIRE_SLOT) and path not in ("/v1/config", "/v1/me")
        assert op["operationId"].startswith("native") == ours, (path, op["operationId"])
    assert {"nativeListBoxes", "nativeCreateBox", "nativeGetBoxMetrics", "nativeExecSocket", "listBoxes",
            "createBox", "getBoxMetrics", "attachExecution"} <= set(ids)  # fmt: skip


def test_operations_list_only_their_errors() -> None:
    """No blanket 422 (an invalid request is a 400); 401 where the key is checked, 413 where a body is read."""
    doc = document()
    for method, path, op in operations(doc):
        codes = set(op["responses"])
        where = (method, path, op["operationId"])
        if "422" in codes:
            assert path.startswith(WIRE_SLOT) and op["operationId"] in WIRE_IMAGE_PULLS, where
        assert ("401" in codes) == (path not in PUBLIC), where
        if "requestBody" in op:
            assert "413" in codes, where
        for code, response in op["responses"].items():
            assert code == "default" or code.isdigit(), where
            if "$ref" not in response:
                assert response.get("description"), (where, code)
    generic = {"400", "401", "404", "409", "413", "500", "502", "503", "504"}
    assert not [op["operationId"] for _, _, op in operations(doc) if generic <= set(op["responses"])]


def section(text: str, start: str, end: str) -> str:
    return text[text.index(start) : text.index(end, text.index(start))]


def frame_types(x_websocket: dict[str, Any]) -> set[str]:
    return {m["type"] for side in ("client", "server") for m in x_websocket[side] if m["frame"] == "text"}


def test_websocket_protocols_are_described() -> None:
    """Every WebSocket route is a GET answered 101 with its frames, the same frames docs/rest.md describes."""
    app = create_app()
    doc = document()
    served = websocket_paths(app)
    assert {"/v1/boxes/{box_id}/exec", "/v1/{prefix}/boxes/{box_id}/executions/{exec_id}/attach"} <= served
    for path in served - {"/v1/boxes/{box_id}/executions/{exec_id}/attach"}:  # the slot-less copy of attach
        op = doc["paths"][path]["get"]
        assert "101" in op["responses"] and {"client", "server"} <= set(op["x-websocket"]), path
        for side in ("client", "server"):
            for message in op["x-websocket"][side]:
                assert message["frame"] in ("text", "binary") and message["description"], (path, message)
                if message["frame"] == "text":
                    assert message["schema"]["properties"]["type"] == {"const": message["type"]}, (path, message)
    rest = (Path(__file__).resolve().parents[2] / "docs" / "rest.md").read_text()
    documented = {
        "/v1/boxes/{box_id}/exec": section(rest, "## Exec WebSocket", "Request bodies are limited"),
        "/v1/{prefix}/boxes/{box_id}/executions/{exec_id}/attach": section(rest, "**Attach WebSocket.**", "**Errors**"),
    }
    for path, prose in documented.items():
        in_prose = set(re.findall(r'"type": "(\w+)"', prose))
        assert frame_types(doc["paths"][path]["get"]["x-websocket"]) == in_prose, path
    start = doc["paths"]["/v1/boxes/{box_id}/exec"]["get"]["x-websocket"]["client"][0]
    assert start["type"] == "start" and {"command", "args", "env", "tty", "window"} <= set(
        start["schema"]["properties"]
    )


def test_document_is_valid_openapi() -> None:
    validate(json.loads(COMMITTED.read_text()))


def test_an_unexpected_failure_is_the_documented_default() -> None:
    """A bug in one of our routes answers 500 in the error form (``default``), not a text page."""
    app = create_app()

    async def boom() -> None:
        raise RuntimeError("/srv/secret/path exploded")

    app.add_api_route("/v1/boom", boom)
    client = TestClient(app, raise_server_exceptions=False)  # no lifespan (no runtime, no home): not a context
    resp = client.get("/v1/boom")
    assert resp.status_code == 500
    assert resp.json() == {"error": {"type": "InternalError", "message": "internal error"}}
    default = document()["paths"]["/v1/boxes"]["get"]["responses"]["default"]
    assert default["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorModel")
