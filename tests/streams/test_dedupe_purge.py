"""The dedupe purge against the real broker: keys beyond the horizon leave the table and its changelog."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from haochaping.domain.contract import BEIJING, Review
from haochaping.settings import Settings
from streams.app import app_id_for
from streams.reviews import dedup_table_key
from tests.domain.factories import UNIT_CODE
from tests.streams.conftest import review_bytes

pytestmark = pytest.mark.integration


def _review(event_id: str, case_no: str, days_ago: int) -> bytes:
    rated = datetime.now(BEIJING).replace(microsecond=0) - timedelta(days=days_ago)
    return review_bytes(event_id=event_id, case_no=case_no, stars=4, rated_at=rated.isoformat())


def _changelog(settings: Settings, until: Callable[[list[Any]], bool], timeout: float = 30.0) -> list[Any]:
    from kafka import KafkaConsumer, TopicPartition

    name = f"{app_id_for(settings)}-review-dedupe-changelog"
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers, enable_auto_commit=False, consumer_timeout_ms=500
    )
    try:
        tps = [TopicPartition(name, p) for p in sorted(consumer.partitions_for_topic(name) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            records.extend(consumer)
            if until(records):
                break
        return records
    finally:
        consumer.close()


def test_keys_beyond_the_horizon_are_purged_through_the_changelog_and_stay_gone_after_a_restart(
    settings: Settings,
    start_worker: Callable[..., Any],
    produce: Callable[..., None],
    read_topic: Callable[..., list[Any]],
) -> None:
    purge = {"dedupe_purge_interval_minutes": 0}
    first = start_worker("w1", **purge)
    old, recent = _review("old-1", "C-OLD", 500), _review("new-1", "C-NEW", 10)
    old_key = dedup_table_key(Review.model_validate_json(old))
    recent_key = dedup_table_key(Review.model_validate_json(recent))
    produce("reviews.raw", [(UNIT_CODE, old), (UNIT_CODE, recent)])
    read_topic("reviews.accepted", until=lambda r: len(r) >= 2)
    # the purge steps with the partition's next batch; a batch leaves the keys it writes alone
    produce("reviews.raw", [(UNIT_CODE, _review("nudge-1", "C-NUDGE", 0))])
    changelog = _changelog(settings, until=lambda r: any(m.value is None for m in r))
    assert [m.key for m in changelog if m.value is None] == [old_key]
    assert recent_key in {m.key for m in changelog if m.value is not None}
    first.stop()

    start_worker("w2", **purge)
    produce(
        "reviews.raw",
        [
            # within a day of the purged rating: only its absence from the recovered table lets it in
            (UNIT_CODE, _review("old-2", "C-OLD", 499)),
            (UNIT_CODE, _review("new-2", "C-NEW", 9)),  # the recent rating is still remembered
            (UNIT_CODE, _review("marker-1", "C-MARK", 0)),  # same partition: read after the two above
        ],
    )
    accepted = read_topic("reviews.accepted", until=lambda r: any(x["event_id"] == "marker-1" for x in r))
    assert sorted(r["event_id"] for r in accepted) == ["marker-1", "new-1", "nudge-1", "old-1", "old-2"]
