"""The faust-streaming application: thin agents that move bytes between Kafka and the stages.

Topology (logical topic names; ``settings.kafka.topic(name)`` adds the deployment's prefix)::

    reviews.raw    ──[reviews]────> reviews.accepted, ledger.intake, satisfaction.minute, alerts, deadletter
    workorders.raw ──[workorders]─> ledger.intake, ledger.commands (12345 call-backs), deadletter
    ledger.intake  ─┐
    ledger.commands ┴[ledger]─────> ledger.events, alerts, deadletter
    (timer) deadline check ───────> ledger.intake (DeadlineTick for the tickets this worker owns)

Every agent works the same way (``run_batch``): take up to ``batch_size`` raw records from its
channel (``streams.take.take_batches``), hand them to the stage (plain Python), send what it
returns, wait until the broker has every output, write each changed table key once (the reviews
agent adds a bounded step of the dedupe purge to those writes: ``streams.purge``), then ack the
batch. A batch whose processing or sending raises is never acked: its offsets are not committed and
a restarted worker processes it again (at least once; every output carries an id that makes a repeat
recognisable). A timer logs any output batch the producer has held for more than 10 s: every offset
commit waits for them all.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import faust
from faust.types import EventT

from haochaping import taskdump
from haochaping.backlog import Backlog
from haochaping.domain.contract import BEIJING
from haochaping.liveness import STALL_EXIT_CODE, Liveness
from haochaping.settings import Settings
from streams import metrics
from streams.batch import (
    LEDGER_COMMANDS,
    LEDGER_INTAKE,
    REVIEWS_RAW,
    WORKORDERS_RAW,
    BatchResult,
    Incoming,
)
from streams.outbox import KeyPartitions, send_batches, track_unknown_topics, undelivered_batches
from streams.purge import DedupePurge
from streams.state import last_event_per_partition, write_per_partition
from streams.take import take_batches
from streams.transport import FETCH_MAX_WAIT_ATTR, SCHEME
from streams.transport import Consumer as TransportConsumer

log = logging.getLogger(__name__)

# An output batch is normally on the broker within milliseconds; one held this long is stuck.
UNDELIVERED_WARN_SECONDS = 10.0
UNDELIVERED_CHECK_SECONDS = 2.0
# A batch whose partition has no leader in the producer's metadata this long is asked for again.
UNTRACKED_AFTER_SECONDS = 2.0
LIVENESS_CHECK_SECONDS = 5.0

Process = Callable[[Sequence[Incoming], Callable[[bytes], bytes | None]], BatchResult]


@dataclass
class Stages:
    """The plain-Python stages the agents drive; built from the rules and calendar files."""

    reviews: Any
    workorders: Any
    ledger: Any

    @classmethod
    def from_settings(cls, settings: Settings) -> Stages:
        from haochaping.domain.triage import TriageRules
        from streams.ledger import LedgerStage
        from streams.reviews import ReviewStage
        from streams.workorders import WorkOrderStage

        rules = TriageRules.load(settings.streams.rules_file)
        return cls(
            reviews=ReviewStage.from_rules(rules, settings.streams.dedupe_horizon_days),
            workorders=WorkOrderStage.from_rules(rules),
            ledger=LedgerStage.from_settings(settings, rules.config),
        )


def app_id_for(settings: Settings) -> str:
    """Faust prefixes its own topics (table changelogs) with the app id: include the topic prefix."""
    prefix = settings.kafka.topic_prefix.rstrip(".-_")
    return f"{prefix}-{settings.streams.app_id}" if prefix else settings.streams.app_id


def create_app(settings: Settings, stages: Stages | None = None) -> faust.App:
    """A Faust app for these settings; nothing connects until a worker starts it."""
    s = settings.streams
    kafka = settings.kafka
    app_id = app_id_for(settings)
    datadir = s.data_dir or settings.var_dir / "streams" / app_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id,
        # Faust's aiokafka driver with the per-record consumer overhead removed and
        # fetch_max_wait_ms applied (streams/transport.py).
        broker=[f"{SCHEME}://{host}" for host in kafka.bootstrap_servers.split(",")],
        broker_client_id=f"{kafka.client_id}-streams",
        store=s.store,
        datadir=str(datadir),
        topic_partitions=kafka.partitions,
        topic_replication_factor=kafka.replication_factor,
        topic_allow_declare=True,
        key_serializer="raw",
        value_serializer="raw",
        broker_session_timeout=s.broker_session_timeout,
        broker_heartbeat_interval=s.broker_heartbeat_interval,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        # Standby copies would double the changelog reads for no gain on a two-core box; a new owner
        # recovers a partition from its changelog.
        table_standby_replicas=s.standby_replicas,
        producer_linger=s.producer_linger_seconds,
        producer_max_batch_size=s.producer_max_batch_bytes,
        # A request carries one batch per partition of every output topic and changelog.
        producer_max_request_size=max(4 * 1024 * 1024, 4 * s.producer_max_batch_bytes),
        broker_commit_interval=s.commit_interval_seconds,
        stream_buffer_maxsize=max(4096, s.batch_size * 2),
    )
    names = {logical: kafka.topic(logical) for logical in _LOGICAL}
    logical_of = {real: logical for logical, real in names.items()}
    app.conf.haochaping_topics = names  # type: ignore[attr-defined]
    setattr(app.conf, FETCH_MAX_WAIT_ATTR, s.fetch_max_wait_ms)

    def source(*logical: str) -> faust.TopicT:
        return app.topic(*(names[n] for n in logical), key_type=bytes, value_type=bytes)

    dedupe = app.Table("review-dedupe", key_type=bytes, value_type=bytes, partitions=kafka.partitions)
    tickets = app.Table("tickets", key_type=bytes, value_type=bytes, partitions=kafka.partitions)
    built: dict[str, Stages] = {}

    def stages_() -> Stages:
        # Built on first use so that create_app stays cheap and free of file reads.
        if "s" not in built:
            built["s"] = stages or Stages.from_settings(settings)
        return built["s"]

    purge = DedupePurge(
        dedupe,
        s.dedupe_horizon_days,
        s.dedupe_purge_interval_minutes * 60,
        s.dedupe_purge_keys_per_batch,
    )

    key_partitions = KeyPartitions()
    batches_done = [0]  # with the records the consumer handed on: what the liveness check sees move

    async def run_batch(
        events: Sequence[EventT],
        process: Process,
        table: Any,
        agent: str,
        purge: DedupePurge | None = None,
    ) -> None:
        started = time.perf_counter()
        incoming = [
            Incoming(
                logical_of.get(ev.message.topic, ev.message.topic),
                ev.message.partition,
                ev.message.offset,
                ev.message.key,
                ev.message.value,
            )
            for ev in events
        ]
        for topic in {i.topic for i in incoming}:
            metrics.EVENTS_IN.labels(topic).inc(sum(1 for i in incoming if i.topic == topic))
        result = process(incoming, table.get if table is not None else _no_state)
        producer = app.producer
        await send_batches(
            producer, ((names[o.topic], o.key, o.value, None) for o in result.out), key_partitions
        )
        writes: dict[int, dict[bytes, bytes | None]] = {p: dict(w) for p, w in result.writes.items()}
        steps: dict[int, bytes | None] = {}
        purged: dict[int, dict[bytes, bytes | None]] = {}
        if purge is not None:
            purged, steps = purge.plan((ev.message.partition for ev in events), result.writes)
            for partition, changes in purged.items():
                writes.setdefault(partition, {}).update(changes)
        if table is not None and writes:
            await write_per_partition(producer, table, writes, last_event_per_partition(events))
        if purge is not None:
            purge.done(steps, purged)
        await refetch_holes(events)
        for ev in events:
            ev.ack()
        batches_done[0] += 1
        _record_metrics(agent, result, len(events), time.perf_counter() - started)

    async def refetch_holes(events: Sequence[EventT]) -> None:
        # Records the consumer fetched and lost on the way here (streams/transport.py, point 3).
        consumer = app.consumer
        if not isinstance(consumer, TransportConsumer):
            return
        for tp, (first, after) in consumer.holes(ev.message for ev in events).items():
            if await consumer.fetch_again(tp, first, after):
                log.warning(
                    "offsets %d..%d of %s[%d] never reached the agent (lost in the consumer around a "
                    "rebalance): fetching them again",
                    first,
                    after - 1,
                    tp.topic,
                    tp.partition,
                )
                metrics.REFETCHES.labels(logical_of.get(tp.topic, tp.topic)).inc()
            else:
                log.error(
                    "offsets %d..%d of %s[%d] are not in the log (still missing after fetching them again): "
                    "taken for a gap; is a transactional producer writing the topic, or is it compacted?",
                    first,
                    after - 1,
                    tp.topic,
                    tp.partition,
                )

    batch_size, within = s.batch_size, s.batch_within_seconds

    @app.agent(source(REVIEWS_RAW), name="reviews")
    async def reviews(stream: faust.StreamT) -> None:
        async for events in take_batches(stream, batch_size, within):
            await run_batch(events, stages_().reviews.process, dedupe, "reviews", purge)

    @app.agent(source(WORKORDERS_RAW), name="workorders")
    async def workorders(stream: faust.StreamT) -> None:
        async for events in take_batches(stream, batch_size, within):
            await run_batch(events, stages_().workorders.process, None, "workorders")

    @app.agent(source(LEDGER_INTAKE, LEDGER_COMMANDS), name="ledger")
    async def ledger(stream: faust.StreamT) -> None:
        async for events in take_batches(stream, batch_size, within):
            await run_batch(events, stages_().ledger.process, tickets, "ledger")

    @app.timer(s.deadline_check_seconds)
    async def deadline_check() -> None:
        """Publish a DeadlineTick for every ticket of this worker's partitions that has a change due."""
        owned = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == names[LEDGER_INTAKE]}
        if not owned:
            return
        now = datetime.now(BEIJING)
        ledger_stage = stages_().ledger
        pending = [
            await app.producer.send(names[LEDGER_INTAKE], key, tick, None, None, None)
            for key, tick in ledger_stage.ticks_due(list(tickets.items()), now, owned)
        ]
        if pending:
            await asyncio.gather(*pending)
            metrics.EVENTS_OUT.labels(LEDGER_INTAKE).inc(len(pending))

    @app.timer(UNDELIVERED_CHECK_SECONDS)
    async def undelivered_check() -> None:
        """Say which partition an output batch is stuck on: a commit waits for every batch."""
        waiting = undelivered_batches(app.producer, UNTRACKED_AFTER_SECONDS)
        for topic in track_unknown_topics(app.producer, waiting):
            log.warning(
                "an output batch for %s waits for a leader the producer's metadata no longer asks for: "
                "asking again (streams.outbox.track_unknown_topics)",
                topic,
            )
        stuck = [b for b in waiting if b.waited_seconds > UNDELIVERED_WARN_SECONDS]
        metrics.UNDELIVERED.set(len(stuck))
        for batch in stuck:
            log.warning(
                "an output batch for %s[%d] has waited %.0f s to be delivered (%s; the producer's metadata "
                "gives its leader as %s); offset commits and the next rebalance wait for it",
                batch.topic,
                batch.partition,
                batch.waited_seconds,
                batch.state,
                batch.leader,
            )

    liveness = Liveness(s.stall_seconds)
    backlog = Backlog(kafka)
    sources = {names[n] for n in SOURCES}

    @app.timer(LIVENESS_CHECK_SECONDS)
    async def stall_check() -> None:
        """Exit for a restart once stalled for good (haochaping/liveness.py)."""
        consumer = app.consumer
        if not isinstance(consumer, TransportConsumer) or s.stall_seconds <= 0:
            return
        moved = consumer.handed + batches_done[0]
        if liveness.moving(moved):
            liveness.check(moved, {})  # records the movement; nothing to ask the broker
            return
        # Not moved since the last check: ask the broker whether anything waits.
        assigned = [tp for tp in consumer.assignment() if tp.topic in sources]
        waiting = await backlog.waiting(assigned, {tp: consumer._committed_offset.get(tp) for tp in assigned})
        if waiting is None:  # the broker did not answer: an outage, not this worker's stall
            liveness.check(moved, {})
            return
        reason = liveness.check(consumer.handed + batches_done[0], waiting)
        if reason is None:
            return
        log.error(
            "worker stalled: %s. Writing what each task waits on to this log, then exiting with %d for the "
            "supervisor to start it again (offsets are committed only for processed batches: the restart "
            "redoes what was in flight, and nothing is lost or counted twice)",
            reason,
            STALL_EXIT_CODE,
        )
        try:
            recovery = app.tables.recovery
            log.error(
                "the client's fetch positions (position, high watermark, paused): %s; the recovery reads "
                "from %s up to %s",
                consumer.positions(),
                dict(recovery.active_offsets),
                dict(recovery.active_highwaters),
            )
        except Exception as exc:  # the dump below must still be written
            log.error("could not read the fetch positions (%r)", exc)
        try:
            taskdump.dump(sys.stderr)
        except Exception as exc:  # the exit below is what matters
            log.error("could not write the task dump (%r)", exc)
        logging.shutdown()
        # Not Faust's graceful stop: a stop waits for the very commit or flush that is stuck.
        os._exit(STALL_EXIT_CODE)

    app.haochaping_agents = (reviews, workorders, ledger)  # type: ignore[attr-defined]
    app.haochaping_tables = {"dedupe": dedupe, "tickets": tickets}  # type: ignore[attr-defined]
    return app


# The topics the agents consume.
SOURCES = (REVIEWS_RAW, WORKORDERS_RAW, LEDGER_INTAKE, LEDGER_COMMANDS)

_LOGICAL = (
    "reviews.raw",
    "workorders.raw",
    "reviews.accepted",
    "ledger.intake",
    "ledger.commands",
    "ledger.events",
    "satisfaction.minute",
    "alerts",
    "deadletter",
)


def _no_state(_key: bytes) -> bytes | None:
    return None


def _record_metrics(agent: str, result: BatchResult, n: int, seconds: float) -> None:
    metrics.BATCH_SECONDS.labels(agent).observe(seconds)
    metrics.BATCH_SIZE.labels(agent).observe(n)
    out_by_topic: dict[str, int] = {}
    for o in result.out:
        out_by_topic[o.topic] = out_by_topic.get(o.topic, 0) + 1
    for topic, count in out_by_topic.items():
        metrics.EVENTS_OUT.labels(topic).inc(count)
    for name, count in result.counts.items():
        kind, _, detail = name.partition(".")
        if kind == "dropped":
            metrics.REVIEWS_DROPPED.labels(detail).inc(count)
        elif kind == "deadletter":
            metrics.DEAD_LETTERS.labels(detail, "invalid").inc(count)
        elif kind == "opened":
            metrics.TICKETS_OPENED.labels(detail).inc(count)
        elif kind == "event":
            metrics.LEDGER_EVENTS.labels(detail).inc(count)
