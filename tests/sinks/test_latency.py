"""Each topic's time bound: what a person waits for (ledger events) lands within its short bound while
reviews wait for their long one, in one writer and in the two lanes `haochaping sink` runs."""

from __future__ import annotations

import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from haochaping.domain.records import LedgerEventType
from haochaping.settings import Settings
from sinks.metrics import SinkMetrics
from sinks.writer import SinkWriter, WriterThread, lanes
from tests.sinks.factories import count, dumps, ledger_event, review, ticket, wait_for

pytestmark = pytest.mark.integration

# Long enough that a review landing while the test looks can only mean the wrong bound was applied.
LONG_BOUND = 30.0


def _bounded(sink_settings: Settings) -> Settings:
    return sink_settings.model_copy(
        update={
            "sink": sink_settings.sink.model_copy(
                update={"batch_seconds": LONG_BOUND, "latency_topics": {"ledger.events": 0.2}}
            )
        }
    )


def _one_of_each(produce: Any) -> None:
    r = review(1)
    produce("reviews.accepted", [(r.unit_code.encode(), dumps(r))])
    t = ticket("tk-red-1", 1)
    produce("ledger.events", [(b"tk-red-1", dumps(ledger_event(t, LedgerEventType.OPENED)))])


def _ticket_lands_and_review_waits(client: Any) -> None:
    started = time.monotonic()
    # 20 s is generous for a 0.2 s bound (group join included) and well inside the 30 s one.
    wait_for(
        lambda: count(client, "SELECT count() FROM tickets FINAL WHERE ticket_id = 'tk-red-1'") == 1,
        timeout=20,
        what="the red ticket in ClickHouse",
    )
    assert time.monotonic() - started < LONG_BOUND - 5
    assert count(client, "SELECT count() FROM reviews") == 0, "the review was not held for its 30 s bound"
    time.sleep(2)
    assert count(client, "SELECT count() FROM reviews") == 0, "the review was not held for its 30 s bound"


def test_one_writer_inserts_a_ledger_event_within_its_short_bound_while_reviews_wait(
    sink_settings, sink_topics, migrated, produce
) -> None:
    settings = _bounded(sink_settings)
    _one_of_each(produce)
    with WriterThread(SinkWriter(settings, metrics=SinkMetrics(CollectorRegistry()))):
        _ticket_lands_and_review_waits(migrated)


def test_the_sink_reads_latency_topics_in_a_lane_of_their_own_in_the_same_group(
    sink_settings, sink_topics, migrated, produce
) -> None:
    settings = _bounded(sink_settings)
    writers = lanes(settings, SinkMetrics(CollectorRegistry()))
    assert [(w.lane, sorted(w.table_of)) for w in writers] == [
        ("latency", [settings.kafka.topic("ledger.events")]),
        ("bulk", sorted(settings.kafka.topic(t) for t in ("reviews.accepted", "alerts"))),
    ]
    assert {w.group_id for w in writers} == {settings.sink.group_id}
    _one_of_each(produce)
    with WriterThread(writers):
        _ticket_lands_and_review_waits(migrated)


def test_a_review_lands_after_its_own_bound_in_the_lanes(
    sink_settings, sink_topics, migrated, produce
) -> None:
    # Both lanes share the group: the bulk lane must still own and write reviews.accepted.
    settings = sink_settings.model_copy(
        update={"sink": sink_settings.sink.model_copy(update={"latency_topics": {"ledger.events": 0.2}})}
    )
    _one_of_each(produce)
    with WriterThread(lanes(settings, SinkMetrics(CollectorRegistry()))):
        wait_for(lambda: count(migrated, "SELECT count() FROM reviews") == 1, what="the review")
        wait_for(lambda: count(migrated, "SELECT count() FROM ticket_events") == 1, what="the ledger event")


def test_a_latency_topic_the_sink_does_not_write_is_refused_with_what_it_writes(sink_settings) -> None:
    settings = sink_settings.model_copy(
        update={"sink": sink_settings.sink.model_copy(update={"latency_topics": {"ledger.event": 0.1}})}
    )
    with pytest.raises(ValueError, match=r"\['ledger.event'\], which the sink does not write; it writes"):
        lanes(settings)


class LookupFails(SinkWriter):
    """The committed-offsets lookup of an assignment fails ``failures`` times (a coordinator still loading)."""

    failures = 0

    async def _on_assigned(self, assigned: Any) -> None:
        from aiokafka.errors import CoordinatorLoadInProgressError

        real = self._admin.list_consumer_group_offsets

        async def flaky(*args: Any, **kwargs: Any) -> Any:
            if self.failures:
                self.failures -= 1
                raise CoordinatorLoadInProgressError()
            return await real(*args, **kwargs)

        self._admin.list_consumer_group_offsets = flaky
        await super()._on_assigned(assigned)


def test_a_failed_offsets_lookup_on_assignment_is_tried_again_and_nothing_is_dropped(
    sink_settings, sink_topics, migrated, produce
) -> None:
    # Before, aiokafka swallowed the listener's error: the partitions stayed assigned without a buffer
    # and their records were read and dropped, so the ledger event never landed.
    writer = LookupFails(sink_settings, metrics=SinkMetrics(CollectorRegistry()))
    writer.failures = 2
    _one_of_each(produce)
    with WriterThread(writer):
        wait_for(lambda: count(migrated, "SELECT count() FROM ticket_events") == 1, what="the ledger event")
        wait_for(lambda: count(migrated, "SELECT count() FROM reviews") == 1, what="the review")
    assert writer.failures == 0


def test_an_offsets_lookup_that_keeps_failing_stops_the_writer_with_the_reason(
    sink_settings, sink_topics, migrated, produce
) -> None:
    writer = LookupFails(sink_settings, metrics=SinkMetrics(CollectorRegistry()))
    writer.failures = 1_000_000
    thread = WriterThread(writer).start()
    wait_for(lambda: not thread.is_alive(), timeout=60, what="the writer to stop")
    with pytest.raises(
        RuntimeError, match=r"could not read the committed offsets of .* a restart reads them again"
    ):
        thread.stop()
    assert count(migrated, "SELECT count() FROM ticket_events") == 0
