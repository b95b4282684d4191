"""What the liveness checks ask the broker (haochaping/backlog.py): records after the committed offset, or
after the start of the log where the group committed none; no verdict when the broker does not answer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from faust.types import TP

from haochaping.backlog import Backlog
from haochaping.settings import KafkaSettings, Settings
from haochaping.topics import ensure_topics

pytestmark = pytest.mark.integration


def test_the_backlog_counts_from_the_committed_offset_or_the_start_of_the_log(
    kafka_stack: Any, settings: Settings
) -> None:
    from kafka import KafkaProducer

    ensure_topics(settings.kafka)
    topic = settings.kafka.topic("reviews.raw")
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    for i in range(7):
        producer.send(topic, value=b"r%d" % i, partition=0)
    for i in range(2):
        producer.send(topic, value=b"s%d" % i, partition=1)
    producer.flush(30)
    producer.close()

    p0, p1, p2 = TP(topic, 0), TP(topic, 1), TP(topic, 2)
    backlog = Backlog(settings.kafka)
    try:
        waiting = asyncio.run(backlog.waiting([p0, p1, p2], {p0: 3, p1: None, p2: None}))
        # the name the broker's logs and quotas know the worker's check by, as before the move
        assert backlog._client.config["client_id"] == f"{settings.kafka.client_id}-streams-liveness"
    finally:
        backlog.close()
    assert waiting == {f"{topic}[0]": 4, f"{topic}[1]": 2, f"{topic}[2]": 0}

    # The sink's partitions are aiokafka's; its client has a name of its own.
    from aiokafka import TopicPartition

    a0, a1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    backlog = Backlog(settings.kafka, owner="sink")
    try:
        waiting = asyncio.run(backlog.waiting([a0, a1], {a0: 6, a1: 0}))
        assert backlog._client.config["client_id"] == f"{settings.kafka.client_id}-sink-liveness"
    finally:
        backlog.close()
    assert waiting == {f"{topic}[0]": 1, f"{topic}[1]": 2}


def test_no_verdict_when_the_broker_does_not_answer(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from haochaping.simulator.pipeline import free_port

    nobody = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    backlog = Backlog(nobody, timeout_ms=1000)
    try:
        with caplog.at_level(logging.INFO, logger="haochaping.backlog"):
            assert asyncio.run(backlog.waiting([TP("reviews.raw", 0)], {})) is None
    finally:
        backlog.close()
    # for the right reason: the broker did not answer (not, say, a client refusing its settings)
    assert "KafkaTimeoutError" in caplog.text
