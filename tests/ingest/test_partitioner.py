"""Ingest places a keyed record where every Kafka client would: murmur2 of the key modulo the count."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2

from ingest.producer import _cached_key_partitioner


class _Cluster:
    """The three questions kafka-python's partitioner asks of its cluster metadata."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts

    def topics(self) -> set[str]:
        return set(self.counts)

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.counts[topic]))

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions_for_topic(topic)


@given(keys=st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=30), count=st.integers(1, 64))
def test_same_partition_as_kafkas_default_also_when_asked_again(keys: list[bytes], count: int) -> None:
    partitioner = _cached_key_partitioner()
    cluster = _Cluster({"t": count})
    for _ in range(2):  # the second round comes from the cache
        for key in keys:
            assert (
                partitioner.partition("t", key, key, b"", b"", cluster) == (murmur2(key) & 0x7FFFFFFF) % count
            )


def test_a_topic_that_grows_gets_the_new_placement() -> None:
    partitioner = _cached_key_partitioner()
    cluster = _Cluster({"t": 3})
    key = b"11330102002495613X"
    assert partitioner.partition("t", key, key, b"", b"", cluster) == (murmur2(key) & 0x7FFFFFFF) % 3
    cluster.counts["t"] = 12
    assert partitioner.partition("t", key, key, b"", b"", cluster) == (murmur2(key) & 0x7FFFFFFF) % 12
