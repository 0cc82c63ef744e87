"""``boxlite.aio.within``: ``asyncio.wait_for`` without Python 3.11's lost cancellation.

The race is built deterministically: the awaited result and the cancellation of the awaiting
task are made in the same callback, so both land in the same loop iteration. Plain
``asyncio.wait_for`` runs the same test (expected to fail before Python 3.12); the other tests
run against both, to show ``within`` keeps ``wait_for``'s semantics otherwise.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from boxlite.aio import within

Helper = Callable[[Awaitable[Any], float | None], Awaitable[Any]]

LOSES_CANCELLATION = pytest.mark.xfail(
    sys.version_info < (3, 12), reason="wait_for before 3.12 drops the cancellation (CPython gh-86296)", strict=True
)
BOTH = pytest.mark.parametrize("wait", [within, asyncio.wait_for], ids=["within", "wait_for"])


@pytest.mark.parametrize("kind", ["future", "coroutine"])
@pytest.mark.parametrize(
    "wait", [within, pytest.param(asyncio.wait_for, marks=LOSES_CANCELLATION)], ids=["within", "wait_for"]
)
async def test_a_cancellation_in_the_same_step_as_the_result_is_not_lost(wait: Helper, kind: str) -> None:
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str] = loop.create_future()
    went_on: list[str] = []

    async def answered() -> str:
        return await answer

    async def caller() -> None:
        result = await wait(answer if kind == "future" else answered(), 10)
        went_on.append(result)  # a lost cancellation: the caller goes on
        await asyncio.sleep(3600)  # ... and nobody ends it but another cancellation

    task = asyncio.ensure_future(caller())
    await asyncio.sleep(0)  # the caller waits for the answer
    assert not task.done()

    def answer_and_cancel() -> None:
        answer.set_result("answer")
        task.cancel()

    loop.call_soon(answer_and_cancel)
    try:
        await asyncio.wait({task}, timeout=1)  # it ends in the next steps (no timer involved)
        assert task.cancelled(), f"the cancellation was lost: the caller went on with {went_on}"
        assert went_on == []
    finally:
        task.cancel()


@BOTH
@pytest.mark.parametrize("kind", ["future", "coroutine"])
async def test_the_deadline_raises_timeout_error_and_cancels_the_step(wait: Helper, kind: str) -> None:
    loop = asyncio.get_running_loop()
    never: asyncio.Future[None] = loop.create_future()
    cleaned: list[str] = []

    async def slow() -> None:
        try:
            await never
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # its clean-up ends before the caller goes on
            cleaned.append("cancelled")
            raise

    t0 = loop.time()
    with pytest.raises(TimeoutError):  # asyncio.TimeoutError is TimeoutError since 3.11
        await wait(never if kind == "future" else slow(), 0.1)
    assert 0.09 <= loop.time() - t0 < 5
    assert never.cancelled()
    assert cleaned == ([] if kind == "future" else ["cancelled"])


@BOTH
async def test_a_step_that_ignores_its_cancellation_gives_its_result(wait: Helper) -> None:
    async def stubborn() -> str:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass
        return "result"

    assert await wait(stubborn(), 0.05) == "result"
    await asyncio.sleep(0)  # no cancellation left pending in this task


@BOTH
async def test_the_deadline_in_a_task_that_swallowed_a_cancellation(wait: Helper) -> None:
    """3.11's asyncio.timeout lets its CancelledError through here (the earlier cancellation was
    never uncancel()ed); wait_for, and within, raise TimeoutError."""

    async def swallowing() -> str:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass  # e.g. contextlib.suppress(BaseException) around a clean-up
        try:
            await wait(asyncio.sleep(3600), 0.05)
        except TimeoutError:
            return "timed out"
        return "finished"

    task = asyncio.ensure_future(swallowing())
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.wait({task}, timeout=5)
    assert task.done() and not task.cancelled()
    assert task.result() == "timed out"


@BOTH
async def test_a_cancellation_during_the_deadline_s_clean_up_stays_a_cancellation(wait: Helper) -> None:
    loop = asyncio.get_running_loop()
    never: asyncio.Future[None] = loop.create_future()
    task: asyncio.Task[None] | None = None

    async def slow() -> None:
        try:
            await never
        except asyncio.CancelledError:  # the deadline's cancellation ...
            assert task is not None
            task.cancel()  # ... and then the caller's
            await asyncio.sleep(0.01)
            raise

    async def caller() -> None:
        await wait(slow(), 0.05)

    task = asyncio.ensure_future(caller())
    await asyncio.wait({task}, timeout=5)
    assert task.cancelled()


@BOTH
async def test_a_cancellation_before_the_deadline_cancels_the_step(wait: Helper) -> None:
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(wait(never, 10))
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.wait({task}, timeout=5)
    assert task.cancelled()
    assert never.cancelled()


@BOTH
async def test_a_shielded_future_is_not_cancelled_by_the_deadline(wait: Helper) -> None:
    shared: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    with pytest.raises(TimeoutError):
        await wait(asyncio.shield(shared), 0.05)
    assert not shared.done()
    shared.set_result("later")
    assert await wait(asyncio.shield(shared), 1) == "later"


@BOTH
async def test_a_zero_or_negative_deadline(wait: Helper) -> None:
    done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    done.set_result("ready")
    assert await wait(done, 0) == "ready"
    started: list[bool] = []

    async def step() -> str:
        started.append(True)
        return "ran"

    for timeout in (0, -1):
        with pytest.raises(TimeoutError):
            await wait(step(), timeout)
    assert started == []  # as wait_for: a step not done is cancelled before it runs
    pending: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    with pytest.raises(TimeoutError):
        await wait(pending, 0)
    assert pending.cancelled()


@BOTH
async def test_none_means_no_deadline(wait: Helper) -> None:
    loop = asyncio.get_running_loop()
    later: asyncio.Future[str] = loop.create_future()
    loop.call_later(0.3, later.set_result, "late")
    assert await wait(later, None) == "late"

    async def slow() -> str:
        await asyncio.sleep(0.2)
        return "slow"

    assert await wait(slow(), None) == "slow"
    never: asyncio.Future[None] = loop.create_future()
    task = asyncio.ensure_future(wait(never, None))
    await asyncio.sleep(0.05)
    assert not task.done()  # still waiting
    task.cancel()
    await asyncio.wait({task}, timeout=5)
    assert task.cancelled() and never.cancelled()


async def test_errors_of_the_step_pass_through() -> None:
    async def failing() -> None:
        await asyncio.sleep(0)
        raise OSError("boom")

    for timeout in (None, 10):
        with pytest.raises(OSError, match="boom"):
            await within(failing(), timeout)
