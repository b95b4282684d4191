"""The worker's transport (``haochaping+kafka://``): registered with Faust, used by the app, settings applied.

The flow through ``Consumer._drain_messages`` is exercised by every worker test in ``test_worker.py``
(the app always runs on this transport); these tests pin what those cannot see.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import faust.transport
import pytest

from haochaping.settings import Settings
from streams import transport
from streams.app import create_app


def _with_fetch_wait(settings: Settings, tmp_path: Path, wait_ms: int) -> Settings:
    streams = settings.streams.model_copy(update={"fetch_max_wait_ms": wait_ms, "data_dir": tmp_path})
    return settings.model_copy(update={"streams": streams})


def test_the_scheme_names_the_transport_in_fausts_registry() -> None:
    assert faust.transport.by_url("haochaping+kafka://127.0.0.1:9092") is transport.Transport
    # Faust's own scheme is untouched.
    assert faust.transport.by_url("kafka://127.0.0.1:9092") is not transport.Transport


def test_the_app_consumes_through_the_transport_with_the_configured_fetch_wait(
    settings: Settings, tmp_path: Path
) -> None:
    async def build() -> tuple[Any, Any, int, list[str]]:
        app = create_app(_with_fetch_wait(settings, tmp_path, 123))
        consumer = app.consumer
        client = consumer._thread._create_worker_consumer(app.transport)
        try:
            return app.transport, consumer, client._fetch_max_wait_ms, client._client._bootstrap_servers
        finally:
            await client.stop()

    used, consumer, wait_ms, servers = asyncio.run(build())
    assert isinstance(used, transport.Transport)
    assert isinstance(consumer, transport.Consumer)
    assert wait_ms == 123
    assert servers == settings.kafka.bootstrap_servers.split(",")


@pytest.mark.integration
def test_the_started_consumer_fetches_with_the_configured_wait(
    kafka_stack: Any, settings: Settings, tmp_path: Path
) -> None:
    """The value reaches aiokafka's fetcher when the consumer starts against the real broker."""

    async def started_wait() -> int:
        app = create_app(_with_fetch_wait(settings, tmp_path, 80))
        client = app.consumer._thread._create_worker_consumer(app.transport)
        await client.start()
        try:
            return client._fetcher._fetch_max_wait_ms
        finally:
            await client.stop()

    assert asyncio.run(started_wait()) == 80


def _message(topic: str, partition: int, offset: int, generation: int) -> Any:
    from faust.transport.consumer import ConsumerMessage
    from faust.types import TP

    return ConsumerMessage(
        topic,
        partition,
        offset,
        0.0,
        0,
        [],
        b"k",
        b"v",
        None,
        1,
        1,
        TP(topic, partition),
        generation_id=generation,
    )


def test_the_consumer_loop_never_sees_a_read_position(settings: Settings, tmp_path: Path) -> None:
    """Faust's loop drops records below a partition's read position and acknowledges "gaps" above it;
    around a rebalance that lost records (streams/transport.py, point 1). The position is never there."""

    async def positions() -> list[Any]:
        from faust.types import TP

        app = create_app(_with_fetch_wait(settings, tmp_path, 100))
        read = app.consumer._read_offset
        tp = TP("t", 0)
        read[tp] = 120  # what the loop does after each record
        read.update({tp: 80})  # what perform_seek does
        return [read[tp], dict(read)]

    assert asyncio.run(positions()) == [None, {}]


def test_only_records_of_the_current_generation_processed_while_the_flow_runs_count_for_a_commit(
    settings: Settings, tmp_path: Path
) -> None:
    """A record Faust's stream skipped during a rebalance is acknowledged too; it must not move the commit."""

    async def acked() -> dict[str, list[int]]:
        app = create_app(_with_fetch_wait(settings, tmp_path, 100))
        consumer = app.consumer
        topic = settings.kafka.topic("reviews.raw")
        app.topics.acks_enabled_for = lambda _topic: True  # as for every agent's source topic once started
        app.consumer_generation_id = 3
        seen: dict[str, list[int]] = {}

        app.flow_control.resume()
        consumer.ack(_message(topic, 0, 10, generation=3))
        consumer.ack(_message(topic, 0, 11, generation=2))  # fetched before the last rebalance
        seen["flow running"] = sorted(consumer._acked[consumer._new_topicpartition(topic, 0)])

        app.flow_control.suspend()  # a rebalance has begun
        stopped = _message(topic, 0, 12, generation=3)
        consumer._unacked_messages.add(stopped)
        consumer.ack(stopped)
        seen["flow stopped"] = sorted(consumer._acked[consumer._new_topicpartition(topic, 0)])
        seen["still waited for"] = [m.offset for m in consumer._unacked_messages]
        return seen

    assert asyncio.run(acked()) == {"flow running": [10], "flow stopped": [10], "still waited for": []}


def test_records_fetched_but_lost_before_the_agent_are_found_and_commits_stop_before_them(
    settings: Settings, tmp_path: Path
) -> None:
    """The consumer lost offsets 5..7 of partition 0 on the way to the agent (streams/transport.py,
    point 3): the agent is told to fetch again from 5, and no commit passes 5 until they come."""

    async def run() -> dict[str, Any]:
        from faust.types import TP

        app = create_app(_with_fetch_wait(settings, tmp_path, 100))
        consumer = app.consumer
        topic = settings.kafka.topic("reviews.raw")
        tp0, tp1 = TP(topic, 0), TP(topic, 1)
        app.topics.acks_enabled_for = lambda _topic: True
        app.consumer_generation_id = 4
        app.flow_control.resume()
        consumer._committed_offset[tp0] = 3  # what perform_seek found
        consumer._next_offset = {tp0: 3, tp1: None}  # p1 has no committed offset yet
        out: dict[str, Any] = {}

        first = [_message(topic, 0, o, 4) for o in (3, 4, 8, 9)] + [
            _message(topic, 1, o, 4) for o in (40, 41)
        ]
        out["holes"] = consumer.holes(first)
        for m in first:
            consumer.ack(m)
        out["commit while missing"] = consumer._new_offset(tp0)
        consumer._committed_offset[tp0] = out["commit while missing"]  # as the commit records it

        again = [_message(topic, 0, o, 4) for o in (5, 6, 7, 8, 9, 10)]  # fetched again after the seek
        stale = [_message(topic, 0, 99, 3)]  # of the previous generation: not looked at
        out["holes after the refetch"] = consumer.holes(again + stale)
        for m in again:
            consumer.ack(m)
        out["commit after"] = consumer._new_offset(tp0)
        return out

    assert asyncio.run(run()) == {
        "holes": {(settings.kafka.topic("reviews.raw"), 0): (5, 8)},
        "commit while missing": 5,
        "holes after the refetch": {},
        "commit after": 11,
    }


def test_no_commit_passes_a_committed_offset_that_was_never_acknowledged(
    settings: Settings, tmp_path: Path
) -> None:
    """Faust checks ``min(acked) - committed > 1``, which lets the committed offset itself through."""

    async def run() -> int | None:
        from faust.types import TP

        app = create_app(_with_fetch_wait(settings, tmp_path, 100))
        consumer = app.consumer
        tp = TP(settings.kafka.topic("reviews.raw"), 0)
        consumer._committed_offset[tp] = 285
        consumer._acked[tp] = [286, 287, 288]
        return consumer._new_offset(tp)

    assert asyncio.run(run()) is None


def test_offsets_still_missing_after_fetching_them_again_are_taken_for_a_gap(
    settings: Settings, tmp_path: Path
) -> None:
    """A real hole in the log (a transactional producer's markers) must not make the agent seek forever."""

    async def run() -> list[Any]:
        from faust.types import TP

        app = create_app(_with_fetch_wait(settings, tmp_path, 100))
        consumer = app.consumer
        tp = TP(settings.kafka.topic("reviews.raw"), 0)
        app.consumer_generation_id = 1
        consumer._committed_offset[tp] = 10
        consumer._next_offset = {tp: 10}
        sought: list[int] = []

        async def seek(partition: Any, offset: int) -> None:
            sought.append(offset)

        consumer.seek = seek  # the client's seek; what matters here is how often it is asked for
        now = [100.0]
        consumer._clock = lambda: now[0]
        answers = []
        for step in (0.0, 1.0, 1.0, 1.0, 30.0):  # each time the log answers with 12 where 10 was expected
            now[0] += step
            [(hole, (first, after))] = consumer.holes([_message(tp.topic, 0, 12, 1)]).items()
            answers.append(await consumer.fetch_again(hole, first, after))
        after_gap = [_message(tp.topic, 0, 12, 1), _message(tp.topic, 0, 13, 1)]
        answers.append(consumer.holes(after_gap))
        app.topics.acks_enabled_for = lambda _topic: True
        app.flow_control.resume()
        for m in after_gap:
            consumer.ack(m)
        return [answers, sought, consumer._new_offset(tp)]

    answers, sought, commit = asyncio.run(run())
    # a fourth try within 30 s is still a seek (records queued before a seek look the same); then a gap
    assert answers == [True, True, True, True, False, {}]
    assert sought == [10, 10, 10, 10]
    assert commit == 14  # offsets 10 and 11 are a gap; the commit goes on past them


def test_a_hand_off_that_needs_no_wait_finishes_in_one_step_and_its_error_propagates() -> None:
    """Point 4: the common hand-off (nothing to wait for) runs to its end inside ``start_eagerly``."""
    done: list[str] = []

    async def hand_off(record: str) -> None:
        done.append(record)

    assert transport.start_eagerly(hand_off("r1")) is None
    assert done == ["r1"]

    async def broken() -> None:
        raise ValueError("not a review")

    with pytest.raises(ValueError, match="not a review"):
        transport.start_eagerly(broken())


def test_a_hand_off_that_must_wait_goes_on_where_it_stopped() -> None:
    """A hand-off blocked on a full buffer resumes, as a task, with the values it waited for."""

    async def run() -> tuple[list[Any], Any]:
        loop = asyncio.get_running_loop()
        room = loop.create_future()
        steps: list[Any] = []

        async def hand_off() -> str:
            steps.append("started")
            steps.append(await room)  # the buffer is full: wait for room
            await asyncio.sleep(0)  # a bare yield to the loop on the way
            steps.append("delivered")
            return "ok"

        rest = transport.start_eagerly(hand_off())
        assert rest is not None
        assert steps == ["started"]
        task = asyncio.ensure_future(rest)
        await asyncio.sleep(0)
        assert not task.done()
        room.set_result("room")
        return steps, await task

    assert asyncio.run(run()) == (["started", "room", "delivered"], "ok")


def test_a_waiting_hand_off_is_abandoned_when_the_drain_loop_is_cancelled_for_a_rebalance(
    settings: Settings, tmp_path: Path
) -> None:
    """As in Faust's loop: a hand-off still waiting when the flow is suspended is cancelled, the loop
    goes on with the next record, and nothing of the abandoned one is delivered."""

    async def run() -> dict[str, Any]:
        app = create_app(_with_fetch_wait(settings, tmp_path, 100))
        consumer = app.consumer
        topic = settings.kafka.topic("reviews.raw")
        blocked = asyncio.Event()
        delivered: list[int] = []
        cancelled: list[int] = []
        stop = asyncio.Event()

        class Fetcher:
            _stopped = stop

        async def callback(message: Any) -> None:
            if message.offset == 1:  # this one finds the stream buffer full
                try:
                    await blocked.wait()
                except asyncio.CancelledError:
                    cancelled.append(message.offset)
                    raise
            delivered.append(message.offset)

        async def getmany(timeout: float) -> Any:
            for offset in range(3):
                yield (None, _message(topic, 0, offset, generation=1))
            stop.set()

        consumer.callback = callback
        consumer.getmany = getmany
        consumer.suspend_flow.clear()
        drain = asyncio.ensure_future(consumer._drain_messages(Fetcher()))
        for _ in range(20):
            await asyncio.sleep(0)
        assert delivered == [0], "the hand-off of offset 1 should be waiting"
        consumer.suspend_flow.set()  # what Faust does when a rebalance begins
        await asyncio.wait_for(drain, 5)
        return {"delivered": delivered, "cancelled": cancelled}

    assert asyncio.run(run()) == {"delivered": [0, 2], "cancelled": [1]}


def test_a_partition_the_group_never_committed_is_counted_from_the_start_of_its_log(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partition new to the group loses fetched records around a rebalance like any other: the agent
    must expect its first offset, not whatever record it happens to see first. (The fault drill "two
    workers, kill one" left 13 bad reviews without a ticket this way: a ledger.intake partition the
    killed worker had never committed.)"""
    from faust.transport.drivers import aiokafka as faust_aiokafka
    from faust.types import TP

    async def run() -> tuple[dict[Any, Any], list[Any], dict[Any, Any]]:
        app = create_app(_with_fetch_wait(settings, tmp_path, 100))
        consumer = app.consumer
        topic = settings.kafka.topic("ledger.intake")
        committed, never, changelog = TP(topic, 0), TP(topic, 1), TP("t-tickets-changelog", 1)
        app.topics._acking_topics.add(topic)  # an agent's source topic

        async def seek_to_committed(self: Any) -> None:  # Faust's part, which asks the broker
            self._committed_offset.update({committed: 7, never: None, changelog: None})

        asked: list[Any] = []

        async def earliest_offsets(*tps: Any) -> dict[Any, int]:
            asked.extend(tps)
            return {never: 40}

        monkeypatch.setattr(faust_aiokafka.Consumer, "perform_seek", seek_to_committed)
        monkeypatch.setattr(consumer, "assignment", lambda: {committed, never, changelog})
        monkeypatch.setattr(consumer, "earliest_offsets", earliest_offsets)
        await consumer.perform_seek()
        app.consumer_generation_id = 2
        holes = consumer.holes([_message(topic, 1, 45, generation=2)])  # 40..44 never arrived
        return dict(consumer._next_offset), asked, holes

    next_offset, asked, holes = asyncio.run(run())
    topic = settings.kafka.topic("ledger.intake")
    assert asked == [(topic, 1)]  # only the source partition with no committed offset
    assert next_offset[(topic, 0)] == 7
    assert holes == {(topic, 1): (40, 45)}


def test_a_seek_runs_on_the_consumer_threads_loop(
    kafka_stack: Any, settings: Settings, tmp_path: Path
) -> None:
    """aiokafka's client belongs to the consumer thread's event loop: the agents' re-fetch (point 3) seeks
    it through that thread (point 6), not from the worker's own thread as Faust's driver did."""
    import threading

    from faust.types import TP

    async def seek_threads() -> tuple[list[str], str, str]:
        app = create_app(_with_fetch_wait(settings, tmp_path, 100))
        thread = app.consumer._thread
        await thread.start()
        try:
            client = thread._ensure_consumer()
            seen: list[str] = []
            client.seek = lambda tp, offset: seen.append(threading.current_thread().name)
            await app.consumer.seek(TP(settings.kafka.topic("reviews.raw"), 0), 5)
            return seen, threading.current_thread().name, thread._thread.name
        finally:
            await thread.stop()

    seen, caller, consumer_thread = asyncio.run(seek_threads())
    assert seen == [consumer_thread]
    assert consumer_thread != caller


def test_positions_report_where_the_client_will_fetch_next(
    kafka_stack: Any, settings: Settings, tmp_path: Path
) -> None:
    """What a stalled worker logs (streams.app stall_check): the client's own fetch positions, read
    without waiting on the consumer thread."""
    from aiokafka import TopicPartition
    from faust.types import TP

    from haochaping.topics import ensure_topics

    ensure_topics(settings.kafka)
    topic = settings.kafka.topic("reviews.raw")

    async def positions_after_seek() -> dict[str, Any]:
        app = create_app(_with_fetch_wait(settings, tmp_path, 100))
        thread = app.consumer._thread
        await thread.start()
        try:
            client = thread._ensure_consumer()

            async def assign() -> None:
                client.assign([TopicPartition(topic, 1)])

            await thread.call_thread(assign)
            await app.consumer.seek(TP(topic, 1), 7)
            return app.consumer.positions()
        finally:
            await thread.stop()

    assert asyncio.run(positions_after_seek()) == {f"{topic}[1]": (7, None, False)}


def test_a_seek_back_to_the_committed_offsets_also_seeks_the_changelogs_back_to_where_the_recovery_stands(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Faust drops a fetched batch when the flow is stopped and seeks back to the committed offsets,
    which a changelog has none of: the recovery then waited for records the client had already passed
    (the survivor of the fault drill, its changelog positions at the high watermark and the recovery at
    -1). perform_seek now seeks each changelog partition the recovery reads back to where it stands."""
    from faust.transport.drivers import aiokafka as faust_aiokafka
    from faust.types import TP

    async def run() -> list[dict[Any, int]]:
        app = create_app(_with_fetch_wait(settings, tmp_path, 100))
        consumer = app.consumer
        unread, half, standby, gone = (
            TP("t-review-dedupe-changelog", 0),
            TP("t-tickets-changelog", 1),
            TP("t-tickets-changelog", 2),
            TP("t-tickets-changelog", 3),
        )
        recovery = app.tables.recovery
        recovery.active_offsets.update({unread: -1, half: 17, gone: 5})
        recovery.standby_offsets.update({standby: 3})

        async def seek_to_committed(self: Any) -> None:  # Faust's part, which asks the broker
            return None

        sought: list[dict[Any, int]] = []

        async def seek_wait(partitions: dict[Any, int]) -> None:
            sought.append(dict(partitions))

        monkeypatch.setattr(faust_aiokafka.Consumer, "perform_seek", seek_to_committed)
        monkeypatch.setattr(consumer, "assignment", lambda: {unread, half, standby})  # `gone` revoked
        monkeypatch.setattr(consumer, "seek_wait", seek_wait)
        await consumer.perform_seek()
        return sought

    sought = asyncio.run(run())
    assert sought == [
        {("t-review-dedupe-changelog", 0): 0, ("t-tickets-changelog", 1): 17, ("t-tickets-changelog", 2): 3}
    ]
