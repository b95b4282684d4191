"""Kafka topics: their names, keys and partitioning, created explicitly before any worker starts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from haochaping.settings import KafkaSettings


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str  # what the record key is: documents the partitioning contract
    purpose: str
    config: dict[str, str] = field(default_factory=dict)
    # Takes the common partition count: a topic the worker reads, whose partitions its tables follow.
    # The others (written by the worker, read only by the sink and the API) may have a count of their own
    # (``kafka.topic_partitions``).
    co_partitioned: bool = True


# Ledger tables are partitioned by ticket id: ledger.intake and ledger.commands must have the same
# partition count so that one worker owns a ticket alone (see README, "Topics").
TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec("reviews.raw", "unit code", "a review as the contract defines it, with receive time"),
    TopicSpec("workorders.raw", "work-order id", "12345 work orders and their call-back results"),
    TopicSpec(
        "reviews.accepted",
        "unit code",
        "validated, deduplicated reviews with fraud flags",
        co_partitioned=False,
    ),
    TopicSpec("ledger.intake", "ticket id", "a triaged item that opens a ticket"),
    TopicSpec("ledger.commands", "ticket id", "an officer's or supervisor's action on a ticket"),
    TopicSpec(
        "ledger.events",
        "ticket id",
        "every change of a ticket: the audit trail, kept forever",
        {"retention.ms": "-1"},
        co_partitioned=False,
    ),
    TopicSpec("satisfaction.minute", "dimension tuple", "per-minute counts per level", co_partitioned=False),
    TopicSpec("alerts", "unit code", "overdue tickets and bad-review spikes", co_partitioned=False),
    TopicSpec(
        "deadletter", "source topic", "the original bytes, the stage and the reason", co_partitioned=False
    ),
)


def topic_names(settings: KafkaSettings) -> dict[str, str]:
    """Logical name -> the real topic name under the configured prefix."""
    return {spec.name: settings.topic(spec.name) for spec in TOPICS}


def check_topic_partitions(settings: KafkaSettings) -> None:
    """Refuse a partition count of its own for a topic that must keep the common one, or for no topic."""
    specs = {spec.name: spec for spec in TOPICS}
    unknown = sorted(set(settings.topic_partitions) - set(specs))
    if unknown:
        raise ValueError(
            f"kafka.topic_partitions names {unknown}: there are no such topics; the topics are {sorted(specs)}"
        )
    pinned = sorted(n for n in settings.topic_partitions if specs[n].co_partitioned)
    if pinned:
        free = sorted(n for n, spec in specs.items() if not spec.co_partitioned)
        raise ValueError(
            f"kafka.topic_partitions names {pinned}: the worker reads these, and its tables follow their "
            f"partitions, so they take kafka.partitions; a count of its own is for {free}"
        )
    wrong = {n: c for n, c in settings.topic_partitions.items() if c < 1}
    if wrong:
        raise ValueError(f"kafka.topic_partitions gives {wrong}: a topic needs at least 1 partition")


def ensure_topics(
    settings: KafkaSettings, *, specs: Iterable[TopicSpec] = TOPICS, timeout_s: float = 30.0
) -> list[str]:
    """Create the missing topics with the configured partition counts; return the names created.

    A topic that exists keeps its partitions (Kafka cannot take partitions away)."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    check_topic_partitions(settings)

    admin = KafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.client_id}-admin",
        request_timeout_ms=int(timeout_s * 1000),
    )
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(
                settings.topic(spec.name),
                num_partitions=settings.partitions_of(spec.name),
                replication_factor=settings.replication_factor,
                topic_configs=spec.config,
            )
            for spec in specs
            if settings.topic(spec.name) not in existing
        ]
        created: list[str] = []
        for topic in wanted:
            try:
                admin.create_topics([topic], timeout_ms=int(timeout_s * 1000))
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()


def wait_until_ready_for_group(
    settings: KafkaSettings, group_id: str, topics: Iterable[str], *, timeout_s: float = 90.0
) -> None:
    """Return once the broker's metadata lists every topic with a leader for each partition, and the
    coordinator of ``group_id`` answers.

    A consumer that joins a group on a broker that has just started, or just created the topics, can
    sync the group with metadata that lacks them and sit with no partitions until its metadata ages
    out (five minutes in aiokafka). Raises TimeoutError saying what was still missing.
    """
    import time

    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    wanted = sorted(set(topics))
    deadline = time.monotonic() + timeout_s
    missing = "the broker did not answer"
    admin = None
    try:
        while True:
            try:
                if admin is None:
                    admin = KafkaAdminClient(
                        bootstrap_servers=settings.bootstrap_servers, client_id=f"{settings.client_id}-admin"
                    )
                not_led = [
                    t["name"]
                    for t in admin.describe_topics(wanted)
                    if t["error_code"]
                    or not t["partitions"]
                    or any(p["leader_id"] < 0 for p in t["partitions"])
                ]
                if not_led:
                    missing = f"no leader yet for every partition of {', '.join(not_led)}"
                else:
                    admin.list_group_offsets(group_id)  # finds the group's coordinator, or raises
                    return
            except KafkaError as exc:
                missing = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Kafka at {settings.bootstrap_servers} is not ready for consumer group {group_id!r} "
                    f"after {timeout_s:.0f} s: {missing}"
                )
            time.sleep(0.25)
    finally:
        if admin is not None:
            admin.close()
