"""The API process's one window on the stream: ``ledger.events``, ``alerts`` and ``satisfaction.minute``.

One consumer per API process (kafka-python, in a thread, no consumer group: every API process wants
every record) reads from the end of the three topics. It

- answers the actions waiting for the ledger's verdict on their command (by ``command_id``),
- keeps the recent verdicts so that a client told "202, poll here" can poll any time later,
- fans the records out to the live-board subscribers, each filtered to what its principal may see.

Satisfaction records come per dimension tuple and per stream batch; they are summed here and sent
to subscribers once a second as one tick, so a wall screen redraws once a second, not per record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from haochaping.domain.records import (
    Actor,
    Alert,
    AlertKind,
    Colour,
    LedgerEvent,
    LedgerEventType,
    MinuteCounts,
    Role,
)
from haochaping.settings import Settings

log = logging.getLogger(__name__)

FEED_RECORDS = Counter("haochaping_api_feed_records_total", "Records read by the API's live feed", ["topic"])
FEED_BAD_RECORDS = Counter(
    "haochaping_api_feed_bad_records_total", "Records the live feed could not parse", ["topic"]
)
LIVE_SUBSCRIBERS = Gauge("haochaping_api_live_subscribers", "Open live-board streams")
LIVE_DROPPED = Counter("haochaping_api_live_dropped_total", "Live events dropped for a slow subscriber")

FEED_TOPICS = ("ledger.events", "alerts", "satisfaction.minute")
_RECENT_OUTCOMES = 20_000


@dataclass(frozen=True)
class LiveEvent:
    """One server-sent event: its name, its data (JSON-able) and the unit it concerns (for scoping)."""

    name: str
    data: dict[str, Any]
    unit_code: str | None = None


@dataclass(eq=False)  # compared and hashed by identity: one per open stream
class Subscription:
    actor: Actor
    queue: asyncio.Queue[LiveEvent]
    dropped: int = 0

    def may_see(self, event: LiveEvent) -> bool:
        return self.actor.role is not Role.UNIT_OFFICER or event.unit_code == self.actor.unit_code


@dataclass
class _Tick:
    counts: list[int] = field(default_factory=lambda: [0] * 5)
    fraud_counts: list[int] = field(default_factory=lambda: [0] * 5)


def live_events_of_ledger_event(event: LedgerEvent) -> list[LiveEvent]:
    """What the board shows of a ledger change: every change (to keep colour counts), plus the two
    that deserve attention of their own: a new red ticket and an overdue escalation."""
    ticket = event.ticket
    summary = {
        "ticket_id": ticket.ticket_id,
        "event": event.type.value,
        "at": event.at.isoformat(),
        "colour": ticket.colour.value,
        "status": ticket.status.value,
        "unit_code": ticket.unit_code,
        "unit_name": ticket.unit_name,
        "overdue": ticket.overdue,
        "opened_at": ticket.opened_at.isoformat(),
        "due": ticket.due.isoformat(),
        "text": ticket.text,
        "reason": event.reason,
    }
    out = [LiveEvent("ticket", summary, ticket.unit_code)]
    if event.type is LedgerEventType.OPENED and ticket.colour is Colour.RED:
        out.append(LiveEvent("red_ticket", summary, ticket.unit_code))
    if event.type is LedgerEventType.ESCALATED:
        out.append(LiveEvent("overdue", summary, ticket.unit_code))
    return out


class LiveFeed:
    def __init__(self, settings: Settings, *, flush_seconds: float = 1.0) -> None:
        self._settings = settings
        self._topics = {settings.kafka.topic(name): name for name in FEED_TOPICS}
        self._flush_seconds = flush_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._waiters: dict[str, asyncio.Future[LedgerEvent]] = {}
        self._outcomes: OrderedDict[str, LedgerEvent] = OrderedDict()
        # Last known unit of a ticket seen on the stream: lets the API scope an action on a ticket
        # that the sink has not written to ClickHouse yet.
        self._ticket_units: OrderedDict[str, str] = OrderedDict()
        self._subscribers: set[Subscription] = set()
        self._ticks: dict[tuple[str, str], _Tick] = {}
        self._ticks_lock = threading.Lock()
        self._flusher: asyncio.Task[None] | None = None
        self.error: str | None = None

    # -- life ------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="api-live-feed", daemon=True)
        self._thread.start()
        self._flusher = asyncio.create_task(self._flush_ticks_forever())

    async def stop(self) -> None:
        self._stop.set()
        if self._flusher:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        if self._thread:
            await asyncio.to_thread(self._thread.join, 10)
        for sub in list(self._subscribers):
            sub.queue.put_nowait(LiveEvent("bye", {}))

    @property
    def ready(self) -> bool:
        """Assigned to every partition of the three topics and positioned at their end."""
        return self._ready.is_set()

    async def wait_ready(self, timeout: float) -> bool:
        return await asyncio.to_thread(self._ready.wait, timeout)

    # -- commands ----------------------------------------------------------------------------------

    def expect(self, command_id: str) -> asyncio.Future[LedgerEvent]:
        """Register interest in a command's outcome; call before publishing it so no answer is missed."""
        assert self._loop is not None, "the feed is not started"
        future: asyncio.Future[LedgerEvent] = self._loop.create_future()
        self._waiters[command_id] = future
        return future

    def forget(self, command_id: str) -> None:
        self._waiters.pop(command_id, None)

    def outcome(self, command_id: str) -> LedgerEvent | None:
        return self._outcomes.get(command_id)

    def ticket_unit(self, ticket_id: str) -> str | None:
        return self._ticket_units.get(ticket_id)

    # -- live ------------------------------------------------------------------------------------

    def subscribe(self, actor: Actor) -> Subscription:
        sub = Subscription(actor, asyncio.Queue(maxsize=self._settings.api.live_queue_size))
        self._subscribers.add(sub)
        LIVE_SUBSCRIBERS.set(len(self._subscribers))
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)
        LIVE_SUBSCRIBERS.set(len(self._subscribers))

    def publish(self, event: LiveEvent) -> None:
        for sub in list(self._subscribers):
            if not sub.may_see(event):
                continue
            if sub.queue.full():
                # A wall screen that cannot keep up loses the oldest news, not the newest.
                with contextlib.suppress(asyncio.QueueEmpty):
                    sub.queue.get_nowait()
                sub.dropped += 1
                LIVE_DROPPED.inc()
            sub.queue.put_nowait(event)

    # -- on the loop -------------------------------------------------------------------------------

    def _on_ledger_event(self, event: LedgerEvent) -> None:
        self._ticket_units[event.ticket_id] = event.ticket.unit_code
        self._ticket_units.move_to_end(event.ticket_id)
        while len(self._ticket_units) > _RECENT_OUTCOMES:
            self._ticket_units.popitem(last=False)
        if event.command_id:
            self._outcomes[event.command_id] = event
            while len(self._outcomes) > _RECENT_OUTCOMES:
                self._outcomes.popitem(last=False)
            waiter = self._waiters.pop(event.command_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(event)
        for live in live_events_of_ledger_event(event):
            self.publish(live)

    def _on_alert(self, alert: Alert) -> None:
        if alert.kind is AlertKind.RED_TICKET:
            return  # the ledger event of the same ticket already announced it
        self.publish(LiveEvent("alert", orjson.loads(alert.model_dump_json()), alert.unit_code))

    async def _flush_ticks_forever(self) -> None:
        while True:
            await asyncio.sleep(self._flush_seconds)
            self.flush_ticks()

    def flush_ticks(self) -> None:
        with self._ticks_lock:
            ticks, self._ticks = self._ticks, {}
        if not ticks:
            return
        for sub in list(self._subscribers):
            rows = [
                {"minute": minute, "unit_code": unit, "counts": t.counts, "fraud_counts": t.fraud_counts}
                for (minute, unit), t in ticks.items()
                if sub.actor.role is not Role.UNIT_OFFICER or unit == sub.actor.unit_code
            ]
            if rows:
                event = LiveEvent("satisfaction", {"rows": rows}, sub.actor.unit_code)
                if sub.queue.full():
                    with contextlib.suppress(asyncio.QueueEmpty):
                        sub.queue.get_nowait()
                    LIVE_DROPPED.inc()
                sub.queue.put_nowait(event)

    # -- in the thread -----------------------------------------------------------------------------

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn, *args)

    def _run(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        consumer = None
        try:
            while not self._stop.is_set():
                try:
                    if consumer is None:
                        consumer = KafkaConsumer(
                            bootstrap_servers=self._settings.kafka.bootstrap_servers,
                            client_id=f"{self._settings.kafka.client_id}-api-feed",
                            group_id=None,
                            enable_auto_commit=False,
                            request_timeout_ms=15_000,
                            fetch_max_wait_ms=100,
                        )
                    if not self._ready.is_set():
                        partitions = []
                        for topic in self._topics:
                            found = consumer.partitions_for_topic(topic)
                            if not found:
                                raise LookupError(
                                    f"topic {topic} does not exist yet (run: haochaping topics)"
                                )
                            partitions += [TopicPartition(topic, p) for p in sorted(found)]
                        consumer.assign(partitions)
                        consumer.seek_to_end()
                        for tp in partitions:
                            consumer.position(
                                tp
                            )  # resolve now, so nothing published after "ready" is skipped
                        self.error = None
                        self._ready.set()
                    batches = consumer.poll(timeout_ms=200, max_records=2000)
                    for tp, records in batches.items():
                        for record in records:
                            self._dispatch(self._topics[tp.topic], record.value)
                except Exception as exc:  # keep the API up: figures are served without the feed
                    self.error = f"{type(exc).__name__}: {exc}"
                    log.warning("live feed: %s; retrying in 1 s", self.error)
                    self._ready.clear()
                    if consumer is not None:
                        with contextlib.suppress(Exception):
                            consumer.close()
                        consumer = None
                    self._stop.wait(1.0)
        finally:
            if consumer is not None:
                with contextlib.suppress(Exception):
                    consumer.close()

    def _dispatch(self, topic: str, value: bytes | None) -> None:
        FEED_RECORDS.labels(topic).inc()
        if value is None:
            return
        try:
            if topic == "ledger.events":
                self._call(self._on_ledger_event, LedgerEvent.model_validate_json(value))
            elif topic == "alerts":
                self._call(self._on_alert, Alert.model_validate_json(value))
            else:
                counts = MinuteCounts.model_validate_json(value)
                key = (counts.minute.isoformat(), counts.unit_code)
                with self._ticks_lock:
                    tick = self._ticks.setdefault(key, _Tick())
                    for i in range(5):
                        tick.counts[i] += counts.counts[i]
                        tick.fraud_counts[i] += counts.fraud_counts[i]
        except (ValidationError, ValueError) as exc:
            FEED_BAD_RECORDS.labels(topic).inc()
            log.warning("live feed: skipped a record of %s that is not a valid %s: %s", topic, topic, exc)
