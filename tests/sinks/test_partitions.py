"""Each partition's batches go on their own: a partition whose insert hangs holds up no other partition,
and each batch still lands exactly once with its offsets committed."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from haochaping.domain.records import LedgerEventType
from haochaping.settings import Settings
from sinks.batches import Batch
from sinks.metrics import SinkMetrics
from sinks.writer import SinkWriter, WriterThread, _Outcome
from tests.sinks.factories import count, dumps, ledger_event, ticket, wait_for

pytestmark = pytest.mark.integration

SLOW_PARTITION = 0


class HeldInsert(SinkWriter):
    """Holds every insert of one partition until the test lets it go (a slow or stuck ClickHouse insert)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held = threading.Event()  # an insert of the slow partition has started
        self.release = threading.Event()

    def _write_batch(self, batch: Batch) -> _Outcome:
        if batch.partition == SLOW_PARTITION:
            self.held.set()
            self.release.wait(60)
        return super()._write_batch(batch)


def _send(settings: Settings, partition: int, ticket_id: str) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        event = ledger_event(ticket(ticket_id, 1), LedgerEventType.OPENED)
        producer.send(
            settings.kafka.topic("ledger.events"), dumps(event), key=ticket_id.encode(), partition=partition
        )
        producer.flush()
    finally:
        producer.close()


def _committed(settings: Settings) -> dict[int, int]:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        offsets = admin.list_group_offsets(settings.sink.group_id).get(settings.sink.group_id, {})
    finally:
        admin.close()
    topic = settings.kafka.topic("ledger.events")
    return {tp.partition: om.offset for tp, om in offsets.items() if tp.topic == topic}


def test_a_ticket_lands_while_another_partitions_insert_hangs_and_both_count_once(
    sink_settings, sink_topics, migrated
) -> None:
    settings = sink_settings.model_copy(
        update={
            "sink": sink_settings.sink.model_copy(
                update={"latency_topics": {"ledger.events": 0.1}, "insert_threads": 2}
            )
        }
    )
    writer = HeldInsert(settings, metrics=SinkMetrics(CollectorRegistry()), topics=("ledger.events",))
    with WriterThread(writer):
        _send(settings, SLOW_PARTITION, "tk-held")
        assert writer.held.wait(30), "the held partition's insert never started"
        # With one round of inserts at a time, this ticket's batch waited for the held insert to end.
        _send(settings, 1, "tk-free")
        wait_for(
            lambda: count(migrated, "SELECT count() FROM tickets FINAL WHERE ticket_id = 'tk-free'") == 1,
            timeout=20,
            what="the ticket of the free partition while the other partition's insert is held",
        )
        assert count(migrated, "SELECT count() FROM ticket_events WHERE ticket_id = 'tk-held'") == 0
        # The free partition's offset moved past its ticket; the held one still stands at its intent.
        wait_for(lambda: _committed(settings).get(1) == 1, timeout=20, what="partition 1's offset committed")
        assert _committed(settings).get(SLOW_PARTITION, -1) <= 0
        writer.release.set()
        wait_for(
            lambda: count(migrated, "SELECT count() FROM tickets FINAL WHERE ticket_id = 'tk-held'") == 1,
            timeout=20,
            what="the held ticket after its insert was let go",
        )
        wait_for(
            lambda: _committed(settings).get(SLOW_PARTITION) == 1,
            timeout=20,
            what="the held partition's offset committed",
        )
    assert count(migrated, "SELECT count() FROM ticket_events") == 2
    assert count(migrated, "SELECT count() FROM tickets FINAL") == 2
