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

A producer that cannot deliver is replaced. kafka-python 3.0.12's idempotent producer can wedge for
good after an outage: when a batch that was already sent (and is being retried) expires, the sender
resets the producer id (``TransactionManager.reset_producer_id``) but leaves the state at READY, and
``init_producer_id`` only asks for a new id from UNINITIALIZED. The sender then waits for an id that
is never requested, drains nothing and expires nothing: every later record waits out the request's
own timeout, even after the broker is back. Ingest therefore replaces the producer at once when its
transaction manager shows that state (or a fatal / abortable error), and after any run of failures
longer than ``producer_reset_after_seconds`` with no acknowledgement in between. The old producer is
force-closed: records it still holds fail (their senders get 503) and are never delivered later.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, NamedTuple, NoReturn, Protocol

from haochaping.settings import Settings

log = logging.getLogger(__name__)


class BrokerUnavailable(RuntimeError):
    """Kafka did not acknowledge in time; the sender should retry after a while."""

    def __init__(self, message: str, error: str = "Unavailable") -> None:
        super().__init__(message)
        self.error = error  # a short class name for the metric label


# Named tuples rather than frozen dataclasses: one is made per record, and a frozen dataclass's
# __init__ (object.__setattr__ per field) cost more than appending the record to the producer.
class Delivered(NamedTuple):
    topic: str
    partition: int
    offset: int


class OutgoingRecord(NamedTuple):
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
        self._append: _Appender | None = None  # set with each new producer
        self._connect_lock = asyncio.Lock()
        self._known_topics: set[str] = set()
        self._on_error = on_error or (lambda topic, error: None)
        self._closed = False
        self._retry_connect_at = 0.0
        # Readiness: the first failure of the current run of failures (None while writes succeed).
        # A fresh producer that reached the cluster clears it too, or a pod taken out of service for
        # being unready would never get the request that proves it ready again.
        self._failing_since: float | None = None
        # Logging: the outage is logged when it starts and when Kafka acknowledges again, once each.
        self._outage_since: float | None = None
        self._refused_in_outage = 0
        self._replaced_in_outage = 0
        self._closing: set[asyncio.Task[None]] = set()
        self._connecting: asyncio.Task[None] | None = None

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
            "partitioner": _cached_key_partitioner(),
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
                from kafka.record import util as record_util

                if record_util.crc32c_c is None:
                    # kafka-python then checksums every record batch in pure Python: on the batch
                    # endpoint that was a fifth of all CPU.
                    log.warning(
                        "the crc32c package is not installed: Kafka record checksums run in pure Python"
                    )

                try:
                    producer = await asyncio.to_thread(KafkaProducer, **self._config())
                    self._append = _Appender.for_producer(producer)
                    self._producer = producer
                except Exception as exc:
                    self._retry_connect_at = time.monotonic() + 1.0
                    self._failed("-", type(exc).__name__, f"cannot connect: {exc}")
                    raise BrokerUnavailable("cannot connect to Kafka", type(exc).__name__) from exc
                # A fresh producer reached the cluster: ready again (deliveries will tell otherwise).
                self._failing_since = None
        finally:
            self._connect_lock.release()
        return self._producer

    def _not_connected(self) -> NoReturn:
        self._failed("-", "NotConnected", "cannot connect")
        raise BrokerUnavailable("cannot connect to Kafka (trying again shortly)", "NotConnected")

    async def _ensure_topic(self, producer: Any, topic: str) -> None:
        if topic in self._known_topics:
            return
        try:
            partitions = await asyncio.to_thread(producer.partitions_for, topic)
        except Exception as exc:
            self._failed(topic, type(exc).__name__, "no metadata")
            raise BrokerUnavailable(f"no metadata for topic {topic}", type(exc).__name__) from exc
        if not partitions:
            self._failed(topic, "UnknownTopic", "the topic does not exist")
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
        self._replace_if_stuck()
        producer = await self._ensure()
        append = self._append
        assert append is not None  # made with the producer
        for topic in {r.topic for r in records}:
            if not append.knows(topic):  # metadata dropped the topic: ask again, off the event loop
                self._known_topics.discard(topic)
            await self._ensure_topic(producer, topic)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        # One hop back to the event loop per request, not per record: each hop wakes the loop through
        # its self-pipe, which costs more than the record under the GIL.
        waiter = _AllDelivered(loop, done, len(records))
        try:
            futures = append(records)
        except Exception as exc:
            topic = records[0].topic
            self._failed(topic, type(exc).__name__, "send refused", producer)
            raise BrokerUnavailable("Kafka refused the record", type(exc).__name__) from exc
        for future in futures:
            future.add_callback(waiter.delivered)
            future.add_errback(waiter.failed)
        deadline = self._settings.ingest.delivery_timeout_seconds + 1.0
        try:
            await asyncio.wait_for(done, timeout=deadline)
        except TimeoutError as exc:
            self._failed(records[0].topic, "Timeout", "no acknowledgement in time", producer)
            self._replace_if_stuck()
            raise BrokerUnavailable("Kafka did not acknowledge in time", "Timeout") from exc
        except BrokerUnavailable as exc:
            self._failed(records[0].topic, exc.error, "not acknowledged", producer)
            self._replace_if_stuck()
            raise
        self._delivered()
        return [Delivered(m.topic, m.partition, m.offset) for m in (future.value for future in futures)]

    async def send(self, topic: str, key: bytes | None, value: bytes) -> Delivered:
        return (await self.send_all([OutgoingRecord(topic, key, value)]))[0]

    # -- health ---------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """A producer reached the cluster (it may still fail to deliver: see :attr:`ready`)."""
        return self._producer is not None

    @property
    def ready(self) -> bool:
        """Connected, and the last write was acknowledged (or the producer is fresh): /readyz."""
        return self._producer is not None and self._failing_since is None

    def check(self) -> bool:
        """For /readyz: replace a stuck producer and start connecting in the background; never waits.

        Probes keep calling this while no request arrives (an unready pod gets none), so recovery does
        not depend on traffic.
        """
        self._replace_if_stuck()
        idle = self._connecting is None or self._connecting.done()
        if (
            idle
            and self._producer is None
            and not self._closed
            and time.monotonic() >= self._retry_connect_at
        ):
            self._connecting = asyncio.get_running_loop().create_task(self._connect_quietly())
        return self.ready

    async def _connect_quietly(self) -> None:
        with contextlib.suppress(BrokerUnavailable):  # counted and logged by _ensure
            await self._ensure()

    def _failed(self, topic: str, error: str, what: str, producer: Any = None) -> None:
        self._on_error(topic, error)
        if producer is not None and producer is not self._producer:
            return  # a replaced producer's records failing as it is closed say nothing of the new one
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        self._refused_in_outage += 1
        if self._outage_since is None:
            self._outage_since = now
            log.warning(
                "Kafka at %s is not acknowledging writes (%s: %s on %s): answering 503 until it does",
                self._settings.kafka.bootstrap_servers,
                what,
                error,
                topic,
            )

    def _delivered(self) -> None:
        self._failing_since = None
        if self._outage_since is not None:
            log.warning(
                "Kafka acknowledges writes again after %.1f s (%d failed attempts answered 503; "
                "producer replaced %d times)",
                time.monotonic() - self._outage_since,
                self._refused_in_outage,
                self._replaced_in_outage,
            )
            self._outage_since = None
            self._refused_in_outage = 0
            self._replaced_in_outage = 0

    def _replace_if_stuck(self) -> None:
        producer = self._producer
        if producer is None:
            return
        reason = stuck_reason(producer)
        if reason is None and self._failing_since is not None:
            failing_for = time.monotonic() - self._failing_since
            if failing_for >= self._settings.ingest.producer_reset_after_seconds:
                reason = f"no write acknowledged for {failing_for:.1f} s"
        if reason is None:
            return
        log.info("replacing the Kafka producer: %s", reason)
        self._producer = None
        self._known_topics.clear()
        self._replaced_in_outage += 1
        # A new run of failures starts with the new producer; until it connects, ready is False anyway.
        self._failing_since = None
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(_force_close, producer))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self, timeout: float = 5.0) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        producer, self._producer = self._producer, None
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        if producer is not None:
            started = time.monotonic()
            if stuck_reason(producer) is not None:
                await asyncio.to_thread(_force_close, producer)
            else:
                try:
                    await asyncio.to_thread(producer.close, timeout)
                except Exception as exc:  # records still unacknowledged: their senders got 503
                    log.warning(
                        "Kafka producer did not flush in %.1f s (%s); closing it anyway", timeout, exc
                    )
                    await asyncio.to_thread(_force_close, producer)
            log.info("Kafka producer closed in %.2fs", time.monotonic() - started)


def _cached_key_partitioner() -> Any:
    """Kafka's default placement of a keyed record (murmur2 of the key modulo the partition count,
    the same as every Kafka client), remembered per key: kafka-python's murmur2 is pure Python and
    ingest's keys (unit codes, order ids) repeat."""
    from kafka.partitioner.default import DefaultPartitioner

    class CachedKeyPartitioner(DefaultPartitioner):  # type: ignore[misc]
        def __init__(self) -> None:
            self._placed: dict[tuple[str, bytes, int], int] = {}

        def partition(
            self, topic: str, key: Any, serialized_key: Any, value: Any, serialized_value: Any, cluster: Any
        ) -> Any:
            if serialized_key is None:
                return super().partition(topic, key, serialized_key, value, serialized_value, cluster)
            partitions = cluster.partitions_for_topic(topic)
            # The partition count is part of the key: a topic that grows gets fresh placements.
            place = (topic, bytes(serialized_key), len(partitions) if partitions else 0)
            found = self._placed.get(place)
            if found is None:
                found = super().partition(topic, key, serialized_key, value, serialized_value, cluster)
                if len(self._placed) >= 100_000:
                    self._placed.clear()
                self._placed[place] = found
            return found

    return CachedKeyPartitioner()


class _Appender:
    """Puts a request's records into kafka-python's record accumulator, as ``send()`` would, in one go.

    ``KafkaProducer.send()`` costs more per record than appending the record: checks of headers and
    serializers we do not use, a partitioner call that first copies the set of all known topics, a
    size estimate, a debug log line whose producer name is formatted every time, and a wake-up of the
    sender thread (a GIL hand-over) for every new batch. On the batch endpoint that was a third of the
    producer's cost. Here the same steps are taken once per request where they can be: the same
    partitioner (so the same placement), the accumulator's own ``append`` (so the same batches,
    sequence numbers and futures), the size checked against ``max_request_size`` exactly when a record
    comes near it, and the sender woken once at the end if a batch is new or full.

    This uses private parts of kafka-python (``_accumulator``, ``_metadata``, ``_sender``, ``_closed`` and
    the size checks; pinned at 3.0.x): a producer without them gets plain ``send()`` per record, with a
    warning when it is made. A record that fails part-way through a request leaves the records before it
    in the accumulator, as a failing ``send()`` did: the request gets 503 and its retry is a duplicate
    that the pipeline counts once (event ids).
    """

    def __init__(self, producer: Any, *, bulk: bool) -> None:
        self._producer = producer
        self.bulk = bulk
        if bulk:
            from kafka.structs import TopicPartition

            self._accumulator_append = producer._accumulator.append
            self._metadata = producer._metadata
            self._sender = producer._sender
            self._partitioner = producer.config["partitioner"]
            self._max_request_size = producer.config["max_request_size"]
            self._places: dict[tuple[str, int], Any] = {}
            self._topic_partition = TopicPartition

    @classmethod
    def for_producer(cls, producer: Any) -> _Appender:
        try:
            accumulator = producer._accumulator
            inspect.signature(accumulator.append).bind(None, None, b"", b"", [], now=0.0)
            ok = all(
                (
                    callable(producer._metadata.partitions_for_topic),
                    callable(producer._sender.wakeup),
                    callable(producer._estimate_size_in_bytes),
                    callable(producer._ensure_valid_record_size),
                    isinstance(producer._closed, bool),
                    "partitioner" in producer.config and "max_request_size" in producer.config,
                )
            )
        except (AttributeError, TypeError, ValueError):
            ok = False
        if not ok:
            log.warning("this kafka-python has other internals than 3.0.x: ingest sends record by record")
        return cls(producer, bulk=ok)

    def knows(self, topic: str) -> bool:
        """The producer has partitions for the topic (``send()`` would block the loop to fetch them)."""
        return not self.bulk or self._metadata.partitions_for_topic(topic) is not None

    def __call__(self, records: Sequence[OutgoingRecord]) -> list[Any]:
        """Each record's future (kafka-python's FutureRecordMetadata), in the order given."""
        producer = self._producer
        if not self.bulk:
            return [producer.send(topic, key=key, value=value) for topic, key, value in records]
        from kafka import errors

        if producer._closed:
            raise errors.IllegalStateError("KafkaProducer already closed!")
        partition_of = self._partitioner.partition
        metadata = self._metadata
        places = self._places
        append = self._accumulator_append
        near_limit = self._max_request_size - 1024  # the batch header and varints stay well under 1 KiB
        now = time.monotonic()
        futures: list[Any] = []
        wake = False
        try:
            for topic, key, value in records:
                if key is None:  # sticky placement of keyless records: leave it to send()
                    futures.append(producer.send(topic, value=value))
                    continue
                if len(key) + len(value) > near_limit:
                    producer._ensure_valid_record_size(producer._estimate_size_in_bytes(key, value, []))
                partition = partition_of(topic, key, key, value, value, metadata)
                place = places.get((topic, partition))
                if place is None:
                    place = places[(topic, partition)] = self._topic_partition(topic, partition)
                future, batch_is_full, new_batch, _ = append(place, None, key, value, [], now=now)
                wake = wake or batch_is_full or new_batch
                futures.append(future)
        finally:
            if wake:
                self._sender.wakeup()
        return futures


def stuck_reason(producer: Any) -> str | None:
    """Why this kafka-python producer will never deliver again, or None when it may.

    Reads the producer's transaction manager (private to kafka-python, pinned at 3.0.x: anything
    unexpected reads as "may deliver", and the run-of-failures rule still applies).
    """
    manager = getattr(producer, "_transaction_manager", None)
    if manager is None:
        return None
    try:
        if manager.has_fatal_error():
            return f"its idempotence state has a fatal error ({manager.last_error!r})"
        if manager.has_abortable_error():
            return f"its idempotence state has an abortable error ({manager.last_error!r})"
        state = getattr(manager._current_state, "name", "")
        if state == "READY" and not manager.has_producer_id():
            # kafka-python 3.0.12: reset_producer_id() after an expired retried batch leaves READY
            # without an id, and no InitProducerId is ever sent again (see the module docstring).
            return "its producer id was reset after expired batches and is never requested again"
    except Exception:  # a kafka-python whose internals differ: rely on the failure run instead
        return None
    return None


def _force_close(producer: Any) -> None:
    """Close without delivering what is left: those records' senders were (or will be) answered 503."""
    sender = getattr(producer, "_sender", None)
    try:
        if sender is not None:
            sender.force_close()  # fails the pending batches' futures, so close() does not wait on them
        producer.close(1.0)
    except Exception as exc:
        log.debug("closing a replaced Kafka producer: %s", exc)


class _AllDelivered:
    """Counts the acknowledgements of one request's records on the producer's thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, done: asyncio.Future[None], n: int) -> None:
        self._loop = loop
        self._done = done
        self._pending = n
        self._lock = threading.Lock()
        self._finished = False

    def delivered(self, metadata: Any) -> None:
        with self._lock:
            self._pending -= 1
            if self._pending or self._finished:
                return
            self._finished = True
        self._loop.call_soon_threadsafe(_set_result, self._done, None)

    def failed(self, error: BaseException) -> None:
        with self._lock:
            if self._finished:
                return
            self._finished = True
        failure = BrokerUnavailable(
            f"Kafka did not acknowledge: {type(error).__name__}", type(error).__name__
        )
        self._loop.call_soon_threadsafe(_set_exception, self._done, failure)


def _set_result(waiter: asyncio.Future[None], value: None) -> None:
    if not waiter.done():
        waiter.set_result(value)


def _set_exception(waiter: asyncio.Future[None], error: BaseException) -> None:
    if not waiter.done():
        waiter.set_exception(error)
