"""The SMS invitation registry: invitation reference → the case the invitation asked about.

The service that sends invitation SMS is the system of record for which case an invitation is about;
it registers each invitation (``POST /v1/sms/invitations``) before sending it. The gateway then only
has to pass back the reference with the citizen's reply. Registrations are written to a compacted
topic (``sms.invitations``, key = reference, deleted after ``invitation_ttl_days``), and every ingest
process keeps a view of it in memory, read from the beginning of the topic at start-up: so a reply
may reach any ingest process, and a restart loses nothing. Until its view has caught up, a process
answers replies with 503 + Retry-After rather than calling a known reference unknown.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Any

import orjson

from haochaping.settings import Settings
from haochaping.topics import TopicSpec, ensure_topics

log = logging.getLogger(__name__)

TOPIC = "sms.invitations"


def invitation_topic(settings: Settings) -> str:
    return settings.kafka.topic(TOPIC)


def ensure_invitation_topic(settings: Settings, timeout_s: float = 30.0) -> bool:
    """Create the compacted topic if it is missing; True if it was created."""
    retention_ms = settings.ingest.invitation_ttl_days * 24 * 3600 * 1000
    spec = TopicSpec(
        TOPIC,
        "invitation reference",
        "SMS invitations (reference -> case), compacted, kept for the invitation TTL",
        {"cleanup.policy": "compact,delete", "retention.ms": str(retention_ms)},
    )
    return bool(ensure_topics(settings.kafka, specs=[spec], timeout_s=timeout_s))


class InvitationRegistry:
    """The in-memory view of the registry topic, kept current by a consumer thread."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._ttl = timedelta(days=settings.ingest.invitation_ttl_days)
        self._entries: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._caught_up = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        return self._caught_up.is_set()

    def __len__(self) -> int:
        return len(self._entries)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="invitation-registry", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def remember(self, ref: str, invitation: dict[str, Any]) -> None:
        """Make a just-acknowledged registration visible in this process at once."""
        with self._lock:
            self._entries[ref] = invitation

    def get(self, ref: str, now: datetime) -> dict[str, Any] | None:
        with self._lock:
            entry = self._entries.get(ref)
        if entry is None:
            return None
        registered = datetime.fromisoformat(entry["registered_at"])
        return entry if now - registered <= self._ttl else None

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        ref = key.decode(errors="replace")
        with self._lock:
            if value is None:  # a tombstone
                self._entries.pop(ref, None)
                return
            try:
                self._entries[ref] = orjson.loads(value)
            except orjson.JSONDecodeError:
                log.warning("skipping an unreadable invitation record under ref %r", ref)

    def _run(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        topic = invitation_topic(self._settings)
        while not self._stop.is_set():
            consumer = None
            try:
                consumer = KafkaConsumer(
                    bootstrap_servers=self._settings.kafka.bootstrap_servers.split(","),
                    client_id=f"{self._settings.kafka.client_id}-ingest-invitations",
                    group_id=None,
                    enable_auto_commit=False,
                    request_timeout_ms=10_000,
                    bootstrap_timeout_ms=5_000,
                )
                partitions = consumer.partitions_for_topic(topic)
                if not partitions:
                    raise RuntimeError(f"topic {topic} does not exist yet")
                assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
                consumer.assign(assigned)
                consumer.seek_to_beginning(*assigned)
                end = consumer.end_offsets(assigned)
                while not self._stop.is_set():
                    for records in consumer.poll(timeout_ms=200).values():
                        for record in records:
                            self._apply(record.key, record.value)
                    if not self._caught_up.is_set() and all(
                        consumer.position(tp) >= end[tp] for tp in assigned
                    ):
                        self._caught_up.set()
                        log.info("invitation registry caught up: %d invitations", len(self._entries))
            except Exception as exc:
                log.warning("invitation registry: %s; retrying", exc)
                self._stop.wait(1.0)
            finally:
                if consumer is not None:
                    consumer.close()
