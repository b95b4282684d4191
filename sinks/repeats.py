"""Records the stream sent twice: found in the batch and in ClickHouse, and left out of the insert.

The stream (Faust) is at-least-once: a worker that dies between sending its outputs and acking its
input sends them again after the restart, so the same accepted review (same ``event_id``), ledger event
(same ``event_id``) or alert (same ``alert_id``) can sit twice in its topic, at different offsets. The
writer's batch tokens cannot see that (two offsets are two records to them), so before each insert the
writer keeps only the first copy of each identity within the batch (:func:`first_copies`) and asks
ClickHouse which of the remaining identities it holds already (:func:`lookup`), bounded by the key the
topic is partitioned by and by the records' own times, so that the question reads a few granules, not
the table. What is left is inserted; the materialized views see only new rows, so every rollup stays
exact. docs/clickhouse.md walks through the crash cases.

Copies of one record always travel in the same partition (reviews and alerts are keyed by unit code,
ledger events by ticket id), and one writer inserts one partition's batches one after the other, so
the lookup never races another insert of the same record (except a batch's own redo after a crash,
which its deduplication token covers).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

# Records further apart than this in time are looked up as separate ranges, so one late review (an SMS
# reply hours after the visit) does not widen the lookup over every hour in between.
RANGE_GAP_MS = 10 * 60 * 1000
# ClickHouse keeps milliseconds; the margin absorbs any rounding between the record's text and the row.
MARGIN_MS = 1000
BATCH_COLUMN = "sink_batch"  # the token of the batch that wrote the row (sinks/schema.py, migration 2)
MAX_RANGES = 16  # beyond this the closest ranges are merged: one query, a bounded WHERE
# The embedded engine (chdb://) takes no external data: there the ids go into the query text as quoted
# literals, which the server parses far slower (0.3 s for 20,000 ids), hence the limit it needs.
MAX_QUERY_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Identity:
    """How a table's records are told apart, and what bounds the search for a copy."""

    id_field: str  # unique per record, equal in every copy
    key_field: str  # the topic's partition key: copies share it, and it leads the table's sort key
    time_field: str  # the record's own time (not the time it was sent): equal in every copy


IDENTITY_OF_TABLE: dict[str, Identity] = {
    "reviews": Identity("event_id", "unit_code", "rated_at"),
    "ticket_events": Identity("event_id", "ticket_id", "at"),
    "alerts": Identity("alert_id", "unit_code", "at"),
}


@dataclass(frozen=True)
class Keyed:
    index: int  # position in the batch
    id: str
    key: str
    at_ms: int  # Unix milliseconds


@dataclass(frozen=True)
class Scan:
    """A batch read for identities: which positions to keep, and who they are."""

    keep: list[int]  # positions of the first copies, and of records without a readable identity
    keyed: list[Keyed]  # the kept records whose identity could be read (to look up in ClickHouse)
    repeats_in_batch: int


def first_copies(values: Sequence[bytes], identity: Identity) -> Scan:
    """Keep the first copy of each identity in the batch (offset order).

    A record whose identity cannot be read (not JSON, a field missing) is kept as it is: ClickHouse
    refuses it or takes it, and the writer's dead-letter path handles a refusal.
    """
    seen: set[str] = set()
    keep: list[int] = []
    keyed: list[Keyed] = []
    repeats = 0
    for i, raw in enumerate(values):
        found = _identity(raw, identity)
        if found is None:
            keep.append(i)
            continue
        rid, key, at_ms = found
        if rid in seen:
            repeats += 1
            continue
        seen.add(rid)
        keep.append(i)
        keyed.append(Keyed(i, rid, key, at_ms))
    return Scan(keep, keyed, repeats)


def _identity(raw: bytes, identity: Identity) -> tuple[str, str, int] | None:
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict):
        return None
    rid, key, at = (
        record.get(identity.id_field),
        record.get(identity.key_field),
        record.get(identity.time_field),
    )
    if not isinstance(rid, str) or not rid or not isinstance(key, str) or not isinstance(at, str):
        return None
    try:
        moment = datetime.fromisoformat(at)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None  # the contract's times carry their offset; a bare one cannot bound a search
    return rid, key, math.floor(moment.timestamp() * 1000)


def time_ranges(
    times_ms: Sequence[int], gap_ms: int = RANGE_GAP_MS, max_ranges: int = MAX_RANGES
) -> list[tuple[int, int]]:
    """Cover every time with few, tight ranges ``[lo, hi]`` (milliseconds, margins included)."""
    if not times_ms:
        return []
    ordered = sorted(times_ms)
    ranges: list[list[int]] = [[ordered[0], ordered[0]]]
    for t in ordered[1:]:
        if t - ranges[-1][1] > gap_ms:
            ranges.append([t, t])
        else:
            ranges[-1][1] = t
    while len(ranges) > max_ranges:
        # Merge across the smallest gap: the extra time read is the least.
        i = min(range(len(ranges) - 1), key=lambda j: ranges[j + 1][0] - ranges[j][1])
        ranges[i : i + 2] = [[ranges[i][0], ranges[i + 1][1]]]
    return [(lo - MARGIN_MS, hi + MARGIN_MS) for lo, hi in ranges]


def quote(text: str) -> str:
    """A ClickHouse string literal: backslash and quote escaped, so any text stays one value."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _tsv(values: Sequence[str]) -> bytes:
    """One value a line, escaped as TabSeparated wants it."""
    return "\n".join(
        v.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n") for v in values
    ).encode()


def _when(identity: Identity, keyed: Sequence[Keyed]) -> str:
    return " OR ".join(
        f"{identity.time_field} BETWEEN fromUnixTimestamp64Milli({int(lo)}) AND fromUnixTimestamp64Milli({int(hi)})"
        for lo, hi in time_ranges([k.at_ms for k in keyed])
    )


def lookup_query(table: str, identity: Identity, keyed: Sequence[Keyed], *, inline: bool = False) -> str:
    """The question "which of these does ``table`` hold, written by which batch?", bounded by key and time.

    The keys and ids are the external tables ``_keys`` and ``_ids`` sent with the query, or with
    ``inline`` quoted literals in the text.
    """
    keys, ids = "_keys", "_ids"
    if inline:
        keys = "(" + ", ".join(quote(k) for k in sorted({k.key for k in keyed})) + ")"
        ids = "(" + ", ".join(quote(k.id) for k in keyed) + ")"
    return (
        f"SELECT DISTINCT {identity.id_field}, {BATCH_COLUMN} FROM {table}"
        f" WHERE {identity.key_field} IN {keys} AND ({_when(identity, keyed)}) AND {identity.id_field} IN {ids}"
    )


def lookup(client: Any, table: str, identity: Identity, scan: Scan) -> list[tuple[str, str]]:
    """(id, batch token) of the scan's records that ``table`` holds already."""
    if not scan.keyed:
        return []
    from clickhouse_connect.driver.exceptions import NotSupportedError
    from clickhouse_connect.driver.external import ExternalData

    # Sent as data, 20,000 ids cost the server a few milliseconds.
    tables = ExternalData(
        file_name="_keys", data=_tsv(sorted({k.key for k in scan.keyed})), structure=["key String"]
    )
    tables.add_file(file_name="_ids", data=_tsv([k.id for k in scan.keyed]), structure=["id String"])
    try:
        rows = client.query(lookup_query(table, identity, scan.keyed), external_data=tables).result_rows
    except NotSupportedError:
        rows = client.query(
            lookup_query(table, identity, scan.keyed, inline=True),
            settings={"max_query_size": MAX_QUERY_BYTES},
        ).result_rows
    return [(str(r[0]), str(r[1])) for r in rows]


def new_positions(client: Any, table: str, values: Sequence[bytes], token: str) -> tuple[list[int], int]:
    """Positions of the records to insert (in order), and how many were left out as repeats.

    A record ClickHouse holds from *another* batch is a repeat. One it holds from *this* batch (its
    ``token``) was written by an earlier attempt of this very batch, cut short after the insert: it is
    inserted again with the rest, so the block is the same as the first time, and ClickHouse's token
    deduplication drops it from ``reviews`` and from every rollup alike, or writes to a rollup the
    block it lacks if ClickHouse itself died between the table and its views.
    """
    identity = IDENTITY_OF_TABLE.get(table.rsplit(".", 1)[-1])
    if identity is None:
        return list(range(len(values))), 0
    scan = first_copies(values, identity)
    elsewhere = {rid for rid, batch in lookup(client, table, identity, scan) if batch != token}
    if not elsewhere:
        return scan.keep, scan.repeats_in_batch
    dropped = {k.index for k in scan.keyed if k.id in elsewhere}
    return [i for i in scan.keep if i not in dropped], scan.repeats_in_batch + len(dropped)


# "{" and every byte bytes.rstrip() strips: after them the record needs the general path.
_NOT_AFTER_A_VALUE = frozenset(b"{ \t\n\r\x0b\x0c")


def marker(token: str) -> Callable[[bytes], bytes]:
    """:func:`mark` for one batch: the same bytes, made with one concatenation for the usual record.

    A record the stream wrote (orjson: compact, ending in the ``}`` that closes a value) only needs its
    last byte replaced; anything else (trailing space, ``{}``, not an object) goes through :func:`mark`.
    (0.1 us a record instead of 0.7, of the 11 us the writer spends on a review.)
    """
    suffix = b',"' + BATCH_COLUMN.encode() + b'":' + orjson.dumps(token) + b"}"

    def mark_one(value: bytes) -> bytes:
        if len(value) > 1 and value[-1] == 0x7D and value[-2] not in _NOT_AFTER_A_VALUE:  # 0x7D: "}"
            return value[:-1] + suffix
        return mark(value, token)

    return mark_one


def mark(value: bytes, token: str) -> bytes:
    """The record with the batch that writes it (column ``sink_batch``); a non-object stays as it is."""
    body = value.rstrip()
    if not body.endswith(b"}"):
        return value
    field = b'"' + BATCH_COLUMN.encode() + b'":' + orjson.dumps(token)
    inner = body[:-1].rstrip()
    return inner + (b"," if not inner.endswith(b"{") else b"") + field + b"}"
