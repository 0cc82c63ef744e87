"""The errors the OpenAPI document lists are the ones the server answers: a real ``boxlite serve``
is sent bad input, unknown ids and missing credentials on a sample of routes (ours under ``/v1``,
BoxLite's under ``/v1/{prefix}``, the WebSocket routes without their upgrade), and each answer must
be a status that route documents explicitly (not only through ``default``), in the documented
error form. An invalid request is a 400, never FastAPI's 422."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rest.serverproc import API_KEY, Server, serving_tcp

SLOT = "default"
LONG_SLOT = "s" * 200  # over the 128 characters a routing slot may have
UNREACHABLE = "127.0.0.1:1/nothing:latest"  # a registry that refuses at once (listed: the server connects)
INTERNAL = "127.0.0.2:1/nothing:latest"  # not listed, not public: refused before connecting


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving_tcp(tmp_path_factory.mktemp("srv") / "home", "--allow-registry", "127.0.0.1:1") as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def doc(http: httpx.Client) -> dict[str, Any]:
    return http.get("/openapi.json").json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def box_id(http: httpx.Client, busybox_rootfs: Path) -> str:
    """A configured box (never started: the cases below need no running box)."""
    resp = http.post("/v1/boxes", json={"options": {"rootfs_path": str(busybox_rootfs)}, "name": "taken"})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]  # type: ignore[no-any-return]


def documented(doc: dict[str, Any], method: str, template: str, url: str) -> set[int]:
    """The explicit error statuses of ``method template``; ``url`` must be an instance of it."""
    pattern = re.sub(r"\\\{prefix\\\}", "[^?]+", re.escape(template))
    pattern = re.sub(r"\\\{\w+\\\}", "[^/?]+", pattern)
    assert re.fullmatch(pattern + r"(\?.*)?", url), (url, template)
    responses = doc["paths"][template][method.lower()]["responses"]
    return {int(code) for code in responses if code.isdigit() and int(code) >= 400}


def check(
    doc: dict[str, Any], resp: httpx.Response, method: str, template: str, expected: int, wire: bool = False
) -> None:
    url = str(resp.request.url.raw_path.decode())
    allowed = documented(doc, method, template, url)
    assert resp.status_code == expected, (method, url, resp.status_code, resp.text[:300])
    assert resp.status_code in allowed, (method, url, resp.status_code, sorted(allowed))
    if method == "HEAD" or (template.endswith(("/exec", "/tunnel/{port}")) and method == "GET"):
        return  # no body (HEAD) / Starlette's own answer to a GET on a WebSocket route
    error = resp.json()["error"]
    assert isinstance(error["type"], str) and isinstance(error["message"], str)
    assert "transfers" not in error["message"], error  # no server scratch path reaches the client
    if wire:
        assert isinstance(error["code"], str), error


def ours(http: httpx.Client, doc: dict[str, Any], box: str) -> list[tuple[httpx.Response, str, str, int]]:
    tar = b"not a tar" * 100
    return [
        (http.get("/v1/boxes/nope"), "GET", "/v1/boxes/{box_id}", 404),
        (http.delete("/v1/boxes/nope"), "DELETE", "/v1/boxes/{box_id}", 404),
        (http.delete(f"/v1/boxes/{box}", params={"force": "perhaps"}), "DELETE", "/v1/boxes/{box_id}", 400),
        (http.post("/v1/boxes", json={"options": {"no_such_option": 1}}), "POST", "/v1/boxes", 400),
        (http.post("/v1/boxes", content=b"{not json", headers={"Content-Type": "application/json"}), "POST",
         "/v1/boxes", 400),
        (http.post("/v1/boxes", json={"options": {"cpus": "many"}}), "POST", "/v1/boxes", 400),
        (http.post("/v1/boxes", json={"options": {"rootfs_path": "/"}, "name": "taken"}), "POST", "/v1/boxes", 409),
        (http.post("/v1/boxes", json={"options": {"env": {"A": "x" * (2 << 20)}}}), "POST", "/v1/boxes", 413),
        (http.post("/v1/boxes", json={"options": {"rootfs_path": "/nonexistent"}}), "POST", "/v1/boxes", 404),
        (http.post("/v1/boxes", json={"options": {"image": UNREACHABLE}}), "POST", "/v1/boxes", 502),  # pulled
        (http.post("/v1/boxes", json={"options": {"image": INTERNAL}}), "POST", "/v1/boxes", 403),
        (http.post("/v1/boxes/import", content=tar), "POST", "/v1/boxes/import", 400),
        (http.post("/v1/boxes/nope/start"), "POST", "/v1/boxes/{box_id}/start", 404),
        (http.post(f"/v1/boxes/{box}/stop", params={"timeout": "soon"}), "POST", "/v1/boxes/{box_id}/stop", 400),
        (http.get("/v1/boxes/nope/metrics"), "GET", "/v1/boxes/{box_id}/metrics", 404),
        (http.get(f"/v1/boxes/{box}/archive"), "GET", "/v1/boxes/{box_id}/archive", 400),
        (http.put("/v1/boxes/nope/archive", params={"path": "/", "name": "x"}, content=tar), "PUT",
         "/v1/boxes/{box_id}/archive", 404),
        (http.post(f"/v1/boxes/{box}/fork", params={"n": 0}), "POST", "/v1/boxes/{box_id}/fork", 400),
        (http.post("/v1/boxes/nope/pause"), "POST", "/v1/boxes/{box_id}/pause", 404),
        (http.post("/v1/boxes/nope/resume"), "POST", "/v1/boxes/{box_id}/resume", 404),
        (http.post(f"/v1/boxes/{box}/snapshots", json={"name": ""}), "POST", "/v1/boxes/{box_id}/snapshots", 400),
        (http.get(f"/v1/boxes/{box}/snapshots/nope"), "GET", "/v1/boxes/{box_id}/snapshots/{snapshot_name}", 404),
        (http.delete(f"/v1/boxes/{box}/snapshots/nope"), "DELETE", "/v1/boxes/{box_id}/snapshots/{snapshot_name}",
         404),
        (http.post("/v1/boxes/nope/clone"), "POST", "/v1/boxes/{box_id}/clone", 404),
        (http.post(f"/v1/boxes/{box}/export", json={"include_image": "sometimes"}), "POST",
         "/v1/boxes/{box_id}/export", 400),
        (http.post("/v1/images/pull", json={}), "POST", "/v1/images/pull", 400),
        (http.post("/v1/images/pull", json={"reference": "Not A Reference!"}), "POST", "/v1/images/pull", 400),
        (http.post("/v1/images/pull", json={"reference": UNREACHABLE}), "POST", "/v1/images/pull",
         502),
        (http.post("/v1/images/pull", json={"reference": INTERNAL}), "POST", "/v1/images/pull", 403),
        (http.delete("/v1/images/nothing-here:latest"), "DELETE", "/v1/images/{reference}", 404),
        (http.get(f"/v1/boxes/{box}/exec"), "GET", "/v1/boxes/{box_id}/exec", 405),  # no upgrade
        (http.get(f"/v1/boxes/{box}/network/tunnel/80"), "GET", "/v1/boxes/{box_id}/network/tunnel/{port}", 404),
    ]  # fmt: skip


def test_our_routes_answer_documented_errors(server: Server, http: httpx.Client, doc: dict, box_id: str) -> None:
    for resp, method, template, expected in ours(http, doc, box_id):
        check(doc, resp, method, template, expected)


def wire_cases(http: httpx.Client, box: str) -> list[tuple[httpx.Response, str, str, int]]:
    s = f"/v1/{SLOT}"
    t = "/v1/{prefix}"
    return [
        (http.get(f"{s}/boxes/nope"), "GET", f"{t}/boxes/{{box_id}}", 404),
        (http.get(f"/v1/{LONG_SLOT}/boxes/{box}"), "GET", f"{t}/boxes/{{box_id}}", 400),
        (http.head(f"{s}/boxes/nope"), "HEAD", f"{t}/boxes/{{box_id}}", 404),
        (http.delete(f"{s}/boxes/nope"), "DELETE", f"{t}/boxes/{{box_id}}", 404),
        (http.get(f"{s}/boxes", params={"pageSize": 0}), "GET", f"{t}/boxes", 400),
        (http.get(f"{s}/boxes", params={"pageToken": "!!"}), "GET", f"{t}/boxes", 400),
        (http.post(f"{s}/boxes", json={"cpus": "many"}), "POST", f"{t}/boxes", 400),
        (http.post(f"{s}/boxes", json={"rootfs_path": "/nonexistent"}), "POST", f"{t}/boxes", 404),
        (http.post(f"{s}/boxes", json={"image": UNREACHABLE}), "POST", f"{t}/boxes", 422),
        (http.post(f"{s}/boxes", json={"image": INTERNAL}), "POST", f"{t}/boxes", 403),
        (http.post(f"{s}/boxes/import", content=b"not a tar" * 100), "POST", f"{t}/boxes/import", 400),
        (http.post(f"{s}/boxes/nope/start"), "POST", f"{t}/boxes/{{box_id}}/start", 404),
        (http.post(f"{s}/boxes/{box}/stop", json={"timeout_seconds": "later"}), "POST", f"{t}/boxes/{{box_id}}/stop",
         400),
        (http.post(f"{s}/boxes/nope/exec", json={"command": "true"}), "POST", f"{t}/boxes/{{box_id}}/exec", 404),
        (http.post(f"{s}/boxes/{box}/exec", json={}), "POST", f"{t}/boxes/{{box_id}}/exec", 400),
        (http.get(f"{s}/boxes/{box}/executions/nope"), "GET", f"{t}/boxes/{{box_id}}/executions/{{exec_id}}", 404),
        (http.delete(f"{s}/boxes/{box}/executions/nope"), "DELETE", f"{t}/boxes/{{box_id}}/executions/{{exec_id}}",
         404),
        (http.post(f"{s}/boxes/{box}/executions/nope/signal", json={"signal": 15}), "POST",
         f"{t}/boxes/{{box_id}}/executions/{{exec_id}}/signal", 404),
        (http.post(f"{s}/boxes/{box}/executions/nope/resize", json={"rows": "tall"}), "POST",
         f"{t}/boxes/{{box_id}}/executions/{{exec_id}}/resize", 400),
        (http.get(f"{s}/boxes/{box}/executions/nope/attach"), "GET",
         f"{t}/boxes/{{box_id}}/executions/{{exec_id}}/attach", 404),
        (http.get(f"{s}/boxes/{box}/files"), "GET", f"{t}/boxes/{{box_id}}/files", 400),
        (http.get(f"{s}/boxes/nope/metrics"), "GET", f"{t}/boxes/{{box_id}}/metrics", 404),
        (http.get(f"{s}/boxes/{box}/snapshots/nope"), "GET", f"{t}/boxes/{{box_id}}/snapshots/{{snapshot_name}}",
         404),
        (http.get(f"{s}/images/nothing-here:latest"), "GET", f"{t}/images/{{image_id}}", 404),
        (http.post(f"{s}/images/pull", json={}), "POST", f"{t}/images/pull", 400),
        (http.post(f"{s}/images/pull", json={"reference": UNREACHABLE}), "POST",
         f"{t}/images/pull", 422),
        (http.post(f"{s}/images/pull", json={"reference": INTERNAL}), "POST", f"{t}/images/pull", 403),
    ]  # fmt: skip


def test_boxlite_routes_answer_documented_errors(http: httpx.Client, doc: dict, box_id: str) -> None:
    for resp, method, template, expected in wire_cases(http, box_id):
        check(doc, resp, method, template, expected, wire=True)


def test_without_the_key_every_documented_route_says_401(server: Server, doc: dict, box_id: str) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        for method, template in [("GET", "/v1/boxes/{box_id}"), ("POST", "/v1/images/pull"),
                                 ("GET", "/v1/{prefix}/boxes"), ("GET", "/v1/boxes/{box_id}/exec")]:  # fmt: skip
            url = template.replace("{box_id}", box_id).replace("{prefix}", SLOT)
            resp = anonymous.request(method, url)
            assert resp.status_code == 401 and 401 in documented(doc, method, template, url), (url, resp.text)
        assert anonymous.get("/v1/health").status_code == 200
        assert "401" not in doc["paths"]["/v1/health"]["get"]["responses"]
