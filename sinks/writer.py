"""The sink writer: Kafka topics into ClickHouse, each record exactly once.

Per partition, in a loop: read, cut a batch (size / time bound, or the pending intent), commit the
batch's start offset again with the intent ``last=<offset>`` in the commit metadata, insert the batch
with the deduplication token ``topic:partition:start-last``, then commit ``last + 1`` (with the next
batch's intent if that one is due already: the same offset, one commit for both). A crash anywhere
leaves either nothing inserted or an intent that makes the next reader cut the same batch with the
same token, which ClickHouse drops if it had landed (see sinks/batches.py and docs/clickhouse.md).
Partitions do not wait for each other: each one's batch is inserted as soon as it is due, one batch in
flight per partition.
Before the insert, records another batch wrote already (the stream's at-least-once copies, same id at
another offset) are left out, and the rest are marked with the batch's token (sinks/repeats.py).

aiokafka rather than kafka-python: measured here on 300k review records, aiokafka's consumer (record
parsing in Cython) read 300k records/s, kafka-python 3.0's 31k/s (9k/s with CRC checks): the writer's
target is 50k reviews/s. Inserts run in a small thread pool, one ClickHouse client per thread, so the
event loop keeps the group membership alive while an insert runs.

Each topic has its time bound: ``sink.batch_seconds`` (1 s) for reviews, whose inserts should be big,
and the bound ``sink.latency_topics`` names (0.15 s for ledger events) for what a person waits for.
One writer holding both kinds starts the latency topics' inserts first; ``haochaping sink`` goes
further and runs one writer per kind (:func:`lanes`), so that a ledger event never waits for a
reviews batch's insert to finish (docs/sinks.md).

ClickHouse down: the pending batches are retried with exponential backoff and jitter; meanwhile every
partition is paused (nothing more is fetched, memory stays bounded by one batch per partition) and
the loop keeps polling so that the consumer stays in its group. When an insert succeeds, fetching
resumes where it stopped and the writer catches up.

Stalled for good: :class:`StallCheck` (run by :func:`run_lanes`) ends the process with exit code 70 for
its supervisor to restart it once a lane has fetched no record, finished no batch and failed no insert
attempt for ``sink.stall_seconds`` while records wait on its partitions (haochaping/liveness.py). A
ClickHouse outage is not that: each failed attempt counts as moving.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from haochaping import taskdump
from haochaping.backlog import Backlog
from haochaping.domain.records import DeadLetter
from haochaping.liveness import STALL_EXIT_CODE, Liveness
from haochaping.settings import Settings
from sinks.batches import Batch, PartitionBuffer, decode_intent, encode_intent
from sinks.clickhouse import ClientPerThread, insert_json_rows, is_data_error
from sinks.metrics import SinkMetrics
from sinks.repeats import marker, new_positions
from sinks.schema import TABLE_OF_TOPIC

log = logging.getLogger(__name__)

TP = tuple[str, int]

LIVENESS_CHECK_SECONDS = 2.0


@dataclass(frozen=True)
class Rejected:
    """A record ClickHouse refused as data."""

    offset: int
    value: bytes
    reason: str


@dataclass
class _Clock:
    """When a batch's first record was read and when the batch was cut (metrics: where its time goes)."""

    first_read: float
    cut: float
    intent: float = 0.0  # seconds its intent commit took
    submitted: float = 0.0  # handed to the insert threads
    reaped: float = 0.0  # its result taken up by the loop


@dataclass
class _Outcome:
    batch: Batch
    error: BaseException | None = None
    rejected: tuple[Rejected, ...] = ()
    # time.monotonic() marks in the insert thread: started, repeat check done, insert done
    started: float = 0.0
    checked: float = 0.0
    inserted: float = 0.0
    clock: _Clock | None = None  # the batch's times before the insert (set when the loop takes it up)


class SinkWriter:
    """Consumes ``reviews.accepted``, ``ledger.events`` and ``alerts`` into their tables."""

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: SinkMetrics | None = None,
        topics: Sequence[str] = tuple(TABLE_OF_TOPIC),
        lane: str = "",
        insert_threads: int | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or SinkMetrics()
        self.group_id = settings.sink.group_id
        self.lane = lane
        db = settings.clickhouse.database
        self.table_of: dict[str, str] = {
            settings.kafka.topic(name): f"{db}.{TABLE_OF_TOPIC[name]}" for name in topics
        }
        self.max_age: dict[str, float] = {
            settings.kafka.topic(name): max_age(settings, name) for name in topics
        }
        self.deadletter_topic = settings.kafka.topic("deadletter")
        self.rows_written: dict[str, int] = dict.fromkeys(self.table_of.values(), 0)
        self._buffers: dict[TP, PartitionBuffer] = {}
        self._pending: dict[TP, Batch] = {}
        self._clocks: dict[TP, _Clock] = {}
        # Each partition's batch is inserted on its own (an insert thread each, up to the pool's size), so a
        # partition whose batch is due starts it at once instead of waiting for a round of the other
        # partitions' inserts to end; the loop keeps reading meanwhile, so a record that arrives during an
        # insert starts its time bound on arrival. A partition has one batch in flight at a time.
        self._writing: dict[TP, asyncio.Future[_Outcome]] = {}
        self._writing_since: dict[TP, float] = {}  # when each insert in flight was handed to the threads
        self._retrying: set[TP] = set()  # pending batches whose insert failed: retried after the backoff
        self._tasks: set[asyncio.Task[None]] = set()
        self._attempt = 0
        self._retry_at = 0.0
        self._stop = asyncio.Event()
        self._failed: BaseException | None = None
        # What the stall check sees move: records fetched, inserts ended (a batch written, its refused
        # records dead-lettered, or an attempt failed: retrying through a ClickHouse outage is this
        # writer doing its job, not a stall).
        self.moved = 0
        threads = max(1, settings.sink.insert_threads if insert_threads is None else insert_threads)
        if settings.clickhouse.url.startswith("chdb://"):
            threads = 1
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sink-insert")
        self._clients = ClientPerThread(settings.clickhouse)
        self._consumer: Any = None
        self._admin: Any = None
        self._producer: Any = None

    # -- lifecycle ----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask :meth:`run` to return (from the writer's own event loop)."""
        self._stop.set()

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
        from aiokafka.admin import AIOKafkaAdminClient

        k = self.settings.kafka
        s = self.settings.sink
        writer = self

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                writer._on_revoked(revoked)

            async def on_partitions_assigned(self, assigned: Any) -> None:
                await writer._on_assigned(assigned)

        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=k.bootstrap_servers, client_id=f"{k.client_id}-sink-admin"
        )
        await self._admin.start()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=k.bootstrap_servers,
            client_id=f"{k.client_id}-sink" + (f"-{self.lane}" if self.lane else ""),
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # A ledger written in transactions must not be half-read.
            isolation_level="read_committed",
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            fetch_max_wait_ms=max(10, min(500, int(min(self.max_age.values()) * 500))),
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
        )
        consumer.subscribe(list(self.table_of), listener=Listener())
        self._consumer = consumer
        await consumer.start()
        try:
            await self._loop()
            if self._failed is not None:
                raise self._failed
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
            with contextlib.suppress(Exception):
                await self._admin.close()
            if self._producer is not None:
                with contextlib.suppress(Exception):
                    await self._producer.stop()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._clients.close()

    # -- rebalancing --------------------------------------------------------------------------------

    def _on_revoked(self, revoked: Any) -> None:
        # What was read but not written is dropped: the next owner reads it again from the committed
        # offset, and an intent committed for a pending batch makes it cut that batch the same way.
        for tp in revoked:
            key = (tp.topic, tp.partition)
            self._buffers.pop(key, None)
            self._pending.pop(key, None)
            self._retrying.discard(key)
            self._clocks.pop(key, None)

    async def _on_assigned(self, assigned: Any) -> None:
        tps = list(assigned)
        if not tps:
            return
        # aiokafka may fetch the new partitions while this listener awaits the lookup below; a partition
        # without a buffer is paused (see _flow_control) and what was fetched of it is dropped, then read
        # again from the seek below. (Without the pause and the seek to the beginning, the first records
        # of a new group's partitions were dropped for good when the lookup was slow.)
        self._consumer.pause(*tps)
        committed = await self._committed(tps)
        if committed is None:
            return
        for tp in tps:
            key = (tp.topic, tp.partition)
            buf = PartitionBuffer(tp.topic, tp.partition)
            om = committed.get(tp)
            if om is None or om.offset < 0:
                await self._consumer.seek_to_beginning(tp)  # the group's auto_offset_reset, "earliest"
            else:
                buf.reset(om.offset, decode_intent(om.metadata))
                self._consumer.seek(tp, om.offset)
                if buf.bound is not None:
                    log.info(
                        "%s[%d]: redoing the batch %d..%d left pending",
                        tp.topic,
                        tp.partition,
                        om.offset,
                        buf.bound,
                    )
            self._buffers[key] = buf
            self._pending.pop(key, None)
            self._retrying.discard(key)

    async def _committed(self, tps: list[Any]) -> dict[Any, Any] | None:
        """The group's committed offsets and intents of ``tps``, or None after :attr:`_failed` is set.

        aiokafka swallows an exception raised in the rebalance listener: the partitions would stay assigned
        with no buffer, and their records would be read and dropped. A lookup that fails (the coordinator
        of a new group still loading, a second member joining) is tried again; if it keeps failing the
        writer stops with the reason, so that a restart reads the partitions from their committed offsets.
        """
        from aiokafka.errors import KafkaError

        deadline = time.monotonic() + self.settings.sink.session_timeout_ms / 1000
        delay = 0.1
        while True:
            try:
                return dict(await self._admin.list_consumer_group_offsets(self.group_id, partitions=tps))
            except KafkaError as exc:
                if time.monotonic() + delay > deadline:
                    self._failed = RuntimeError(
                        f"could not read the committed offsets of {len(tps)} partition(s) assigned to "
                        f"group {self.group_id} ({exc!r}); stopping so that a restart reads them again"
                    )
                    self._stop.set()
                    return None
                log.warning("reading the committed offsets failed (%r); trying again in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)

    # -- the loop -----------------------------------------------------------------------------------

    async def _loop(self) -> None:
        s = self.settings.sink
        consumer = self._consumer
        try:
            while not self._stop.is_set():
                self._raise_from_tasks()
                now = time.monotonic()
                if self._retrying:  # failed batches, waiting for their next attempt
                    # No new batch until the ones in flight are back; then every failed batch is retried
                    # together, with backoff, every partition paused (bounded memory), as before.
                    self._pause_all()
                    if self._writing:
                        await asyncio.wait(list(self._writing.values()), timeout=0.2)
                        await self._commit(self._reap(), {})
                        continue
                    if now < self._retry_at:
                        # Polling with every partition paused fetches nothing but keeps us in the group.
                        await consumer.getmany(timeout_ms=int(min(200.0, (self._retry_at - now) * 1000)) + 1)
                        continue
                    self._retrying.clear()
                    await self._write_pending()
                    await self._commit(self._reap(), {})
                    if not self._retrying:
                        self._attempt = 0
                        self.metrics.clickhouse_up.set(1)
                    continue
                self._flow_control()
                timeout_ms = self._poll_timeout_ms(now)
                if self._writing or self._tasks:
                    # Wake when an insert ends (its partition's next batch can start at once) or to read.
                    await asyncio.wait(
                        [*self._writing.values(), *self._tasks],
                        timeout=min(20, timeout_ms) / 1000,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    timeout_ms = 0  # what the fetcher holds already
                data = await consumer.getmany(timeout_ms=timeout_ms, max_records=s.batch_rows)
                now = time.monotonic()
                self._take(data, now, time.time())
                self._update_lag()
                written = self._reap()
                ready: dict[TP, Batch] = {}
                if not self._retrying:
                    for key, buf in self._buffers.items():
                        if key in self._pending or key in self._writing:
                            continue  # one batch in flight per partition
                        if buf.ready(now, s.batch_rows, self.max_age[buf.topic]):
                            first_read = buf.first_added_at if buf.first_added_at is not None else now
                            batch = buf.cut(now, s.batch_rows)
                            if batch is not None:
                                ready[key] = batch
                                self._clocks[key] = _Clock(first_read, now)
                await self._commit(written, ready)
        finally:
            if self._writing or self._tasks:
                # Stopping: let the inserts finish and commit them, so the next owner need not redo them.
                await asyncio.wait([*self._writing.values(), *self._tasks])
                try:
                    await self._commit(self._reap(), {})
                except Exception as exc:  # stopping anyway; the intents make the next owner redo them
                    log.warning("stopping: could not commit the last batches written (%r)", exc)

    def _take(self, data: Mapping[Any, Sequence[Any]], now: float, wall: float) -> None:
        """Put what a fetch brought (aiokafka's records by partition) into the partitions' buffers."""
        for tp, messages in data.items():
            buf = self._buffers.get((tp.topic, tp.partition))
            if buf is None:
                continue  # still being set up (_on_assigned): read again after its seek
            self.moved += len(messages)
            if messages and messages[0].timestamp_type == 0:  # CreateTime, set by the producer
                self.metrics.step(
                    self.table_of[tp.topic], "fetch", max(0.0, wall - messages[0].timestamp / 1000)
                )
            for m in messages:
                if m.value:  # a tombstone carries nothing to write
                    buf.add(m.offset, m.value, now)

    def _raise_from_tasks(self) -> None:
        """An insert task that raised (not an insert that failed: _write_batch returns those) ends the writer."""
        for task in [t for t in self._tasks if t.done()]:
            self._tasks.discard(task)
            task.result()

    def _reap(self) -> dict[TP, _Outcome]:
        """Take the finished inserts out of ``_writing``: the batches written (to commit), in their buffers
        as written; a failed one stays pending for its retry, and sets the backoff."""
        written: dict[TP, _Outcome] = {}
        errors: list[BaseException] = []
        reaped = time.monotonic()
        for key, future in list(self._writing.items()):
            if not future.done():
                continue
            del self._writing[key]
            self._writing_since.pop(key, None)
            self.moved += 1
            outcome = future.result()  # _write_batch returns its errors; anything raised ends the writer
            if self._pending.get(key) is not outcome.batch:
                continue  # revoked while it was written: the new owner finishes it
            if outcome.error is not None:
                self._retrying.add(key)
                errors.append(outcome.error)
                continue
            del self._pending[key]
            buf = self._buffers.get(key)
            if buf is not None:
                buf.written(outcome.batch)
            outcome.clock = self._clocks.pop(key, None)
            if outcome.clock is not None:
                outcome.clock.reaped = reaped
            written[key] = outcome
        if errors:
            self._back_off(errors[0])
        elif written and not self._attempt:
            self.metrics.clickhouse_up.set(1)
        return written

    async def _commit(self, written: dict[TP, _Outcome], ready: dict[TP, Batch]) -> None:
        """One offset commit for both: the batches ``written`` (their next offset) and the batches
        ``ready`` to be written (their start offset with the intent); then start the inserts of ``ready``.

        A partition in both commits its new batch's start with its intent, which is the offset after the
        batch just written: one commit says both. A failed commit leaves the written batches' intents in
        Kafka (a redo of them is dropped by ClickHouse) and the ready ones unstarted, read again.
        """
        from aiokafka import TopicPartition
        from aiokafka.errors import KafkaError

        for outcome in written.values():
            if outcome.rejected:  # before the offset moves past them
                await self._dead_letter(outcome.batch, outcome.rejected)
        offsets: dict[TopicPartition, int | tuple[int, str]] = {
            TopicPartition(*key): o.batch.next_offset for key, o in written.items() if key not in ready
        }
        offsets.update({TopicPartition(*key): (b.start, encode_intent(b.last)) for key, b in ready.items()})
        if not offsets:
            return
        committing = time.monotonic()
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:
            if written:
                # The rows are in ClickHouse; whoever owns the partition now redoes the batch under its
                # intent and ClickHouse drops the repeat.
                log.warning(
                    "inserted, but could not commit the offsets (%r); the repeat will be dropped", exc
                )
            if ready:
                # Lost the partitions (rebalance) or the coordinator: nothing of these was inserted; the
                # next owner, or we after the rejoin, read them again.
                log.warning(
                    "could not record the batches about to be written (%r); they will be read again", exc
                )
                for key in ready:
                    self._clocks.pop(key, None)
                    buf = self._buffers.get(key)
                    if buf is not None:
                        buf.reset(buf.start, buf.bound)
                        self._consumer.seek(TopicPartition(*key), buf.start)
            return
        committed = time.monotonic()
        for outcome in written.values():
            self._observe_steps(outcome, committed - committing, committed)
        started = False
        for key, batch in ready.items():
            clock = self._clocks.get(key)
            if clock is None or key not in self._buffers:
                # Revoked while the commit was on its way (the rebalance listener ran meanwhile): the
                # partition's owner now, or this writer after the rejoin, cuts the batch again under the
                # intent just committed, and ClickHouse drops a repeat.
                continue
            clock.intent = committed - committing
            self._pending[key] = batch
            started = True
        if started:
            self._tasks.add(asyncio.create_task(self._write_pending(), name=f"sink-insert-{self.lane}"))

    def _poll_timeout_ms(self, now: float) -> int:
        """Until the next batch of a partition that can start one is due (at most the shortest bound)."""
        wait = min(self.max_age.values())
        for key, buf in self._buffers.items():
            if buf.first_added_at is not None and key not in self._pending and key not in self._writing:
                wait = min(wait, buf.first_added_at + self.max_age[buf.topic] - now)
        return max(1, int(wait * 1000))

    def _assigned_tps(self) -> list[Any]:
        return list(self._consumer.assignment())

    def _pause_all(self) -> None:
        tps = self._assigned_tps()
        self._consumer.pause(*tps)
        self.metrics.set_paused(self.lane, len(tps))

    def _flow_control(self) -> None:
        """Stop fetching partitions whose buffer is full or not yet set up; fetch the others."""
        cap = self.settings.sink.batch_rows
        full: list[Any] = []
        free: list[Any] = []
        for tp in self._assigned_tps():
            buf = self._buffers.get((tp.topic, tp.partition))
            # No buffer yet: its assignment is still looking up the committed offset (_on_assigned).
            (full if buf is None or len(buf) >= cap else free).append(tp)
        if full:
            self._consumer.pause(*full)
        if free:
            self._consumer.resume(*free)
        self.metrics.set_paused(self.lane, len(full))

    def _update_lag(self) -> None:
        for (topic, partition), buf in self._buffers.items():
            if buf.start is None:
                continue
            from aiokafka import TopicPartition

            high = self._consumer.highwater(TopicPartition(topic, partition))
            if high is not None:
                self.metrics.lag.labels(topic, str(partition)).set(max(0, high - buf.start))

    # -- what the stall check reads --------------------------------------------------------------------

    async def unwritten(self) -> dict[Any, int | None]:
        """Per assigned partition (aiokafka's ``TopicPartition``), the offset from which its records still
        wait to be written: the committed offset this writer knows (its buffer's start). Where it holds,
        cuts and inserts nothing, the consumer's position instead, which is also past the transaction
        markers after the last record written (a transactional producer's; they are never fetched, so the
        commit after a batch stops short of them). None where neither is known yet: from the log's start.
        """
        if self._consumer is None:
            return {}
        out: dict[Any, int | None] = {}
        for tp in self._assigned_tps():
            key = (tp.topic, tp.partition)
            buf = self._buffers.get(key)
            if buf is None:  # its committed offset is still being looked up (_on_assigned)
                out[tp] = None
                continue
            out[tp] = buf.start
            if len(buf) or key in self._clocks or key in self._pending or key in self._writing:
                continue
            with contextlib.suppress(Exception):  # no valid position yet (a seek): the buffer's start
                position = await asyncio.wait_for(self._consumer.position(tp), 0.5)
                out[tp] = position if buf.start is None else max(position, buf.start)
        return out

    def longest_insert(self) -> tuple[TP, float] | None:
        """The partition whose insert in flight has run longest, and for how many seconds."""
        if not self._writing_since:
            return None
        key, since = min(self._writing_since.items(), key=lambda kv: kv[1])
        return key, time.monotonic() - since

    def state(self) -> str:
        """What the writer holds and does, for the log of a stall."""

        def names(keys: Any) -> str:
            return ", ".join(f"{t}[{p}]" for t, p in sorted(keys)) or "none"

        now = time.monotonic()
        oldest = max((now - since for since in self._writing_since.values()), default=None)
        return (
            f"batches pending: {names(self._pending)}; being inserted: {names(self._writing)}"
            + (f" (the oldest for {oldest:.0f} s)" if oldest is not None else "")
            + f"; waiting to retry: {names(self._retrying)} (failed attempts in a row: {self._attempt}); "
            f"records read and not yet cut: {sum(len(b) for b in self._buffers.values())}"
        )

    async def _write_pending(self) -> None:
        """Start the insert of each pending batch not being inserted yet (an insert thread each, as far as
        the pool allows; the topics with the shortest bound first), and wait for them. The loop takes each
        one up as soon as it ends (:meth:`_reap`), whatever the others do. Batches that failed wait for
        their retry, which the loop starts by emptying ``_retrying``."""
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        started: list[asyncio.Future[_Outcome]] = []
        for key, batch in sorted(self._pending.items(), key=lambda kb: self.max_age[kb[1].topic]):
            if key in self._writing or key in self._retrying:
                continue
            clock = self._clocks.get(key)
            if clock is not None:
                clock.submitted = now
            self._writing_since[key] = now
            self._writing[key] = loop.run_in_executor(self._pool, self._write_batch, batch)
            started.append(self._writing[key])
        if started:
            await asyncio.wait(started)

    def _back_off(self, first_error: BaseException) -> None:
        """An insert failed: wait before the next attempt (exponential, with jitter), every partition paused."""
        self._attempt += 1
        delay = min(self.settings.sink.max_backoff_seconds, 0.2 * 2 ** min(self._attempt, 16))
        delay *= random.uniform(0.5, 1.0)  # jitter: several writers don't hammer a recovering server together
        self._retry_at = time.monotonic() + delay
        self.metrics.clickhouse_up.set(0)
        log.warning(
            "ClickHouse insert failed (attempt %d, %d batch(es) pending, next try in %.1fs): %s",
            self._attempt,
            len(self._pending),
            delay,
            first_error,
        )
        self._pause_all()

    def _observe_steps(self, o: _Outcome, commit_seconds: float, committed: float) -> None:
        """Where a written batch's time went (metrics.STEPS). A batch retried after a failure is told by its
        last try, and its ``batch`` time holds the tries before."""
        clock = o.clock
        if clock is None or o.started == 0.0:
            return
        table = self.table_of[o.batch.topic]
        age = clock.cut - clock.first_read
        max_age = self.max_age[o.batch.topic]
        for step, seconds in (
            ("bound", min(age, max_age)),
            ("wait", max(0.0, age - max_age)),
            ("intent", clock.intent),
            ("queue", max(0.0, o.started - clock.submitted)),
            ("check", o.checked - o.started),
            ("insert", o.inserted - o.checked),
            ("handoff", max(0.0, clock.reaped - o.inserted)),
            ("commit", commit_seconds),
            ("batch", committed - clock.first_read),
        ):
            self.metrics.step(table, step, seconds)

    # -- inserting (in the pool's threads) ----------------------------------------------------------

    def _write_batch(self, batch: Batch) -> _Outcome:
        table = self.table_of[batch.topic]
        started = time.perf_counter()
        began = time.monotonic()
        checked = 0.0
        try:
            client = self._clients.get()
            fresh, repeats = self._without_repeats(client, table, batch)
            checked = time.monotonic()
            rejected = (
                self._insert_or_split(client, table, fresh, 0, len(fresh), fresh.token) if len(fresh) else []
            )
            if rejected:  # the dead-letter topic gets the bytes as they came, not as marked
                original = dict(zip(batch.offsets, batch.values, strict=True))
                rejected = [Rejected(r.offset, original[r.offset], r.reason) for r in rejected]
        except Exception as exc:
            from clickhouse_connect.driver.exceptions import OperationalError

            reason = "connection" if isinstance(exc, OperationalError) else type(exc).__name__
            self.metrics.retries.labels(table, reason).inc()
            self._clients.drop()
            return _Outcome(batch, error=exc)
        rows = len(fresh) - len(rejected)
        if repeats:
            self.metrics.repeats.labels(table).inc(repeats)
        self.metrics.batch_seconds.labels(table).observe(time.perf_counter() - started)
        self.metrics.batch_rows.labels(table).observe(rows)
        self.metrics.rows.labels(table).inc(rows)
        with _counter_lock:
            self.rows_written[table] = self.rows_written.get(table, 0) + rows
        return _Outcome(
            batch, rejected=tuple(rejected), started=began, checked=checked, inserted=time.monotonic()
        )

    def _without_repeats(self, client: Any, table: str, batch: Batch) -> tuple[Batch, int]:
        """The batch less the records another batch wrote already and the later copies within it.

        Each record is marked with the batch's token (column ``sink_batch``), and the batch keeps its
        offsets range, so its deduplication token stays what it was: a redo after a crash between
        insert and commit keeps the records its first attempt wrote (they carry its token), sends the
        same block again, and ClickHouse drops it; a redo racing the first attempt's insert still on
        the wire carries the same token too.
        """
        keep, repeats = new_positions(client, table, batch.values, batch.token)
        if repeats:
            log.info(
                "%s[%d] %d..%d: %d record(s) already written, left out",
                batch.topic,
                batch.partition,
                batch.start,
                batch.last,
                repeats,
            )
        return (
            Batch(
                batch.topic,
                batch.partition,
                batch.start,
                batch.last,
                tuple(batch.offsets[i] for i in keep),
                tuple(map(marker(batch.token), (batch.values[i] for i in keep))),
            ),
            repeats,
        )

    def _insert_or_split(
        self, client: Any, table: str, batch: Batch, lo: int, hi: int, token: str
    ) -> list[Rejected]:
        """Insert ``batch[lo:hi]``; if ClickHouse refuses the data, halve until the bad records are found.

        The halves' tokens name their offsets, so a retry after a crash splits the same way and
        ClickHouse drops the halves that had landed.
        """
        try:
            insert_json_rows(client, table, batch.values[lo:hi], token)
            return []
        except Exception as exc:
            if not is_data_error(exc):
                raise
            if hi - lo == 1:
                return [Rejected(batch.offsets[lo], batch.values[lo], _first_line(str(exc)))]
        mid = (lo + hi) // 2
        out: list[Rejected] = []
        for a, b in ((lo, mid), (mid, hi)):
            sub = f"{batch.topic}:{batch.partition}:part:{batch.offsets[a]}-{batch.offsets[b - 1]}"
            out.extend(self._insert_or_split(client, table, batch, a, b, sub))
        return out

    async def _dead_letter(self, batch: Batch, rejected: Sequence[Rejected]) -> None:
        from aiokafka import AIOKafkaProducer

        if self._producer is None:
            self._producer = AIOKafkaProducer(
                bootstrap_servers=self.settings.kafka.bootstrap_servers,
                client_id=f"{self.settings.kafka.client_id}-sink-deadletter",
                acks="all",
            )
            await self._producer.start()
        table = self.table_of[batch.topic]
        for r in rejected:
            letter = DeadLetter(
                at=datetime.now(UTC),
                stage="sinks.clickhouse",
                source_topic=batch.topic,
                partition=batch.partition,
                offset=r.offset,
                reason=f"ClickHouse refused the record for table {table}: {r.reason}",
                original_b64=base64.b64encode(r.value).decode(),
            )
            await self._producer.send_and_wait(
                self.deadletter_topic, letter.model_dump_json().encode(), key=batch.topic.encode()
            )
            self.metrics.dead_letters.labels(batch.topic).inc()
            log.error(
                "%s[%d]@%d sent to %s: %s",
                batch.topic,
                batch.partition,
                r.offset,
                self.deadletter_topic,
                r.reason,
            )


_counter_lock = threading.Lock()


def max_age(settings: Settings, name: str) -> float:
    """How long a record of topic ``name`` (the short name) may wait in the writer before its insert."""
    return settings.sink.latency_topics.get(name, settings.sink.batch_seconds)


def exit_for_restart(code: int) -> None:
    """End the process now: not the writer's graceful stop, which waits for the very insert or commit that is
    stuck. The log is flushed first, for the dump to be read."""
    logging.shutdown()
    sys.stderr.flush()  # the task dump
    os._exit(code)


def check_stall_bound(settings: Settings) -> None:
    """Refuse a stall bound that a lane waiting out its backoff between two insert attempts would reach."""
    s = settings.sink
    if 0 < s.stall_seconds <= s.max_backoff_seconds:
        raise ValueError(
            f"sink.stall_seconds is {s.stall_seconds:g} s, not above sink.max_backoff_seconds "
            f"({s.max_backoff_seconds:g} s): a lane waiting out its backoff during a ClickHouse outage would "
            f"be taken for stalled and restarted. Set it well above (the default is 180 s), or 0 to turn "
            f"the check off"
        )


class StallCheck:
    """Every few seconds, whether ``writer`` has stalled for good (haochaping/liveness.py): records wait on
    its partitions and for ``sink.stall_seconds`` it has fetched none, finished no batch and failed no
    insert attempt; or one partition's insert has not returned for that long while the others move on. Then it logs why and the writer's state, writes what every thread and task waits on
    (haochaping/taskdump.py) and calls ``on_stall(70)``: by default the process ends, for its supervisor
    to start it again.

    The restart is safe: a batch whose insert was in flight has its intent committed, so the next owner
    cuts the same batch with the same deduplication token, and ClickHouse drops a repeat.
    """

    def __init__(
        self,
        writer: SinkWriter,
        backlog: Backlog,
        *,
        on_stall: Callable[[int], object] = exit_for_restart,
        every: float = LIVENESS_CHECK_SECONDS,
    ) -> None:
        self.writer = writer
        self.on_stall = on_stall
        self.every = every
        self.liveness = Liveness(writer.settings.sink.stall_seconds)
        self._backlog = backlog

    @property
    def lane(self) -> str:
        w = self.writer
        return f"{w.lane or 'sink'} ({', '.join(w.table_of)})"

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                reason = await self.check()
            except Exception:  # a check that failed is no verdict; the next may be
                log.exception("the stall check of lane %s failed", self.lane)
                continue
            if reason is not None:
                self.stalled(reason)
                return  # only a stand-in for the exit returns (a test's): one verdict is enough

    async def check(self) -> str | None:
        """The reason to restart, once stalled for good, else None."""
        moved = self.writer.moved
        if self.liveness.moving(moved):
            self.liveness.check(moved, {})  # records the movement; nothing to ask the broker
            return self._stuck_insert()
        unwritten = await self.writer.unwritten()
        waiting = await self._backlog.waiting(list(unwritten), unwritten)
        if waiting is None:  # the broker did not answer: an outage, not this lane's stall
            self.liveness.check(moved, {})
            return None
        return self.liveness.check(self.writer.moved, waiting)

    def _stuck_insert(self) -> str | None:
        """A lane that moves may still hold one partition whose insert never returns while its other
        partitions go on: that partition writes nothing more until it does. (A ClickHouse that does not
        answer ends an insert after the client's send/receive timeout: an outage, retried, not this.)"""
        bound = self.writer.settings.sink.stall_seconds
        stuck = self.writer.longest_insert()
        if stuck is None or bound <= 0 or stuck[1] < bound:
            return None
        (topic, partition), seconds = stuck
        return (
            f"the insert of {topic}[{partition}] has not returned for {seconds:.0f} s while the lane's other "
            f"partitions moved on; that partition writes nothing more until it does"
        )

    def stalled(self, reason: str) -> None:
        log.error(
            "sink lane %s stalled: %s. %s. Writing what each task waits on to this log, then exiting with %d "
            "for the supervisor to start it again (a batch in flight has its intent committed: the restart "
            "cuts the same batch, and ClickHouse drops a repeat)",
            self.lane,
            reason,
            self.writer.state(),
            STALL_EXIT_CODE,
        )
        try:
            taskdump.dump(sys.stderr)
        except Exception as exc:  # the exit below is what matters
            log.error("could not write the task dump (%r)", exc)
        self.on_stall(STALL_EXIT_CODE)


def lanes(settings: Settings, metrics: SinkMetrics | None = None) -> list[SinkWriter]:
    """The writers ``haochaping sink`` runs: one for the latency topics, one for the rest.

    Both are members of the sink's consumer group (Kafka's round-robin assignor gives each partition to a
    member subscribed to its topic), so the committed offsets and pending intents are the ones a single
    writer would use, and each partition still has one writer. The embedded engine (chdb://) is opened by
    one client only: there a single writer takes every topic.
    """
    unknown = set(settings.sink.latency_topics) - set(TABLE_OF_TOPIC)
    if unknown:
        raise ValueError(
            f"sink.latency_topics names {sorted(unknown)}, which the sink does not write; "
            f"it writes {sorted(TABLE_OF_TOPIC)}"
        )
    wrong = {t: b for t, b in settings.sink.latency_topics.items() if not b > 0}
    if wrong:
        raise ValueError(f"sink.latency_topics gives {wrong}: a time bound must be a number of seconds > 0")
    check_stall_bound(settings)
    metrics = metrics or SinkMetrics()
    if settings.clickhouse.url.startswith("chdb://"):
        return [SinkWriter(settings, metrics=metrics)]
    urgent = tuple(t for t in TABLE_OF_TOPIC if t in settings.sink.latency_topics)
    bulk = tuple(t for t in TABLE_OF_TOPIC if t not in settings.sink.latency_topics)
    return [
        SinkWriter(settings, metrics=metrics, topics=topics, lane=lane, insert_threads=threads)
        for lane, topics, threads in (
            ("latency", urgent, settings.sink.latency_insert_threads),
            ("bulk", bulk, settings.sink.insert_threads),
        )
        if topics
    ]


async def run_lanes(
    writers: Sequence[SinkWriter], *, on_stall: Callable[[int], object] | None = exit_for_restart
) -> None:
    """Run the writers together until one of them ends (stopped or failed); then stop the rest.

    With ``on_stall`` and ``sink.stall_seconds`` > 0, a :class:`StallCheck` watches each writer and calls
    ``on_stall(70)`` when one stalled for good; the default ends the process for its supervisor to restart.
    """
    watch = on_stall is not None and bool(writers) and writers[0].settings.sink.stall_seconds > 0
    if watch:
        check_stall_bound(writers[0].settings)
    tasks = [asyncio.create_task(w.run(), name=f"sink-{w.lane or 'writer'}") for w in writers]
    checks: list[asyncio.Task[None]] = []
    backlog: Backlog | None = None
    if watch and on_stall is not None:
        backlog = Backlog(writers[0].settings.kafka, owner="sink")
        checks = [
            asyncio.create_task(
                StallCheck(w, backlog, on_stall=on_stall).run(), name=f"sink-stall-check-{w.lane}"
            )
            for w in writers
        ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for check in checks:
            check.cancel()
        for w in writers:
            w.stop()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*checks, return_exceptions=True)
        if backlog is not None:
            backlog.close()
    for result in results:
        if isinstance(result, BaseException):
            raise result


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:1000] if text.strip() else text


class WriterThread:
    """Runs a :class:`SinkWriter`, or several as :func:`run_lanes` does, on its own event loop in a thread
    (tests, benchmarks, tools). No stall check unless ``on_stall`` is given (what :func:`run_lanes` calls
    instead of ending the process)."""

    def __init__(
        self, writer: SinkWriter | Sequence[SinkWriter], *, on_stall: Callable[[int], object] | None = None
    ) -> None:
        self.writers: list[SinkWriter] = [writer] if isinstance(writer, SinkWriter) else list(writer)
        self.writer = self.writers[0]
        self.on_stall = on_stall
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="sink-writer", daemon=True)

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._ready.set()
        try:
            if len(self.writers) == 1 and self.on_stall is None:
                main = self.writer.run()
            else:
                main = run_lanes(self.writers, on_stall=self.on_stall)
            loop.run_until_complete(main)
        except BaseException as exc:
            self._error = exc
            log.exception("sink writer failed")
        finally:
            # What a BaseException (a test's SystemExit) left suspended ends here, on its own loop, as in
            # asyncio.run: not later in the garbage collector, with no loop to finish its cleanup on.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    def start(self) -> WriterThread:
        self._thread.start()
        self._ready.wait(10)
        return self

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                for writer in self.writers:
                    self._loop.call_soon_threadsafe(writer.stop)
        self._thread.join(timeout)
        if self._error is not None:
            raise self._error

    def __enter__(self) -> WriterThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
