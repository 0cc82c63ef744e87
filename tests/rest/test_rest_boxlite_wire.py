"""``boxlite serve`` spoken to as BoxLite's clients do: requests shaped as BoxLite's OpenAPI
document specifies, responses validated against its schemas (data/boxlite_wire_schema.json,
written down from that document), the exec model driven through the attach WebSocket."""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from rest.serverproc import API_KEY, serving_tcp

SCHEMA = json.loads((Path(__file__).parent / "data" / "boxlite_wire_schema.json").read_text())


def check(kind: str, body: Any) -> Any:
    """``body`` conforms to BoxLite's schema ``kind``."""
    jsonschema.validate(body, {"$ref": f"#/$defs/{kind}", "$defs": SCHEMA["$defs"]})
    return body


def error(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    assert check("ErrorResponse", resp.json())["error"]["code"] == code


@dataclass
class Wire:
    http: httpx.Client
    port: int
    prefix: str
    rootfs: str

    def url(self, path: str) -> str:
        return f"/v1/{self.prefix}{path}"

    def attach(self, path: str) -> ClientConnection:
        return connect(
            f"ws://127.0.0.1:{self.port}{path}", additional_headers={"Authorization": f"Bearer {API_KEY}"},
            open_timeout=10, close_timeout=5,
        )  # fmt: skip

    def create(self, **fields: Any) -> dict[str, Any]:
        resp = self.http.post(self.url("/boxes"), json={"rootfs_path": self.rootfs, "memory_mib": 256, **fields})
        assert resp.status_code == 201, resp.text
        return check("Box", resp.json())  # type: ignore[no-any-return]

    def exec(self, box_id: str, command: str, *args: str, tty: bool = False, prefix: bool = True) -> str:
        path = f"/boxes/{box_id}/exec"
        resp = self.http.post(
            self.url(path) if prefix else f"/v1{path}", json={"command": command, "args": list(args), "tty": tty}
        )
        assert resp.status_code == 201, resp.text
        exec_id = check("ExecResponse", resp.json())["execution_id"]
        assert resp.headers["location"].endswith(f"/boxes/{box_id}/executions/{exec_id}")
        return str(exec_id)

    def status(self, box_id: str, exec_id: str) -> dict[str, Any]:
        resp = self.http.get(self.url(f"/boxes/{box_id}/executions/{exec_id}"))
        assert resp.status_code == 200, resp.text
        return check("ExecutionInfo", resp.json())  # type: ignore[no-any-return]

    def wait_ended(self, box_id: str, exec_id: str, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (info := self.status(box_id, exec_id))["status"] == "running":
            assert time.monotonic() < deadline, info
            time.sleep(0.05)
        return info


@pytest.fixture(scope="module")
def wire(tmp_path_factory: pytest.TempPathFactory, busybox_rootfs: Path) -> Iterator[Wire]:
    with serving_tcp(tmp_path_factory.mktemp("wire") / "home", "--allow-registry", "127.0.0.1:1") as server:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as http:
            prefix = check("Principal", http.get("/v1/me").json())["path_prefix"]
            yield Wire(http, int(server.url.rsplit(":", 1)[1]), prefix, str(busybox_rootfs))


@pytest.fixture
def box(wire: Wire) -> Iterator[dict[str, Any]]:
    created = wire.create()
    yield created
    wire.http.delete(wire.url(f"/boxes/{created['box_id']}"), params={"force": "true"})


def recv_all(ws: ClientConnection, timeout: float = 20) -> tuple[bytes, bytes, list[dict[str, Any]]]:
    """Everything the server sends until it closes: stdout, stderr and the text frames."""
    out, err, texts = b"", b"", []
    with pytest.raises(ConnectionClosed):
        while True:
            frame = ws.recv(timeout=timeout)
            if isinstance(frame, bytes):
                assert frame[:1] in (b"\x01", b"\x02")
                out, err = (out + frame[1:], err) if frame[:1] == b"\x01" else (out, err + frame[1:])
            else:
                texts.append(json.loads(frame))
    return out, err, texts


def test_discovery(wire: Wire) -> None:
    anonymous = httpx.get(f"http://127.0.0.1:{wire.port}/v1/config")
    assert anonymous.status_code == 200  # public, as BoxLite documents it
    caps = check("ServerConfig", anonymous.json())["capabilities"]
    assert caps["max_concurrent_executions"] > 0 and caps["file_transfer_max_bytes"] > 0
    anonymous = httpx.get(f"http://127.0.0.1:{wire.port}/v1/me")
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthenticated"
    assert wire.prefix  # our own /v1/boxes keeps its meaning: BoxLite's clients use the slot


def test_box_lifecycle(wire: Wire) -> None:
    created = wire.create(name="wire-life", env={"A": "1"}, auto_delete=0)
    box_id = created["box_id"]
    assert created["status"] == "configured" and created["name"] == "wire-life"
    listed = check("ListBoxesResponse", wire.http.get(wire.url("/boxes")).json())
    assert box_id in [b["box_id"] for b in listed["boxes"]]
    assert check("Box", wire.http.get(wire.url("/boxes/wire-life")).json())["box_id"] == box_id
    assert check("Box", wire.http.get(f"/v1/us-east/team-42/boxes/{box_id}").json())["box_id"] == box_id
    assert wire.http.head(wire.url(f"/boxes/{box_id}")).status_code == 204
    started = wire.http.post(wire.url(f"/boxes/{box_id}/start"))
    assert started.status_code == 200 and check("Box", started.json())["status"] == "running"
    check("BoxMetrics", wire.http.get(wire.url(f"/boxes/{box_id}/metrics")).json())
    check("RuntimeMetrics", wire.http.get(wire.url("/metrics")).json())
    error(wire.http.delete(wire.url(f"/boxes/{box_id}")), 409, "invalid_state")  # running, no force
    stopped = wire.http.post(wire.url(f"/boxes/{box_id}/stop"), json={"timeout_seconds": 5})
    assert stopped.status_code == 200 and check("Box", stopped.json())["status"] == "stopped"
    assert wire.http.delete(wire.url(f"/boxes/{box_id}")).status_code == 204
    error(wire.http.get(wire.url(f"/boxes/{box_id}")), 404, "not_found")
    assert wire.http.head(wire.url(f"/boxes/{box_id}")).status_code == 404


def test_security_preset_changes_the_box(wire: Wire) -> None:
    """BoxLite's ``security`` field is honoured, not accepted and ignored: ``maximum`` sets rlimits."""
    box_id = wire.create(security="maximum")["box_id"]
    try:
        assert wire.http.post(wire.url(f"/boxes/{box_id}/start")).status_code == 200
        exec_id = wire.exec(box_id, "sh", "-c", "ulimit -n")
        with wire.attach(wire.url(f"/boxes/{box_id}/executions/{exec_id}/attach")) as ws:
            assert recv_all(ws)[0] == b"1024\n"
    finally:
        wire.http.delete(wire.url(f"/boxes/{box_id}"), params={"force": "true"})
    config = httpx.get(f"http://127.0.0.1:{wire.port}/v1/config").json()
    assert config["capabilities"]["supported_security_presets"] == ["development", "standard", "maximum"]
    assert config["defaults"]["cpus"] == 1


def test_list_pages(wire: Wire) -> None:
    made = [wire.create()["box_id"] for _ in range(3)]
    seen: list[str] = []
    token: str | None = None
    for _ in range(10):
        params: dict[str, Any] = {"pageSize": 1, **({"pageToken": token} if token else {})}
        page = check("ListBoxesResponse", wire.http.get(wire.url("/boxes"), params=params).json())
        assert len(page["boxes"]) <= 1
        seen += [b["box_id"] for b in page["boxes"]]
        if not (token := page.get("next_page_token")):
            break
    assert set(made) <= set(seen) and len(seen) == len(set(seen))
    filtered = wire.http.get(wire.url("/boxes"), params={"status": "configured"}).json()["boxes"]
    assert {b["status"] for b in filtered} == {"configured"}
    for box_id in made:
        assert wire.http.delete(wire.url(f"/boxes/{box_id}")).status_code == 204


def test_exec_attach_output_and_status(wire: Wire, box: dict[str, Any]) -> None:
    box_id = box["box_id"]
    exec_id = wire.exec(box_id, "sh", "-c", "echo out; echo err >&2; exit 3")
    with wire.attach(wire.url(f"/boxes/{box_id}/executions/{exec_id}/attach")) as ws:
        out, err, texts = recv_all(ws)
        assert ws.close_code == 1000
    assert (out, err) == (b"out\n", b"err\n") and texts == [{"type": "exit", "exit_code": 3}]
    info = wire.wait_ended(box_id, exec_id)
    assert info["status"] == "completed" and info["exit_code"] == 3 and info["duration_ms"] is not None
    # BoxLite's local-server shape: the same routes without a slot.
    plain = wire.exec(box_id, "echo", "plain", prefix=False)
    with wire.attach(f"/v1/boxes/{box_id}/executions/{plain}/attach") as ws:
        assert recv_all(ws)[0] == b"plain\n"


def test_exec_stdin_detach_reattach(wire: Wire, box: dict[str, Any]) -> None:
    box_id = box["box_id"]
    exec_id = wire.exec(box_id, "cat")
    path = wire.url(f"/boxes/{box_id}/executions/{exec_id}/attach")
    with wire.attach(path) as ws:
        ws.send(b"hello")
        assert ws.recv(timeout=20) == b"\x01hello"
        with pytest.raises(InvalidStatus) as second:  # one client at a time
            wire.attach(path)
        assert second.value.response.status_code == 409
        ws.send(json.dumps({"type": "resize", "cols": 0, "rows": 0}))  # invalid: an error frame, still open
        assert json.loads(ws.recv(timeout=20))["type"] == "error"
        ws.send("{not json")
        assert json.loads(ws.recv(timeout=20))["type"] == "error"
    time.sleep(0.2)
    assert wire.status(box_id, exec_id)["status"] == "running"  # the command outlives the socket
    with wire.attach(path) as ws:
        ws.send(b"again")
        ws.send(json.dumps({"type": "stdin_eof"}))
        out, _, texts = recv_all(ws)
    assert out == b"again" and texts == [{"type": "exit", "exit_code": 0}]
    assert wire.wait_ended(box_id, exec_id)["status"] == "completed"


def test_signal_resize_and_kill(wire: Wire, box: dict[str, Any]) -> None:
    box_id = box["box_id"]
    exec_id = wire.exec(box_id, "sleep", "30")
    base = wire.url(f"/boxes/{box_id}/executions/{exec_id}")
    error(wire.http.post(f"{base}/signal", json={"signal": 9}), 400, "invalid_argument")  # SIGKILL is DELETE's
    error(wire.http.post(f"{base}/resize", json={"cols": 80, "rows": 24}), 409, "invalid_state")  # not a TTY
    assert wire.http.post(f"{base}/signal", json={"signal": 15}).status_code == 204
    info = wire.wait_ended(box_id, exec_id)
    assert info["status"] == "killed" and info["exit_code"] != 0
    error(wire.http.post(f"{base}/signal", json={"signal": 15}), 409, "invalid_state")

    tty = wire.exec(box_id, "sleep", "30", tty=True)
    base = wire.url(f"/boxes/{box_id}/executions/{tty}")
    assert wire.http.post(f"{base}/resize", json={"cols": 120, "rows": 40}).status_code == 204
    with wire.attach(f"{base}/attach") as ws:
        assert wire.http.delete(base).status_code == 204
        _, _, texts = recv_all(ws)
    assert texts[-1]["type"] == "exit"
    error(wire.http.get(base), 404, "not_found")  # evicted
    error(wire.http.delete(base), 404, "not_found")


def test_files_upload_and_download(wire: Wire, box: dict[str, Any]) -> None:
    box_id = box["box_id"]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"wire bytes\n" * 150_000  # 1.6 MB: past the JSON body limit
        member = tarfile.TarInfo("hello.txt")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    files = wire.url(f"/boxes/{box_id}/files")
    put = wire.http.put(
        files, params={"path": "/tmp"}, content=buf.getvalue(), headers={"Content-Type": "application/x-tar"}
    )
    assert put.status_code == 204, put.text
    got = wire.http.get(files, params={"path": "/tmp/hello.txt"})
    assert got.status_code == 200 and got.headers["content-type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(got.content)) as tar:
        extracted = tar.extractfile(tar.getmembers()[0])
        assert extracted is not None and extracted.read() == data
    # A directory as BoxLite's clients pack it (members "./..."), to a path that does not exist yet.
    tree = io.BytesIO()
    with tarfile.open(fileobj=tree, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        root = tarfile.TarInfo(".")
        root.type, root.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(root)
        leaf = tarfile.TarInfo("./sub/leaf.txt")
        leaf.size = 4
        tar.addfile(leaf, io.BytesIO(b"leaf"))
    put = wire.http.put(files, params={"path": "/tmp/newdir"}, content=tree.getvalue())
    assert put.status_code == 204, put.text
    got = wire.http.get(files, params={"path": "/tmp/newdir/sub/leaf.txt"})
    assert got.status_code == 200, got.text
    with tarfile.open(fileobj=io.BytesIO(got.content)) as tar:
        extracted = tar.extractfile(tar.getmembers()[0])
        assert extracted is not None and extracted.read() == b"leaf"
    error(wire.http.get(files, params={"path": "/no/such/file"}), 404, "not_found")
    error(wire.http.get(files), 400, "invalid_argument")  # path is required


def test_hostile_requests_get_documented_4xx(wire: Wire, box: dict[str, Any]) -> None:
    box_id = box["box_id"]
    exec_url = wire.url(f"/boxes/{box_id}/exec")
    big = wire.http.post(exec_url, json={"command": "true", "args": ["x" * (2 << 20)]})
    assert big.status_code == 413 and big.json()["error"]["code"] == "resource_exhausted"  # BoxLite's code
    error(wire.http.get(wire.url(f"/boxes/{box_id}/executions/exec-nope")), 404, "not_found")
    error(
        wire.http.post(wire.url(f"/boxes/{box_id}/executions/exec-nope/signal"), json={"signal": 15}), 404, "not_found"
    )
    error(wire.http.get(wire.url("/boxes/no-such-box")), 404, "not_found")
    error(wire.http.post(wire.url("/boxes/no-such-box/exec"), json={"command": "true"}), 404, "not_found")
    error(
        wire.http.post(exec_url, content=b"{not json", headers={"Content-Type": "application/json"}),
        400,
        "invalid_argument",
    )
    error(wire.http.post(exec_url, json={"args": ["no command"]}), 400, "invalid_argument")
    error(wire.http.post(wire.url("/boxes"), json={"rootfs_path": wire.rootfs, "unknown": 1}), 400, "invalid_argument")
    error(
        wire.http.post(wire.url("/boxes"), json={"rootfs_path": wire.rootfs, "name": "../x"}), 400, "invalid_argument"
    )
    error(wire.http.post(wire.url("/boxes"), json={"rootfs_path": wire.rootfs, "cpus": 64}), 400, "invalid_argument")
    error(wire.http.get(wire.url("/boxes"), params={"pageToken": "!!"}), 400, "invalid_argument")
    error(wire.http.get(f"/v1/{'p' * 200}/boxes"), 400, "invalid_argument")  # slot over 128 characters
    assert wire.http.get(wire.url(f"/boxes/{box_id}/no-such-route")).status_code == 404
    assert wire.http.get("/v1/a/b/../../../etc/passwd").status_code == 404
    with pytest.raises(InvalidStatus) as unknown:
        wire.attach(wire.url(f"/boxes/{box_id}/executions/exec-nope/attach"))
    assert unknown.value.response.status_code == 404
    live = wire.exec(box_id, "true")
    error(wire.http.get(wire.url(f"/boxes/{box_id}/executions/{live}/attach")), 400, "invalid_argument")  # no upgrade
    assert wire.http.get("/v1/health").status_code == 200  # the server took all this in its stride


def test_timeout_snapshot_and_refusals(wire: Wire, box: dict[str, Any]) -> None:
    box_id = box["box_id"]
    resp = wire.http.post(
        wire.url(f"/boxes/{box_id}/exec"), json={"command": "sleep", "args": ["30"], "timeout_seconds": 0.5}
    )
    exec_id = check("ExecResponse", resp.json())["execution_id"]
    assert wire.wait_ended(box_id, exec_id)["status"] == "timed_out"
    assert wire.http.post(wire.url(f"/boxes/{box_id}/stop"), json={}).status_code == 200
    snap = wire.http.post(wire.url(f"/boxes/{box_id}/snapshots"), json={"name": "s1"})
    assert snap.status_code == 201 and check("Snapshot", snap.json())["name"] == "s1"
    error(wire.http.get(wire.url(f"/boxes/{box_id}/snapshots/nope")), 404, "not_found")
    bad_net = {"rootfs_path": wire.rootfs, "network": {"mode": "bridge"}}
    error(wire.http.post(wire.url("/boxes"), json=bad_net), 400, "invalid_argument")
    pulled = wire.http.post(wire.url("/images/pull"), json={"reference": "127.0.0.1:1/nothing:latest"})
    error(pulled, 422, "image_pull_failed")


def test_openapi_names_boxlite_operations(wire: Wire) -> None:
    doc = wire.http.get("/openapi.json").json()
    ops = {op["operationId"] for path in doc["paths"].values() for op in path.values()}
    assert {"getConfig", "getCurrentPrincipal", "createBox", "listBoxes", "getBox", "boxExists", "removeBox",
            "startBox", "stopBox", "startExecution", "getExecution", "killExecution", "attachExecution",
            "signalExecution", "resizeExecution", "uploadFiles", "downloadFiles"} <= ops  # fmt: skip
    exec_op = doc["paths"]["/v1/{prefix}/boxes/{box_id}/exec"]["post"]
    assert set(exec_op["responses"]) == {"201", "400", "401", "404", "409", "413", "504", "default"}  # no 422
