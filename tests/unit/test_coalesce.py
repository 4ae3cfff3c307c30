"""Coalescer: callers asking for one key at once share one call, its result or its error."""

from __future__ import annotations

import anyio
import pytest

from trinity.llm.coalesce import Coalescer

pytestmark = pytest.mark.anyio

Outcome = tuple[object, bool]


class HeldCall:
    """A call that waits for `release`, counting how often it was made.

    With `hang_first`, the first call never returns: its caller must be cancelled.
    """

    def __init__(self, result: object = "answer", hang_first: bool = False) -> None:
        self.result = result
        self.hang_first = hang_first
        self.error: Exception | None = None
        self.calls = 0
        self.started = anyio.Event()
        self.release = anyio.Event()

    async def __call__(self) -> object:
        self.calls += 1
        self.started.set()
        if self.hang_first and self.calls == 1:
            await anyio.sleep_forever()
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return self.result


async def crowd(
    coalescer: Coalescer[object], call: HeldCall, size: int
) -> tuple[list[Outcome], list[Exception]]:
    """`size` callers for one key; the call is released once all of them are waiting."""
    results: list[Outcome] = []
    errors: list[Exception] = []

    async def ask() -> None:
        try:
            results.append(await coalescer.run("k", call))
        except Exception as error:
            errors.append(error)

    async with anyio.create_task_group() as group:
        for _ in range(size):
            group.start_soon(ask)
        await call.started.wait()
        await anyio.wait_all_tasks_blocked()
        assert len(coalescer) == 1
        call.release.set()
    return results, errors


@pytest.mark.parametrize("size", [2, 5, 20])
async def test_concurrent_callers_share_one_call(size: int) -> None:
    coalescer: Coalescer[object] = Coalescer()
    call = HeldCall()
    results, errors = await crowd(coalescer, call, size)

    assert call.calls == 1
    assert errors == []
    assert sorted(results, key=lambda r: r[1]) == [("answer", False)] + [("answer", True)] * (
        size - 1
    )
    assert len(coalescer) == 0


@pytest.mark.parametrize("result", [None, 0, "", [], {"a": 1}])
async def test_an_empty_or_falsy_result_is_shared_too(result: object) -> None:
    coalescer: Coalescer[object] = Coalescer()
    call = HeldCall(result)
    results, _ = await crowd(coalescer, call, 3)
    assert call.calls == 1
    assert sorted(shared for _, shared in results) == [False, True, True]
    assert all(value == result for value, _ in results)


async def test_every_caller_gets_the_calls_exception() -> None:
    coalescer: Coalescer[object] = Coalescer()
    call = HeldCall()
    call.error = ValueError("the model said no")
    results, errors = await crowd(coalescer, call, 4)

    assert call.calls == 1
    assert results == []
    assert len(errors) == 4
    assert all(error is call.error for error in errors)
    assert len(coalescer) == 0


async def test_a_failure_is_not_remembered() -> None:
    coalescer: Coalescer[object] = Coalescer()
    failing = HeldCall()
    failing.error = RuntimeError("once")
    failing.release.set()
    with pytest.raises(RuntimeError, match="once"):
        await coalescer.run("k", failing)

    working = HeldCall("second try")
    working.release.set()
    assert await coalescer.run("k", working) == ("second try", False)


async def test_different_keys_run_independently() -> None:
    coalescer: Coalescer[object] = Coalescer()
    slow, quick = HeldCall("slow"), HeldCall("quick")
    quick.release.set()
    slow_result: list[Outcome] = []

    async def ask_slow() -> None:
        slow_result.append(await coalescer.run("slow", slow))

    async with anyio.create_task_group() as group:
        group.start_soon(ask_slow)
        await slow.started.wait()
        # "quick" answers while "slow" is still in flight: it does not wait behind it.
        assert await coalescer.run("quick", quick) == ("quick", False)
        assert len(coalescer) == 1
        slow.release.set()

    assert slow_result == [("slow", False)]
    assert (slow.calls, quick.calls) == (1, 1)


async def test_a_finished_key_is_gone_and_a_later_caller_calls_again() -> None:
    coalescer: Coalescer[object] = Coalescer()
    call = HeldCall()
    call.release.set()
    assert await coalescer.run("k", call) == ("answer", False)
    assert len(coalescer) == 0
    assert await coalescer.run("k", call) == ("answer", False)
    assert call.calls == 2


@pytest.mark.parametrize("waiting", [1, 3])
async def test_a_waiter_runs_the_call_itself_when_the_leader_is_cancelled(waiting: int) -> None:
    coalescer: Coalescer[object] = Coalescer()
    call = HeldCall("retried", hang_first=True)
    leader_scope = anyio.CancelScope()
    leader_results: list[Outcome] = []
    results: list[Outcome] = []

    async def leader() -> None:
        with leader_scope:
            leader_results.append(await coalescer.run("k", call))

    async def follower() -> None:
        results.append(await coalescer.run("k", call))

    async with anyio.create_task_group() as group:
        group.start_soon(leader)
        await call.started.wait()
        for _ in range(waiting):
            group.start_soon(follower)
        await anyio.wait_all_tasks_blocked()
        leader_scope.cancel()
        await anyio.wait_all_tasks_blocked()
        assert call.calls == 2  # the cancelled one, and one more for all the waiters
        assert len(coalescer) == 1
        call.release.set()

    assert leader_results == []
    assert call.calls == 2
    assert sorted(results, key=lambda r: r[1]) == [("retried", False)] + [("retried", True)] * (
        waiting - 1
    )
    assert len(coalescer) == 0


async def test_a_cancelled_waiter_does_not_disturb_the_others() -> None:
    coalescer: Coalescer[object] = Coalescer()
    call = HeldCall()
    quitter_scope = anyio.CancelScope()
    results: list[Outcome] = []

    async def ask() -> None:
        results.append(await coalescer.run("k", call))

    async def quitter() -> None:
        with quitter_scope:
            results.append(await coalescer.run("k", call))

    async with anyio.create_task_group() as group:
        group.start_soon(ask)
        await call.started.wait()
        group.start_soon(quitter)
        group.start_soon(ask)
        await anyio.wait_all_tasks_blocked()
        quitter_scope.cancel()
        await anyio.wait_all_tasks_blocked()
        call.release.set()

    assert call.calls == 1
    assert sorted(results, key=lambda r: r[1]) == [("answer", False), ("answer", True)]
    assert len(coalescer) == 0
