"""The committed openapi/openapi.json is the document the server generates and serves."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

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
