"""The worker's Kafka transport: Faust's aiokafka driver, made safe across rebalances and with its fetch
wait made a setting.

Registered in Faust's transport registry under the URL scheme :data:`SCHEME`, so the app selects it
with ``broker="haochaping+kafka://host:port"`` exactly as it would select ``kafka://`` (Faust's
supported extension point: ``faust.transport.drivers.TRANSPORTS``, which maps a broker URL's scheme to
a transport class). Everything not named below is Faust's own driver, unchanged.

1. **No record is skipped as "already read".** Faust's consumer loop (``Consumer._drain_messages``)
   remembers, per partition, the last offset it handed to the streams (``_read_offset``) and drops
   any fetched record below it; a jump above it is taken for a hole in the log and its offsets are
   acknowledged as if processed (``_add_gap``). Around a rebalance that bookkeeping races the
   recovery: Faust resumes the stream partitions *before* it seeks them to their committed offsets,
   records fetched before the seek go on setting ``_read_offset`` after it, and records that had been
   cleared from the agents' queues are then dropped when they are fetched again, or acknowledged as a
   "gap". The fault drill "two workers, kill one" lost ratings that way (Faust's DEVLOG showed
   ``DROPPED MESSAGE ROFF`` for 166 re-fetched records and a commit over one that no agent had
   processed). Here the loop never sees a read position: every fetched record reaches the streams. A
   record fetched twice is processed twice, which every stage already absorbs (the dedupe table,
   idempotent ticket opening, the applied-command ids, the sink's event ids). Holes in the log do
   not occur in the source topics (plain, non-transactional producers, ``cleanup.policy=delete``).
2. **Only records processed in the current generation count for a commit.** An agent acknowledges a
   batch after its outputs are on the broker, but Faust also acknowledges a record its stream
   *skipped* because the flow was stopped for a rebalance or the record was fetched in an older
   consumer generation: to Faust's commit those look processed. :meth:`Consumer.ack` records an
   acknowledgement only while the flow runs and for a record of the current generation; any other
   record will be fetched again from the committed offset after the rebalance and acknowledged then.
3. **A record fetched but never handed to a stream is fetched again.** Faust's consumer can still
   lose fetched records on the way to the agents around a rebalance (its fetch loop drops the rest of
   a fetched batch when the flow stops or the generation changes, and the client's position has
   already moved past them). :meth:`Consumer.holes` follows, per partition, the next offset the agents
   should see (from the committed offset Faust seeks to after each rebalance, or the start of the
   log for a partition the group never committed); when a batch skips
   some, the agent seeks the partition back to the first one missing (``streams.app``), so they are
   processed, late but once counted. A commit never passes an offset that was not acknowledged
   (:meth:`Consumer._new_offset`; Faust's own check lets one missing offset through). Should the same
   offsets still be missing after :data:`REFETCH_TRIES` seeks and :data:`GAP_AFTER_SECONDS`, they are
   not in the log (a topic written by a transactional producer, or compacted): they are taken for a
   gap, as Faust would have at once, and the agent carries on. (Not sooner: records queued before a
   seek keep arriving for a while, and each looks like the same hole.)
4. **A record's hand-off costs no task unless it has to wait.** Faust's loop hands each record to
   the agents as ``wait_first(callback(message), suspend_flow.wait())``: four tasks and an
   ``asyncio.wait`` per record, so that a hand-off blocked on a full stream buffer, the producer's
   buffer or the flow control of a rebalance can be abandoned when the flow is suspended. Nearly
   every hand-off blocks on nothing. :meth:`Consumer._drain_messages` is Faust's loop with the
   callback started eagerly (:func:`start_eagerly`): a hand-off that finishes without waiting costs
   one coroutine step, and one that must wait goes on inside that same ``wait_first``, so a
   rebalance interrupts it exactly as before.
5. ``fetch_max_wait_ms``. Faust's driver hard-codes 1,500 ms: a partition that has less than
   ``fetch_min_bytes`` waiting answers only after 1.5 s, which is the latency of a quiet stream.
   :class:`ConsumerThread` builds the aiokafka consumer with ``streams.fetch_max_wait_ms`` (read from
   the app's config attribute :data:`FETCH_MAX_WAIT_ATTR`).

6. **A seek runs on the consumer thread.** aiokafka's client lives on the consumer thread's event loop,
   but Faust's driver seeks it from the worker's own thread (``AIOKafkaConsumerThread.seek``): the
   seek resolves futures of the other loop from outside it (no wake-up of that loop, and a position
   changed under a fetch in progress). Faust's own paths seek through the thread (``seek_wait``);
   the agents' re-fetch of point 3 seeks through :meth:`Consumer.seek`, which here goes through
   ``call_thread`` as well.

7. **Changelog records dropped before the recovery read them are fetched again.** Faust's fetch loop
   drops a whole fetched batch when the flow is stopped, and "seeks back to committed offsets" for it
   (``Consumer.perform_seek``); a table's changelog has no committed offset, so its records were gone:
   the client's position was at the end of the changelog, the recovery had read nothing and waited for
   them for good. The fault drill's survivor stalled that way (its log showed the changelog positions at
   the high watermark and the recovery still at -1). :meth:`Consumer.perform_seek` also seeks each
   changelog partition the recovery reads back to where the recovery stands.

(An earlier version awaited each record's callback directly, whether it had to wait or not: no
rebalance could interrupt a hand-off blocked on a full buffer, and it was withdrawn. Point 4 awaits
directly only what has already finished.)

``tests/streams/test_transport.py`` pins each of these; the fault drills (``make drills``) run the
worker on it, "two workers, kill one" among them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Coroutine, Generator, Iterable
from typing import Any, ClassVar

import aiokafka
from faust.transport import drivers
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, ConsumerT, Message

SCHEME = "haochaping+kafka"
FETCH_MAX_WAIT_ATTR = "haochaping_fetch_max_wait_ms"
DEFAULT_FETCH_MAX_WAIT_MS = 1500  # what Faust's own driver uses
REFETCH_TRIES = 3  # seeks back to the same missing offset before it may be taken for a gap in the log
GAP_AFTER_SECONDS = 30.0  # ... and for how long it must have stayed missing


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # The attribute aiokafka's consumer hands to its Fetcher at start(); the consumer is not
        # started yet here, so this is the value every fetch request will carry.
        consumer._fetch_max_wait_ms = fetch_max_wait_ms(self.app)
        return consumer

    async def seek_in_thread(self, tp: TP, offset: int) -> None:
        """The client's seek, run on this thread's event loop (point 6): ``call_thread`` it."""
        self._ensure_consumer().seek(tp, offset)


class NoReadPositions(dict[TP, int | None]):
    """Stands in for Faust's per-partition read positions: remembers none, so reports none.

    Faust's consumer loop reads a partition's position to drop records below it and to acknowledge
    "gaps" above it (point 1 of the module docstring); with no position it hands every record on.
    Writes (after each record, at a seek) are dropped so the mapping stays empty.
    """

    def __getitem__(self, tp: TP) -> int | None:
        return None

    def __setitem__(self, tp: TP, offset: int | None) -> None:
        pass

    def update(self, *args: Any, **kwargs: Any) -> None:
        pass


class Started(Awaitable[Any]):
    """A coroutine that already took its first step and is waiting on what that step yielded.

    Awaiting it (or wrapping it in a task) goes on where it stopped, exactly as ``yield from`` the
    coroutine would have: the pending future goes up to the task first, then every value sent and
    every exception thrown in (a cancellation) is passed down to the coroutine.
    """

    __slots__ = ("_coro", "_pending")

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self._coro = coro
        self._pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self._coro, self._pending
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # handed to the coroutine, as yield from does
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
                continue
            try:
                pending = coro.send(sent)
            except StopIteration as stop:
                return stop.value


def start_eagerly(coro: Coroutine[Any, Any, Any]) -> Started | None:
    """Run ``coro`` until it first has to wait: None if it finished (its exception, if it raised one,
    propagates), or a :class:`Started` to await for the rest."""
    try:
        pending = coro.send(None)
    except StopIteration:
        return None
    return Started(coro, pending)


class Consumer(faust_aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_offset = NoReadPositions()
        # Per partition: the next offset the agents should see in this generation (None: not known,
        # e.g. before the first seek; the first record seen sets it).
        self._next_offset: dict[TP, int | None] = {}
        # tp -> (offset sought back to, times, since when)
        self._refetches: dict[TP, tuple[int, int, float]] = {}
        self._clock = time.monotonic
        # Records the loop has handed to the agents or the recovery: the worker's liveness check reads it.
        self.handed = 0

    async def perform_seek(self) -> None:
        """Seek every assigned partition to its committed offset, and expect the agents to start there:
        at the committed offset, or at the start of the log where the group never committed one (the
        client resets to it, ``auto_offset_reset=earliest``)."""
        await super().perform_seek()
        expected = {tp: self._committed_offset.get(tp) for tp in self.assignment()}
        sources = self.app.topics.acking_topics
        never = [tp for tp, offset in expected.items() if offset is None and tp.topic in sources]
        if never:
            # A partition new to the group loses fetched records around a rebalance like any other
            # (point 3); counting from the first record seen, records lost before it would go unnoticed.
            earliest = await self.earliest_offsets(*never)
            expected.update({tp: earliest.get(tp) for tp in never})
        self._next_offset = expected
        self._refetches.clear()
        await self._seek_changelogs_to_recovery()

    async def _seek_changelogs_to_recovery(self) -> None:
        """Point 7 of the module docstring: seek the changelog partitions the recovery reads back to where
        it stands, as Faust's seek above does for the source partitions."""
        recovery = getattr(getattr(self.app, "tables", None), "recovery", None)
        if recovery is None:
            return
        assigned = self.assignment()
        offsets: dict[TP, int] = {}
        for read in (recovery.active_offsets, recovery.standby_offsets):
            # The last offset it read (-1: none); Faust's recovery seeks there too (recovery._seek_offsets).
            offsets.update({tp: max(offset, 0) for tp, offset in read.items() if tp in assigned})
        if offsets:
            await self.seek_wait(offsets)

    def holes(self, messages: Iterable[Message]) -> dict[TP, tuple[int, int]]:
        """Per partition, ``(first, after)``: the first offset an agent should have seen by the end of
        ``messages`` and did not, and the lowest offset above it that came instead. Records of an
        older generation are not looked at; a record seen again (after a seek) is a repeat, not a hole.
        """
        current = self.app.consumer_generation_id
        beyond: dict[TP, int] = {}
        for message in messages:
            if getattr(message, "generation_id", current) != current:
                continue
            tp, offset = message.tp, message.offset
            expected = self._next_offset.get(tp)
            if expected is None or offset == expected:
                self._next_offset[tp] = offset + 1
            elif offset > expected:
                beyond[tp] = min(offset, beyond.get(tp, offset))
        found = {}
        for tp, after in beyond.items():
            first = self._next_offset[tp]
            if first is not None and first < after:
                found[tp] = (first, after)
        return found

    async def fetch_again(self, tp: TP, first: int, after: int) -> bool:
        """Seek ``tp`` back to ``first``; True if it did. After :data:`REFETCH_TRIES` seeks to the same
        offset over :data:`GAP_AFTER_SECONDS`, ``first .. after - 1`` are not in the log: acknowledged
        as a gap, and False."""
        now = self._clock()
        previous, tries, since = self._refetches.get(tp, (first, 0, now))
        if previous != first:
            tries, since = 0, now
        tries += 1
        if tries > REFETCH_TRIES and now - since >= GAP_AFTER_SECONDS:
            self._refetches.pop(tp, None)
            # Faust's _add_gap would start the gap one past the committed offset (it reads it as the
            # last processed one, not the next to read): the interval is added here as it means it.
            self._gap[tp].addi(first, after)
            self._gap[tp].merge_overlaps()
            self._next_offset[tp] = after
            return False
        self._refetches[tp] = (first, tries, since)
        await self.seek(tp, first)
        return True

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - run by every worker
        """Faust's consumer loop (``faust.transport.consumer.Consumer._drain_messages``) without the
        read positions (point 1 of the module docstring) and with each hand-off started eagerly
        (point 4). Same stops, commits every ``broker_commit_every`` acks, yields to the event loop
        every 100 records, and the same errors end it."""
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                ait = getmany(timeout=1.0)
                # getmany can come back at once, again and again, without giving the loop a turn.
                await self.sleep(0)
                if not self.should_stop:
                    async for _tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        self.handed += 1
                        rest = start_eagerly(callback(message))
                        if rest is not None:
                            await self.wait_first(rest, self.suspend_flow.wait())
                    unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)

    def _new_offset(self, tp: TP) -> int | None:
        # Faust lets a commit pass over the committed offset itself when it was never acknowledged
        # (``min(acked) - committed > 1``); here the acknowledged run must start exactly there.
        acked = self._acked[tp]
        committed = self._committed_offset[tp]
        if acked and committed is not None:
            gap = self._gap.get(tp)
            lowest = min(min(acked), min(i.begin for i in gap)) if gap else min(acked)
            if lowest > committed:
                return None
        return super()._new_offset(tp)

    async def _seek(self, partition: TP, offset: int) -> None:
        """Point 6 of the module docstring: the seek runs on the consumer thread's loop."""
        thread = self._thread
        assert isinstance(thread, ConsumerThread)
        await thread.call_thread(thread.seek_in_thread, partition, offset)

    def positions(self) -> dict[str, tuple[int | None, int | None, bool]]:
        """Per assigned partition, ``topic[partition]`` → (the client's fetch position, the high watermark
        of its last fetch, paused), read from the consumer thread's client without waiting on it: for the
        log of a stalled worker (a recovery that waits for changelog records the client never asks for
        shows here as a position at or past the high watermark)."""
        client = self._thread._ensure_consumer()
        assignment = client._subscription.subscription.assignment
        if assignment is None:
            return {}
        out = {}
        for tp in list(assignment.tps):
            state = assignment.state_value(tp)
            position = state.position if state.has_valid_position else None
            out[f"{tp.topic}[{tp.partition}]"] = (position, state.highwater, state.paused)
        return out

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def ack(self, message: Message) -> bool:
        """Record ``message`` as processed, if it counts for a commit (point 2 of the module docstring)."""
        if self.counts_for_commit(message):
            return super().ack(message)
        # Done with as far as a waiting rebalance is concerned; fetched and acknowledged again later.
        message.acked = True
        self._unacked_messages.discard(message)
        return False

    def counts_for_commit(self, message: Message) -> bool:
        generation = getattr(message, "generation_id", None)
        current = self.app.consumer_generation_id
        return self.app.flow_control.is_active() and (generation is None or generation == current)


class Transport(faust_aiokafka.Transport):
    Consumer: ClassVar[type[ConsumerT]] = Consumer
    driver_version = f"haochaping+{faust_aiokafka.Transport.driver_version}"


def fetch_max_wait_ms(app: Any) -> int:
    return int(getattr(app.conf, FETCH_MAX_WAIT_ATTR, DEFAULT_FETCH_MAX_WAIT_MS))


def register() -> None:
    """Make ``haochaping+kafka://`` a Faust broker URL scheme (idempotent)."""
    drivers.TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"


register()
