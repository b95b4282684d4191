"""Prometheus metrics of the stream worker (served on ``streams.metrics_port``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_IN = Counter("haochaping_streams_events_in_total", "Records consumed", ["topic"])
EVENTS_OUT = Counter("haochaping_streams_events_out_total", "Records produced", ["topic"])
DEAD_LETTERS = Counter(
    "haochaping_streams_dead_letters_total", "Records sent to the dead-letter topic", ["stage", "reason"]
)
# A duplicate is not an error (a second rating of a case, a retried send): it is counted, not dead-lettered.
REVIEWS_DROPPED = Counter(
    "haochaping_streams_reviews_dropped_total",
    "Valid reviews that were not accepted",
    ["reason"],  # retry | duplicate | follow_up_without_bad_review
)
TICKETS_OPENED = Counter("haochaping_streams_tickets_opened_total", "Tickets opened", ["colour"])
LEDGER_EVENTS = Counter("haochaping_streams_ledger_events_total", "Ledger events emitted", ["type"])
BATCH_SECONDS = Histogram(
    "haochaping_streams_batch_seconds",
    "Time to process one batch, from taking it to acking it",
    ["agent"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
BATCH_SIZE = Histogram(
    "haochaping_streams_batch_size",
    "Records per batch",
    ["agent"],
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
)
DEDUPE_PURGED = Counter(
    "haochaping_streams_dedupe_purged_total",
    "Dedupe keys the purge changed",
    ["what"],  # deleted (beyond the horizon) | stamped (an old value given the day of the purge)
)
REFETCHES = Counter(
    "haochaping_streams_refetches_total",
    "Seeks back to records the consumer fetched and lost before they reached an agent (streams/transport.py)",
    ["topic"],
)
UNDELIVERED = Gauge(
    "haochaping_streams_undelivered_batches",
    "Output batches the producer has held for more than 10 s (offset commits wait for them)",
)
