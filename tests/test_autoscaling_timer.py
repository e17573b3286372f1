"""The autoscaling timer's split between kopf's event loop and its thread pool: a tick with
nothing due ends in the event loop; a due one runs in the runtime's executor, in the handler's
context, and a cancelled timer waits for its thread."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
import pytest

from dunnage.autoscaling.loop import LoopState
from dunnage.operator import autoscaler, handlers

MODEL_SERVICE = {
    "metadata": {"namespace": "ns", "name": "ms"},
    "spec": {"autoscaling": {"policyRef": {"name": "pol"}}},
}


class CountingExecutor(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="handler")
        self.submitted = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


@pytest.fixture
def executor() -> Iterator[CountingExecutor]:
    pool = CountingExecutor()
    handlers.install(handlers.Runtime(api=None, executor=pool))  # type: ignore[arg-type]
    yield pool
    handlers._runtime = None
    pool.shutdown()


def tick(memo: kopf.Memo, policies: dict[Any, list[dict[str, Any]]] | None = None) -> None:
    asyncio.run(
        autoscaler.autoscale(
            body=kopf.Body(MODEL_SERVICE), memo=memo, autoscaling_policies=policies or {}
        )
    )


def test_a_tick_with_nothing_due_stays_out_of_the_thread_pool(
    executor: CountingExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[tuple[str, LoopState]] = []
    monkeypatch.setattr(
        autoscaler,
        "tick_in_thread",
        lambda body, state, memo, kwargs: ran.append((threading.current_thread().name, state)),
    )
    memo = kopf.Memo()
    tick(memo)  # a new loop has everything due
    assert executor.submitted == 1
    assert ran[0][0].startswith("handler")
    state = memo["autoscaling"]
    assert ran[0][1] is state
    monkeypatch.setattr(LoopState, "due", lambda self, now: False)
    tick(memo)
    tick(memo)
    assert executor.submitted == 1 and len(ran) == 1
    monkeypatch.setattr(LoopState, "due", lambda self, now: True)
    tick(memo)
    assert executor.submitted == 2 and ran[1][1] is state


def test_a_deleted_model_service_has_no_tick(
    executor: CountingExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(autoscaler, "tick_in_thread", lambda *args: pytest.fail("ticked"))
    body = {**MODEL_SERVICE, "metadata": {**MODEL_SERVICE["metadata"], "deletionTimestamp": "x"}}
    asyncio.run(autoscaler.autoscale(body=kopf.Body(body), memo=kopf.Memo()))
    assert executor.submitted == 0


def test_an_edited_policy_is_acted_on_in_the_wait_after_failed_metric_reads(
    executor: CountingExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event loop's check reads the policy from the index too: while the loop waits after
    failed metric reads, an edit of its policy (a corrected Prometheus URL) makes the tick due."""
    monkeypatch.setattr(autoscaler, "tick_in_thread", lambda *args: None)
    policy = {"metadata": {"namespace": "ns", "name": "pol", "uid": "p1", "generation": 1}}
    policies = {("ns", "pol"): [policy]}
    memo = kopf.Memo()
    tick(memo, policies)
    assert executor.submitted == 1
    state = memo["autoscaling"]
    state.last_sample = time.monotonic()
    state.metrics_failures, state.metrics_retry_at = 3, time.monotonic() + 30
    tick(memo, policies)
    assert executor.submitted == 1  # waiting
    policies[("ns", "pol")] = [{"metadata": {**policy["metadata"], "generation": 2}}]
    tick(memo, policies)
    assert executor.submitted == 2
    assert state.metrics_retry_at is None and state.metrics_failures == 0


def test_in_thread_runs_in_the_executor_with_the_callers_context(
    executor: CountingExecutor,
) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var")

    async def caller() -> Any:
        var.set("the handler's")
        return await handlers.runtime().in_thread(
            lambda a, b: (a + b, var.get(), threading.current_thread().name), 1, 2
        )

    total, seen, thread = asyncio.run(caller())
    assert (total, seen) == (3, "the handler's")
    assert thread.startswith("handler")


def test_a_cancelled_caller_waits_for_its_thread(executor: CountingExecutor) -> None:
    started, release = threading.Event(), threading.Event()
    finished: list[bool] = []

    def work() -> None:
        started.set()
        release.wait(5)
        finished.append(True)

    async def main() -> None:
        task = asyncio.create_task(handlers.runtime().in_thread(work))
        while not started.is_set():
            await asyncio.sleep(0.001)
        task.cancel()
        await asyncio.sleep(0.05)
        assert not task.done()  # still waiting for the thread
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert finished == [True]

    asyncio.run(main())
