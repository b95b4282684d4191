"""What a stuck process is waiting on: every thread's stack, every asyncio task of every event loop
(a worker's consumer thread's included), and every suspended async generator, each down to the future
it waits on, with the locals of each frame.

The stream worker and the sink write this to their logs on SIGUSR1 (``kill -USR1 PID``; ``streams.cli``,
``sinks.cli``). Faust's own handler
(``mode.utils.logging.cry``) shows the main loop's tasks only, and stops at an ``async for``: the
fetcher's wait inside Faust's ``getmany`` async generator, and the consumer thread's tasks where
aiokafka fetches, were not in it when a worker stopped in the fault drills.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from types import FrameType
from typing import IO, Any

LOCAL_REPR_CHARS = 300  # a local's repr is cut here: a batch of records must not flood the log
MAX_DEPTH = 50  # awaits followed from one task, in case of a cycle


def dump(file: IO[str]) -> None:
    """Write threads, tasks and async generators, with their stacks and locals, to ``file``."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        print(f"THREAD {names.get(ident, ident)}", file=file)
        for line in traceback.format_stack(frame):
            file.write(line)
        print(file=file)
    for loop in _event_loops():
        tasks = asyncio.all_tasks(loop)
        print(f"EVENT LOOP {loop!r}: {len(tasks)} task(s)", file=file)
        for task in tasks:
            print(f"  TASK {task.get_name()} {task!r}", file=file)
            waiter = getattr(task, "_fut_waiter", None)  # what the task's own step waits on
            if waiter is not None:
                print(f"    task waits on {_short(waiter)}", file=file)
            for description, frame in _await_chain(task.get_coro()):
                _print_frame(description, frame, file)
        print(file=file)
    generators = _objects(lambda obj: inspect.isasyncgen(obj) and obj.ag_frame is not None)
    print(f"ASYNC GENERATORS suspended: {len(generators)}", file=file)
    for generator in generators:
        print(f"  ASYNC GENERATOR {generator.__qualname__} running={generator.ag_running}", file=file)
        _print_frame("async generator", generator.ag_frame, file)
        for description, frame in _await_chain(generator.ag_await):
            _print_frame(description, frame, file)
    file.flush()


def _event_loops() -> list[asyncio.AbstractEventLoop]:
    # The consumer thread's loop belongs to a mode ServiceThread, not to a threading.Thread attribute
    # that could be looked up: any loop still open in the process is one of the worker's.
    return _objects(lambda obj: isinstance(obj, asyncio.AbstractEventLoop) and not obj.is_closed())


def _objects(wanted: Callable[[Any], bool]) -> list[Any]:
    found = []
    for obj in gc.get_objects():
        try:
            if wanted(obj):
                found.append(obj)
        except ReferenceError:  # a weak proxy whose object is gone: isinstance() on it raises
            continue
    return found


def _await_chain(awaitable: Any) -> Iterator[tuple[str, FrameType | None]]:
    """The frames from ``awaitable`` down to what it waits on (coroutines, generators, and the
    awaits of async generators), then, as a frame-less last line, the innermost awaitable."""
    current = awaitable
    for _ in range(MAX_DEPTH):
        if current is None:
            return
        frame = getattr(current, "cr_frame", None) or getattr(current, "gi_frame", None)
        if frame is None:
            frame = getattr(current, "ag_frame", None)
        if frame is not None:
            yield type(current).__name__, frame
        following = (
            getattr(current, "cr_await", None)
            or getattr(current, "gi_yieldfrom", None)
            or getattr(current, "ag_await", None)
        )
        if following is None:
            if frame is None and type(current).__name__ != "FutureIter":
                # (a future's iterator does not show its future: the frame above holds it in a local)
                yield f"waits on {_short(current)}", None
            return
        current = following


def _print_frame(description: str, frame: FrameType | None, file: IO[str]) -> None:
    if frame is None:
        print(f"    {description}", file=file)
        return
    code = frame.f_code
    print(f"    {description}: {code.co_filename}:{frame.f_lineno} in {code.co_name}", file=file)
    for name, value in frame.f_locals.items():
        print(f"      {name} = {_short(value)}", file=file)


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a repr that fails must not end the dump
        text = f"<repr failed: {exc!r}>"
    return text if len(text) <= LOCAL_REPR_CHARS else text[:LOCAL_REPR_CHARS] + "..."
