"""How many records wait on a consumer's partitions, as the broker says: for the liveness checks
(``haochaping/liveness.py``) of the stream worker and of the sink, which must see a backlog even when the
consumer's own client has stopped fetching (its high watermarks are those of its last fetch, and a
partition assigned since has none).

A client of its own, apart from the consumer (which may be the very thing that is stuck): kafka-python,
on a thread of its own, asked only when the consumer has not moved since the last check.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from haochaping.settings import KafkaSettings

log = logging.getLogger(__name__)

TIMEOUT_MS = 10_000


class Partition(Hashable, Protocol):
    """Faust's ``TP``, aiokafka's or kafka-python's ``TopicPartition``: anything with these two."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...


P = TypeVar("P", bound=Partition)


class Backlog:
    """``owner`` names the client to the broker: ``<kafka.client_id>-<owner>-liveness``."""

    def __init__(self, kafka: KafkaSettings, timeout_ms: int = TIMEOUT_MS, *, owner: str = "streams") -> None:
        self._kafka = kafka
        self._timeout_ms = timeout_ms
        self._owner = owner
        self._client: Any = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{owner}-backlog")

    async def waiting(self, tps: Iterable[P], committed: Mapping[P, int | None]) -> dict[str, int] | None:
        """Per partition, ``topic[partition]`` → records after the committed offset (after the start of the
        log where the group committed none); None when the broker did not answer (a broker outage is not
        the consumer's stall)."""
        wanted = list(tps)
        if not wanted:
            return {}
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, self._waiting, wanted, dict(committed))
        except Exception as exc:  # the broker is down or slow: no verdict this time
            log.info("could not read the end offsets for the liveness check (%r)", exc)
            return None

    def _waiting(self, tps: list[P], committed: dict[P, int | None]) -> dict[str, int]:
        from kafka import KafkaConsumer, TopicPartition

        if self._client is None:
            self._client = KafkaConsumer(
                bootstrap_servers=self._kafka.bootstrap_servers,
                client_id=f"{self._kafka.client_id}-{self._owner}-liveness",
                request_timeout_ms=self._timeout_ms + 1000,
                bootstrap_timeout_ms=self._timeout_ms,
                enable_auto_commit=False,
            )
        parts = [TopicPartition(tp.topic, tp.partition) for tp in tps]
        ends = self._client.end_offsets(parts, timeout_ms=self._timeout_ms)
        never = [p for tp, p in zip(tps, parts, strict=True) if committed.get(tp) is None]
        starts = self._client.beginning_offsets(never, timeout_ms=self._timeout_ms) if never else {}
        out = {}
        for tp, part in zip(tps, parts, strict=True):
            base = committed.get(tp)
            if base is None:
                base = starts.get(part, 0)
            out[f"{tp.topic}[{tp.partition}]"] = max(0, ends.get(part, 0) - base)
        return out

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self._pool.shutdown(wait=False)
