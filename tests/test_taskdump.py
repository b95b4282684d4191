"""The SIGUSR1 dump shows what a stuck worker waits on, where Faust's own dump stopped short: inside an
async generator, and on an event loop that runs in another thread (the consumer thread's)."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import AsyncIterator

from haochaping import taskdump


async def records(never: asyncio.Future[None]) -> AsyncIterator[int]:
    marker_in_generator = "fetch-wait"
    await never
    yield len(marker_in_generator)


async def drain(never: asyncio.Future[None]) -> None:
    async for _ in records(never):
        pass


async def thread_side(started: threading.Event, never: asyncio.Future[None]) -> None:
    marker_in_thread = "thread-loop-task"
    started.set()
    await never
    del marker_in_thread


def test_dump_reaches_into_async_generators_and_other_threads_loops() -> None:
    thread_loop = asyncio.new_event_loop()
    started = threading.Event()
    thread_never = thread_loop.create_future()
    thread_task = thread_loop.create_task(thread_side(started, thread_never), name="consumer-thread-task")
    thread = threading.Thread(target=thread_loop.run_forever, name="ConsumerThreadLike", daemon=True)
    thread.start()
    assert started.wait(5)

    async def main() -> str:
        never = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(drain(never), name="fetcher-like")
        await asyncio.sleep(0.01)
        out = io.StringIO()
        taskdump.dump(out)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return out.getvalue()

    try:
        text = asyncio.run(main())
    finally:
        thread_loop.call_soon_threadsafe(thread_task.cancel)
        thread_loop.call_soon_threadsafe(thread_loop.stop)
        thread.join(5)
        thread_loop.close()

    assert "THREAD ConsumerThreadLike" in text
    # the other thread's loop: its task, its frame and its local
    assert "TASK consumer-thread-task" in text
    assert "in thread_side" in text and "marker_in_thread = 'thread-loop-task'" in text
    # the main loop's task goes down into the async generator it iterates, to the future it waits on
    assert "TASK fetcher-like" in text
    assert "ASYNC GENERATOR records" in text
    assert "marker_in_generator = 'fetch-wait'" in text
    assert "never = <Future pending" in text


def test_a_weak_proxy_whose_object_is_gone_does_not_end_the_dump() -> None:
    """gc's objects can include such a proxy (the test suite's did); isinstance() on it raises."""
    import gc
    import weakref

    class Gone:
        pass

    obj = Gone()
    proxies = [weakref.proxy(obj)]
    del obj
    gc.collect()
    out = io.StringIO()
    taskdump.dump(out)
    assert "THREAD MainThread" in out.getvalue()
    assert len(proxies) == 1
