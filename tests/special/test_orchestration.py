"""Issue 13: ``boxlite.orchestration`` — boxes run host-registered handlers and message each other
through the host, which trusts none of them (oversize lines, forged replies and sender names)."""

from __future__ import annotations

from pathlib import Path

import pytest

import boxlite
from boxlite.orchestration import BoxRuntime

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def python_rootfs() -> Path:
    from support.images import python_rootfs as build

    return build()


async def test_two_boxes_pass_messages(runtime: boxlite.Boxlite, python_rootfs: Path) -> None:
    factor = 3  # a closure value shipped with the handler

    async with BoxRuntime(runtime, rootfs_path=str(python_rootfs)) as group:
        worker = await group.create_box("worker")
        driver = await group.create_box("driver")
        assert group.list_boxes() == ["worker", "driver"]
        notes: list[object] = []

        @worker.on_message
        def multiply(sender: str, data: dict[str, object]) -> object:
            if data.get("op") == "notes":
                return notes
            if data.get("op") == "fail":
                raise ValueError("no such op")
            if data.get("op") == "stop":
                import boxlite_runtime

                boxlite_runtime.stop()  # leaves its loop after this reply: the process exits 0
                return "bye"
            return {"product": int(data["value"]) * factor, "sender": sender}  # type: ignore[call-overload]

        @worker.on_event("note")
        def remember(data: object) -> None:
            notes.append(data)

        @driver.task
        def ask() -> None:
            from boxlite_runtime import BOX_NAME, publish_event, send_message

            print("product", send_message("worker", {"value": 14}))
            publish_event("note", {"from": BOX_NAME})
            print("notes", send_message("worker", {"op": "notes"}))
            for target, data in (("worker", {"op": "fail"}), ("nobody", {}), (BOX_NAME, {})):
                try:
                    send_message(target, data)
                except RuntimeError as e:
                    print("error", target, e)
            print("stop", send_message("worker", {"op": "stop"}))

        await worker.run()
        await driver.run()
        assert await driver.wait() == 0, driver.stderr
        out = driver.stderr
        assert "product {'product': 42, 'sender': 'driver'}" in out, out
        assert "notes [{'from': 'driver'}]" in out, out
        assert "error worker ValueError: no such op" in out, out
        assert "error nobody Box 'nobody' not found" in out, out
        assert "error driver Cannot send to self" in out, out
        assert "stop bye" in out, out
        assert await group.wait_all(timeout=120) == [0, 0]


async def test_hostile_box_is_refused(runtime: boxlite.Boxlite, python_rootfs: Path) -> None:
    """Oversize lines are refused (never reach another box), forged replies and sender names do
    nothing, and the hostile box's honest messages still work."""
    limit = 64 * 1024
    async with BoxRuntime(runtime, rootfs_path=str(python_rootfs), max_message_bytes=limit) as group:
        worker = await group.create_box("worker")
        hostile = await group.create_box("hostile")
        seen: list[object] = []

        @worker.on_message
        def record(sender: str, data: object) -> object:
            seen.append([sender, len(str(data))])
            return list(seen)

        @hostile.task
        def attack() -> None:
            import boxlite_runtime as br

            out = br._channel()
            big = "A" * (limit * 3)
            out.write('{"type":"send","target":"worker","request_id":"r1","data":"' + big + '"}\n')
            out.write('{"type":"response","request_id":"guessed","result":"forged"}\n')
            out.write("not json\n")
            for i in range(5000):  # a flood of forged replies: counted, not buffered, logged 10 times
                out.write('{"type":"response","request_id":"g' + str(i) + '","result":1}\n')
            out.flush()
            try:
                br.send_message("worker", big)
            except RuntimeError as e:
                print("local refusal:", e)
            print("seen", br.send_message("worker", {"sender": "admin", "claim": "I am worker"}))

        await worker.run()
        await hostile.run()
        assert await hostile.wait() == 0, hostile.stderr
        assert "local refusal: message of" in hostile.stderr, hostile.stderr
        # The worker saw only the honest message, under the name the host gave the sender.
        assert "seen [['hostile', " in hostile.stderr and hostile.stderr.count("'hostile'") == 1, hostile.stderr
        assert hostile.refused == 3 + 5000, hostile.refused
        assert worker.refused == 0


async def test_bad_input(runtime: boxlite.Boxlite, python_rootfs: Path) -> None:
    with pytest.raises(boxlite.ConfigError):
        BoxRuntime(runtime, max_message_bytes=10)
    async with BoxRuntime(runtime, rootfs_path=str(python_rootfs)) as group:
        with pytest.raises(boxlite.ConfigError):
            await group.create_box("../etc", auto_start=False)
        box = await group.create_box("a", auto_start=False)
        with pytest.raises(boxlite.AlreadyExistsError):
            await group.create_box("a", auto_start=False)
        with pytest.raises(boxlite.InvalidStateError):
            await box.run()  # nothing registered
        box.on_message(len)  # type: ignore[arg-type]  # a builtin cannot be shipped as code
        with pytest.raises(boxlite.InvalidStateError):
            await box.run()  # not started
        await box.start()
        with pytest.raises(boxlite.ConfigError):
            await box.run()
