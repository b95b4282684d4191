"""``streams.take.take_batches``: the agents' batches, read from the channel queue without Faust's stream.

No broker: a Faust app is built (nothing connects) and events are put on an agent channel's queue as
Faust's conductor would.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from faust.events import Event
from faust.transport.consumer import ConsumerMessage
from faust.types import TP

from haochaping.settings import Settings
from streams.app import create_app
from streams.take import take_batches


def _app(settings: Settings, tmp_path: Path) -> Any:
    streams = settings.streams.model_copy(update={"data_dir": tmp_path})
    app = create_app(settings.model_copy(update={"streams": streams}))
    app.consumer_generation_id = 5
    app.flow_control.resume()
    return app


def _event(app: Any, topic: str, offset: int, generation: int = 5) -> Event:
    message = ConsumerMessage(
        topic, 0, offset, 0.0, 0, [], b"k", b"v", None, 1, 1, TP(topic, 0), generation_id=generation
    )
    return Event(app, b"k", b"v", {}, message)


def _setup(app: Any, topic: str) -> tuple[Any, Any]:
    channel = app.topic(topic, key_type=bytes, value_type=bytes).__aiter__()
    app.topics._acking_topics.add(topic)  # as the conductor marks every agent's source topic
    return app.stream(channel), channel.queue


def test_a_batch_is_cut_at_its_size_and_the_rest_comes_in_the_next(
    settings: Settings, tmp_path: Path
) -> None:
    async def run() -> list[list[int]]:
        app = _app(settings, tmp_path)
        stream, queue = _setup(app, "t")
        for offset in range(5):
            queue.put_nowait(_event(app, "t", offset))
        batches = take_batches(stream, 3, 0.05)
        first = await anext(batches)
        second = await anext(batches)
        await batches.aclose()
        return [[e.message.offset for e in first], [e.message.offset for e in second]]

    assert asyncio.run(run()) == [[0, 1, 2], [3, 4]]


def test_records_of_an_older_generation_are_neither_handed_on_nor_tracked(
    settings: Settings, tmp_path: Path
) -> None:
    """What Faust's stream skips; they come again from the committed offset after the rebalance."""

    async def run() -> dict[str, Any]:
        app = _app(settings, tmp_path)
        stream, queue = _setup(app, "t")
        stale = _event(app, "t", 0, generation=4)  # fetched before the last rebalance
        current = _event(app, "t", 1)
        queue.put_nowait(stale)
        queue.put_nowait(current)
        batches = take_batches(stream, 10, 0.02)
        batch = await anext(batches)
        await batches.aclose()
        return {
            "batch": [e.message.offset for e in batch],
            "tracked": sorted(m.offset for m in app.consumer.unacked),
            "flags": [stale.message.tracked, current.message.tracked],
        }

    assert asyncio.run(run()) == {"batch": [1], "tracked": [1], "flags": [False, True]}


def test_a_record_taken_while_the_flow_is_stopped_is_dropped(settings: Settings, tmp_path: Path) -> None:
    async def run() -> tuple[list[int], list[int]]:
        app = _app(settings, tmp_path)
        stream, queue = _setup(app, "t")
        queue.put_nowait(_event(app, "t", 0))
        batches = take_batches(stream, 10, 0.02)
        first = await anext(batches)  # held, as an agent holds its batch (the tracking set is weak)
        app.flow_control.suspend()
        queue.put_nowait(_event(app, "t", 1))
        taking = asyncio.ensure_future(anext(batches))
        await asyncio.sleep(0.1)  # offset 1 is taken and dropped; the generator waits for more
        app.flow_control.resume()
        queue.put_nowait(_event(app, "t", 2))
        batch = await asyncio.wait_for(taking, 5)
        await batches.aclose()
        tracked = sorted(m.offset for m in app.consumer.unacked)
        assert [e.message.offset for e in first] == [0]
        return [e.message.offset for e in batch], tracked

    assert asyncio.run(run()) == ([2], [0, 2])


def test_records_that_arrive_after_a_batch_was_cut_open_the_next_one(
    settings: Settings, tmp_path: Path
) -> None:
    """The get still waiting when the time bound cut the batch is the next batch's first (never cancelled)."""

    async def run() -> list[list[int]]:
        app = _app(settings, tmp_path)
        stream, queue = _setup(app, "t")
        queue.put_nowait(_event(app, "t", 0))
        batches = take_batches(stream, 10, 0.02)
        first = await anext(batches)  # cut after 20 ms with a get still waiting
        queue.put_nowait(_event(app, "t", 1))
        queue.put_nowait(_event(app, "t", 2))
        second = await anext(batches)
        await batches.aclose()
        return [[e.message.offset for e in first], [e.message.offset for e in second]]

    assert asyncio.run(run()) == [[0], [1, 2]]


def test_the_batches_end_when_the_worker_closes_the_channel(settings: Settings, tmp_path: Path) -> None:
    """A stopping worker throws StopAsyncIteration into each channel; the agent's loop ends, no crash."""

    async def run() -> list[list[int]]:
        app = _app(settings, tmp_path)
        stream, queue = _setup(app, "t")
        queue.put_nowait(_event(app, "t", 0))
        seen = []
        closing = asyncio.get_running_loop().call_later(0.1, queue._throw, StopAsyncIteration())
        async for batch in take_batches(stream, 10, 0.02):
            seen.append([e.message.offset for e in batch])
        closing.cancel()
        return seen

    assert asyncio.run(asyncio.wait_for(run(), 5)) == [[0]]
