"""The simulator through the real ingest service into the real Kafka: what the truth says was taken is there."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import orjson
import pytest

from haochaping.settings import Settings
from haochaping.simulator.processes import Service, settings_env
from haochaping.simulator.run import SimulationOptions, simulate
from haochaping.simulator.sender import read_truth


def test_settings_travel_to_a_child_process_unchanged(settings: Settings) -> None:
    env = settings_env(settings)
    assert env["HAOCHAPING_KAFKA__TOPIC_PREFIX"] == settings.kafka.topic_prefix
    assert orjson.loads(env["HAOCHAPING_INGEST__SENDER_KEYS"]) == {"demo-device": "demo-secret"}

    saved = dict(os.environ)
    try:
        os.environ.update(env)
        child = Settings(_env_file=None)  # type: ignore[call-arg]
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert child.model_dump(mode="python") == settings.model_dump(mode="python")
    assert child.ingest.pseudonym_key.get_secret_value() == settings.ingest.pseudonym_key.get_secret_value()


def consume_all(settings: Settings, topic: str, expected: int, timeout_s: float = 30.0) -> list[dict]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        settings.kafka.topic(topic),
        bootstrap_servers=settings.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    out: list[dict] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(out) < expected and time.monotonic() < deadline:
            for message in consumer:
                out.append(orjson.loads(message.value))
    finally:
        consumer.close()
    return out


@pytest.mark.integration
def test_what_the_truth_says_ingest_took_is_on_reviews_raw_and_broken_requests_were_refused(
    settings: Settings, ingest_service: Service, tmp_path: Path
) -> None:
    truth_path = tmp_path / "truth.jsonl"
    options = SimulationOptions(
        ingest_url=f"http://127.0.0.1:{settings.ingest.port}",
        key_id="demo-device",
        secret="demo-secret",
        rate=300,
        duration=4,
        truth=truth_path,
        seed=5,
        run_id="sendtest",
        hour=10,
        malformed=0.03,
        duplicate=0.05,
        offline=0.02,
        late_sms=0.2,
        progress=False,
    )
    stats = asyncio.run(simulate(options))
    assert stats.findings == []
    assert stats.malformed_refused > 0 and stats.malformed_taken == 0
    rows = read_truth(truth_path)
    reviews = [r for r in rows if r["kind"] == "review" and r["outcome"] == "accepted"]
    assert len(reviews) > 300
    assert {r["route"] for r in reviews} >= {"review", "sms", "reviews_batch"}
    on_kafka = consume_all(settings, "reviews.raw", expected=len(reviews))
    by_id = {r["event_id"]: r for r in on_kafka}
    for row in reviews:
        record = by_id[row["event_id"]]
        assert (record["unit_code"], record["stars"], record["case_no"]) == (
            row["unit_code"],
            row["stars"],
            row["dedup_key"].split("|")[0],
        )
    orders = [r for r in rows if r["kind"] == "workorder"]
    assert orders and len(consume_all(settings, "workorders.raw", expected=len(orders), timeout_s=10)) >= len(
        orders
    )
