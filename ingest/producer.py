"""The Kafka producer behind every ingest endpoint: an acknowledged write, or a clear "not now".

kafka-python's producer is threaded: ``send()`` appends to a buffer and a sender thread talks to the
broker. Ingest awaits the record's future on the event loop (its callbacks hop back with
``call_soon_threadsafe``) and answers 202 only once the broker acknowledged it with ``acks=all``.

Nothing here may block the event loop: the producer is created in a worker thread (its constructor
contacts the cluster), and a topic's metadata is fetched in a worker thread before the first record
goes to it; after that ``send()`` only appends to the buffer. When the cluster is unreachable the
caller gets :class:`BrokerUnavailable` within ``delivery_timeout_seconds``: the producer's own delivery
timeout is set shorter than the wait, so a record that was refused is never delivered later behind
the sender's back (its retry would then land twice).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

from haochaping.settings import Settings

log = logging.getLogger(__name__)


class BrokerUnavailable(RuntimeError):
    """Kafka did not acknowledge in time; the sender should retry after a while."""

    def __init__(self, message: str, error: str = "Unavailable") -> None:
        super().__init__(message)
        self.error = error  # a short class name for the metric label


@dataclass(frozen=True, slots=True)
class Delivered:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    topic: str
    key: bytes | None
    value: bytes


class ErrorCounter(Protocol):
    def __call__(self, topic: str, error: str) -> None: ...


class EventProducer:
    """One idempotent kafka-python producer shared by all requests of the process."""

    def __init__(self, settings: Settings, *, on_error: ErrorCounter | None = None) -> None:
        self._settings = settings
        self._producer: Any = None
        self._connect_lock = asyncio.Lock()
        self._known_topics: set[str] = set()
        self._on_error = on_error or (lambda topic, error: None)
        self._closed = False
        self._retry_connect_at = 0.0

    def _config(self) -> dict[str, Any]:
        ingest = self._settings.ingest
        wait_ms = int(ingest.delivery_timeout_seconds * 1000)
        # The broker must be asked and must answer within the delivery timeout; keep a margin for the
        # sender thread to notice, so the producer's verdict arrives before the request gives up.
        delivery_ms = max(1000, wait_ms - 500)
        request_ms = max(500, delivery_ms - ingest.linger_ms - 200)
        return {
            "bootstrap_servers": self._settings.kafka.bootstrap_servers.split(","),
            "client_id": f"{self._settings.kafka.client_id}-ingest",
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": ingest.linger_ms,
            "delivery_timeout_ms": delivery_ms,
            "request_timeout_ms": request_ms,
            "max_block_ms": int(ingest.connect_timeout_seconds * 1000),
            "bootstrap_timeout_ms": int(ingest.connect_timeout_seconds * 1000),
            "reconnect_backoff_max_ms": 1000,
            "allow_auto_create_topics": False,
            "compression_type": None,
            # Room for a device's whole backlog batch per partition; linger_ms bounds the wait anyway.
            "batch_size": 256 * 1024,
            # kafka-python's own metrics cost CPU on every record; ingest counts what it needs itself.
            "metrics_enabled": False,
        }

    async def _ensure(self) -> Any:
        if self._producer is not None:
            return self._producer
        # Requests wait for a connect in progress at most one connect timeout, and right after a failed
        # one they get their 503 at once: never N requests queued behind N connect timeouts.
        if time.monotonic() < self._retry_connect_at:
            self._not_connected()
        timeout = self._settings.ingest.connect_timeout_seconds
        try:
            await asyncio.wait_for(self._connect_lock.acquire(), timeout=timeout)
        except TimeoutError:
            self._not_connected()
        try:
            if self._producer is None:
                if self._closed:
                    raise BrokerUnavailable("ingest is shutting down")
                if time.monotonic() < self._retry_connect_at:
                    self._not_connected()
                from kafka import KafkaProducer

                try:
                    self._producer = await asyncio.to_thread(KafkaProducer, **self._config())
                except Exception as exc:
                    self._retry_connect_at = time.monotonic() + 1.0
                    self._on_error("-", type(exc).__name__)
                    log.warning(
                        "cannot connect to Kafka at %s: %s", self._settings.kafka.bootstrap_servers, exc
                    )
                    raise BrokerUnavailable("cannot connect to Kafka", type(exc).__name__) from exc
        finally:
            self._connect_lock.release()
        return self._producer

    def _not_connected(self) -> NoReturn:
        self._on_error("-", "NotConnected")
        raise BrokerUnavailable("cannot connect to Kafka (trying again shortly)", "NotConnected")

    async def _ensure_topic(self, producer: Any, topic: str) -> None:
        if topic in self._known_topics:
            return
        try:
            partitions = await asyncio.to_thread(producer.partitions_for, topic)
        except Exception as exc:
            self._on_error(topic, type(exc).__name__)
            raise BrokerUnavailable(f"no metadata for topic {topic}", type(exc).__name__) from exc
        if not partitions:
            self._on_error(topic, "UnknownTopic")
            raise BrokerUnavailable(
                f"topic {topic} does not exist; create the topics first (haochaping topics)", "UnknownTopic"
            )
        self._known_topics.add(topic)

    async def connect(self) -> None:
        """Connect eagerly (at start-up); failure is not fatal, the next request tries again."""
        await self._ensure()

    async def send_all(self, records: Sequence[OutgoingRecord]) -> list[Delivered]:
        """Send records and wait until the broker acknowledged every one, in order per key."""
        if not records:
            return []
        producer = await self._ensure()
        for topic in {r.topic for r in records}:
            await self._ensure_topic(producer, topic)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[Delivered]] = loop.create_future()
        # One hop back to the event loop per request, not per record: each hop wakes the loop through
        # its self-pipe, which costs more than the record under the GIL.
        waiter = _AllDelivered(loop, done, len(records))
        for index, record in enumerate(records):
            try:
                future = producer.send(record.topic, key=record.key, value=record.value)
            except Exception as exc:
                self._on_error(record.topic, type(exc).__name__)
                raise BrokerUnavailable("Kafka refused the record", type(exc).__name__) from exc
            future.add_callback(waiter.delivered, index)
            future.add_errback(waiter.failed)
        deadline = self._settings.ingest.delivery_timeout_seconds + 1.0
        try:
            return await asyncio.wait_for(done, timeout=deadline)
        except TimeoutError as exc:
            self._on_error(records[0].topic, "Timeout")
            raise BrokerUnavailable("Kafka did not acknowledge in time", "Timeout") from exc
        except BrokerUnavailable as exc:
            self._on_error(records[0].topic, exc.error)
            raise

    async def send(self, topic: str, key: bytes | None, value: bytes) -> Delivered:
        return (await self.send_all([OutgoingRecord(topic, key, value)]))[0]

    @property
    def connected(self) -> bool:
        """The producer reached the cluster once; later outages show as 503s and producer errors."""
        return self._producer is not None

    async def close(self, timeout: float = 5.0) -> None:
        self._closed = True
        producer, self._producer = self._producer, None
        if producer is not None:
            started = time.monotonic()
            await asyncio.to_thread(producer.close, timeout)
            log.info("Kafka producer closed in %.2fs", time.monotonic() - started)


class _AllDelivered:
    """Collects the acknowledgements of one request's records on the producer's thread."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, done: asyncio.Future[list[Delivered]], n: int
    ) -> None:
        self._loop = loop
        self._done = done
        self._results: list[Delivered | None] = [None] * n
        self._pending = n
        self._lock = threading.Lock()
        self._finished = False

    def delivered(self, index: int, metadata: Any) -> None:
        with self._lock:
            self._results[index] = Delivered(metadata.topic, metadata.partition, metadata.offset)
            self._pending -= 1
            if self._pending or self._finished:
                return
            self._finished = True
        results = [r for r in self._results if r is not None]
        self._loop.call_soon_threadsafe(_set_result, self._done, results)

    def failed(self, error: BaseException) -> None:
        with self._lock:
            if self._finished:
                return
            self._finished = True
        failure = BrokerUnavailable(
            f"Kafka did not acknowledge: {type(error).__name__}", type(error).__name__
        )
        self._loop.call_soon_threadsafe(_set_exception, self._done, failure)


def _set_result(waiter: asyncio.Future[list[Delivered]], value: list[Delivered]) -> None:
    if not waiter.done():
        waiter.set_result(value)


def _set_exception(waiter: asyncio.Future[list[Delivered]], error: BaseException) -> None:
    if not waiter.done():
        waiter.set_exception(error)
