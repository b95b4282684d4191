"""Batch boundaries: a batch redone after a crash is cut exactly as the first time (no server)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sinks.batches import PartitionBuffer, decode_intent, encode_intent


@given(st.integers(min_value=0, max_value=2**62))
def test_an_intent_reads_back_as_written(last: int) -> None:
    assert decode_intent(encode_intent(last)) == last


def test_metadata_that_is_not_an_intent_means_no_pending_batch() -> None:
    assert decode_intent("") is None
    assert decode_intent(None) is None
    assert decode_intent("written by some other tool") is None
    assert decode_intent("haochaping-sink/1 last=x") is None


offsets_strategy = st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=200).map(
    lambda gaps: [sum(gaps[: i + 1]) for i in range(len(gaps))]  # increasing, with gaps (txn markers)
)


@given(
    offsets_strategy,
    st.integers(min_value=1, max_value=50),
    st.integers(min_value=1, max_value=500),
    st.integers(min_value=0, max_value=10),
)
def test_a_redelivered_batch_has_the_same_rows_and_token(
    offsets: list[int], max_rows: int, restart_rows: int, crash_at: int
) -> None:
    # The first writer cuts batches by size; it "crashes" after inserting batch number crash_at.
    first = PartitionBuffer("reviews.accepted", 0, start=0)
    for o in offsets:
        first.add(o, f"v{o}".encode(), now=0.0)
    batches = []
    while first.ready(0.0, max_rows, 10.0) and len(batches) <= crash_at:
        batch = first.cut(0.0, max_rows)
        assert batch is not None
        batches.append(batch)
        if len(batches) <= crash_at:
            first.written(batch)
    if not batches:
        return
    crashed = batches[-1]
    # The next writer starts from the committed offset with the intent, and with other bounds.
    again = PartitionBuffer("reviews.accepted", 0)
    again.reset(crashed.start, decode_intent(encode_intent(crashed.last)))
    for o in offsets:
        again.add(o, f"v{o}".encode(), now=100.0)
    assert again.ready(100.0, restart_rows, 0.0)
    redo = again.cut(100.0, restart_rows)
    assert redo == crashed
    assert redo.token == crashed.token


def test_without_an_intent_a_batch_is_cut_by_size_or_age() -> None:
    buf = PartitionBuffer("alerts", 2, start=10)
    buf.add(10, b"a", now=0.0)
    buf.add(12, b"b", now=0.5)
    assert not buf.ready(0.9, max_rows=5, max_age=1.0)
    assert buf.ready(1.0, max_rows=5, max_age=1.0)
    assert buf.ready(0.6, max_rows=2, max_age=1.0)
    batch = buf.cut(1.0, max_rows=5)
    assert batch is not None
    assert (batch.start, batch.last, batch.values, batch.token) == (10, 12, (b"a", b"b"), "alerts:2:10-12")
    buf.written(batch)
    assert buf.start == 13 and len(buf) == 0


def test_an_intent_whose_records_were_trimmed_from_the_log_is_dropped() -> None:
    buf = PartitionBuffer("alerts", 0)
    buf.reset(5, 9)
    buf.add(20, b"x", now=0.0)  # retention removed 5..19 before anyone redid the batch
    assert buf.ready(0.0, max_rows=100, max_age=1.0)
    assert buf.cut(0.0, max_rows=100) is None
    assert buf.bound is None and buf.start == 20
