"""The ClickHouse schema: tables, materialized views and views, as versioned migrations.

One source, two renderings. Every table is described once (:class:`Table`, :class:`MaterializedView`,
:class:`View`) and rendered either for a single node (plain ``*MergeTree``) or for a cluster
(``ON CLUSTER``, ``Replicated*MergeTree`` ``<name>_local`` tables on every shard, and a ``Distributed``
front under the plain name). ``haochaping migrate --print [--cluster NAME]`` shows the result.

Exactness (see docs/clickhouse.md): every table the writer inserts into, and every table a materialized
view feeds, keeps a deduplication window (``non_replicated_deduplication_window`` on a single node,
``replicated_deduplication_window`` on a cluster), so an insert repeated with the same
``insert_deduplication_token`` is dropped, and so is the block it would have produced in the rollups.
Checked against ClickHouse 26.9: without the window on the *target* of a materialized view, the view
counts a repeated insert twice even though the source table dropped it.

Empty strings stand for "none" in dimension columns (``hall_id``, ``window_id``, ``staff_id``): they are
sort and grouping keys, and ``Nullable`` keys cost more and are off by default.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

DEDUP_WINDOW = 10_000  # inserts per table remembered for deduplication; far more than one retry needs
TZ = "Asia/Shanghai"  # every figure is cut by the Beijing day, hour and minute


@dataclass(frozen=True)
class Target:
    """Where the DDL goes: a database on one node, or on every node of a cluster."""

    database: str
    cluster: str | None = None
    raw_review_ttl_days: int = 0

    @property
    def on_cluster(self) -> str:
        return f" ON CLUSTER {_ident(self.cluster)}" if self.cluster else ""

    def local(self, name: str) -> str:
        """The table that holds the data: ``<name>_local`` on a cluster, ``<name>`` on one node."""
        return f"{name}_local" if self.cluster else name

    def q(self, name: str) -> str:
        return f"{_ident(self.database)}.{_ident(name)}"


@dataclass(frozen=True)
class Table:
    name: str
    columns: Sequence[str]
    engine: str  # MergeTree family without the Replicated prefix: "MergeTree", "ReplacingMergeTree"
    order_by: str
    engine_args: str = ""
    partition_by: str | None = None
    shard_by: str = "rand()"  # sharding key of the Distributed front
    ttl: Callable[[Target], str | None] = lambda _t: None
    deduplicated: bool = True
    comment: str = ""

    def ddl(self, t: Target) -> list[str]:
        local = t.local(self.name)
        if t.cluster:
            path = f"'/clickhouse/tables/{{shard}}/{t.database}/{local}', '{{replica}}'"
            args = f"{path}, {self.engine_args}" if self.engine_args else path
            engine = f"Replicated{self.engine}({args})"
            window = "replicated_deduplication_window"
        else:
            engine = f"{self.engine}({self.engine_args})"
            window = "non_replicated_deduplication_window"
        cols = ",\n    ".join(self.columns)
        parts = [
            f"CREATE TABLE IF NOT EXISTS {t.q(local)}{t.on_cluster}\n(\n    {cols}\n)",
            f"ENGINE = {engine}",
        ]
        if self.partition_by:
            parts.append(f"PARTITION BY {self.partition_by}")
        parts.append(f"ORDER BY {self.order_by}")
        ttl = self.ttl(t)
        if ttl:
            parts.append(f"TTL {ttl}")
        if self.deduplicated:
            parts.append(f"SETTINGS {window} = {DEDUP_WINDOW}")
        if self.comment:
            parts.append(f"COMMENT {_literal(self.comment)}")
        out = ["\n".join(parts)]
        if t.cluster:
            out.append(
                f"CREATE TABLE IF NOT EXISTS {t.q(self.name)}{t.on_cluster} AS {t.q(local)}\n"
                f"ENGINE = Distributed({_ident(t.cluster)}, {_ident(t.database)}, {_ident(local)}, {self.shard_by})"
            )
        return out


@dataclass(frozen=True)
class MaterializedView:
    """Feeds ``to`` from every block inserted into ``source`` (on a cluster: shard-local to shard-local)."""

    name: str
    source: str
    to: str
    select: str  # with {source} where the source table goes

    def ddl(self, t: Target) -> list[str]:
        return [
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {t.q(t.local(self.name))}{t.on_cluster} "
            f"TO {t.q(t.local(self.to))}\nAS {self.select.format(source=t.q(t.local(self.source)))}"
        ]


@dataclass(frozen=True)
class View:
    """A plain view over the front tables (the Distributed ones on a cluster)."""

    name: str
    select: str  # with {db} for the database

    def ddl(self, t: Target) -> list[str]:
        return [
            f"CREATE VIEW IF NOT EXISTS {t.q(self.name)}{t.on_cluster}\nAS {self.select.format(db=_ident(t.database))}"
        ]


Object = Table | MaterializedView | View


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    objects: Sequence[Object] = ()
    # Statements that are not object creations (ALTERs), rendered per target.
    extra: Callable[[Target], list[str]] = field(default=lambda _t: [])

    def statements(self, t: Target) -> list[str]:
        out: list[str] = []
        for obj in self.objects:
            out.extend(obj.ddl(t))
        out.extend(self.extra(t))
        return out

    def checksum(self, t: Target) -> str:
        # TTL is reconciled after the migrations, so it must not make an applied migration look edited.
        neutral = Target(t.database, t.cluster, 0)
        return hashlib.sha256("\n;\n".join(self.statements(neutral)).encode()).hexdigest()[:16]


# -- the tables -------------------------------------------------------------------------------------

_DIMENSIONS = (
    "region_code LowCardinality(String)",
    "unit_code LowCardinality(String)",
    "hall_id LowCardinality(String)",
    "window_id LowCardinality(String)",
    "staff_id LowCardinality(String)",
    "item_code LowCardinality(String)",
    "channel LowCardinality(String)",
)
_DIMENSION_NAMES = tuple(c.split()[0] for c in _DIMENSIONS)


def _review_ttl(t: Target) -> str | None:
    return review_ttl_clause(t.raw_review_ttl_days)


def review_ttl_clause(days: int) -> str | None:
    return f"toDateTime(rated_at) + INTERVAL {days} DAY DELETE" if days > 0 else None


REVIEWS = Table(
    name="reviews",
    comment="Every accepted review (reviews.accepted), once per Kafka offset.",
    columns=(
        "event_id String",
        "schema_version UInt8 DEFAULT 1",
        "channel LowCardinality(String)",
        "stars UInt8",
        "case_no String",
        "stage LowCardinality(String) DEFAULT 'overall'",
        "region_code LowCardinality(String)",
        "hall_id LowCardinality(String)",
        "unit_code LowCardinality(String)",
        "unit_name LowCardinality(String)",
        "window_id LowCardinality(String)",
        "staff_id LowCardinality(String)",
        "item_code LowCardinality(String)",
        "item_name LowCardinality(String)",
        "device_id LowCardinality(String)",
        f"rated_at DateTime64(3, '{TZ}')",
        f"received_at Nullable(DateTime64(3, '{TZ}'))",
        "tags Array(LowCardinality(String))",
        "text String",
        "real_name Bool",
        "rater_id String",
        "follow_up Bool",
        "sender LowCardinality(String)",
        "fraud_flags Array(LowCardinality(String))",
        # Counts in the official 满意率 / 差评率 / score: the stream's records leave it out and carry the flags.
        "official Bool DEFAULT empty(fraud_flags)",
        f"inserted_at DateTime('{TZ}') DEFAULT now()",
        "satisfied Bool ALIAS stars >= 3",
        "bad Bool ALIAS stars <= 2",
        "score UInt8 ALIAS transform(stars, [1, 2, 3, 4, 5], [0, 3, 6, 8, 10], 0)",
    ),
    engine="MergeTree",
    partition_by="toYYYYMM(rated_at)",
    order_by="(region_code, unit_code, rated_at, event_id)",
    shard_by="cityHash64(unit_code)",
    ttl=_review_ttl,
)

SATISFACTION_MINUTE = Table(
    name="satisfaction_minute",
    comment="Ratings per Beijing minute and dimension, by stars: n1..n5 official, f1..f5 fraud-flagged.",
    columns=(
        f"minute DateTime('{TZ}')",
        *_DIMENSIONS,
        *(f"n{i} UInt64" for i in range(1, 6)),
        *(f"f{i} UInt64" for i in range(1, 6)),
    ),
    engine="SummingMergeTree",
    partition_by="toYYYYMM(minute)",
    order_by="(region_code, unit_code, minute, hall_id, window_id, staff_id, item_code, channel)",
    shard_by="cityHash64(unit_code)",
)

_COUNTS = ",\n    ".join(
    [f"countIf(official AND stars = {i}) AS n{i}" for i in range(1, 6)]
    + [f"countIf(NOT official AND stars = {i}) AS f{i}" for i in range(1, 6)]
)
SATISFACTION_MINUTE_MV = MaterializedView(
    name="satisfaction_minute_mv",
    source="reviews",
    to="satisfaction_minute",
    select=(
        f"SELECT toStartOfMinute(rated_at) AS minute, {', '.join(_DIMENSION_NAMES)},\n    {_COUNTS}\n"
        f"FROM {{source}}\nGROUP BY minute, {', '.join(_DIMENSION_NAMES)}"
    ),
)


def _rollup_view(name: str, bucket: str, fn: str) -> View:
    n = " + ".join(f"n{i}" for i in range(1, 6))
    return View(
        name=name,
        select=(
            f"SELECT {fn}(minute) AS {bucket}, {', '.join(_DIMENSION_NAMES)},\n"
            + "".join(f"    sum(n{i}) AS n{i},\n" for i in range(1, 6))
            + "".join(f"    sum(f{i}) AS f{i},\n" for i in range(1, 6))
            # These refer to the sums above (the aliases), not to the minute columns.
            + f"    {n} AS total,\n"
            "    n3 + n4 + n5 AS satisfied,\n"
            "    n1 + n2 AS bad,\n"
            "    3 * n2 + 6 * n3 + 8 * n4 + 10 * n5 AS score_sum\n"
            "FROM {db}.satisfaction_minute\n"
            f"GROUP BY {bucket}, {', '.join(_DIMENSION_NAMES)}"
        ),
    )


SATISFACTION_HOUR = _rollup_view("satisfaction_hour", "hour", "toStartOfHour")
SATISFACTION_DAY = _rollup_view("satisfaction_day", "day", "toDate")
SATISFACTION_MONTH = _rollup_view("satisfaction_month", "month", "toStartOfMonth")

TICKET_EVENTS = Table(
    name="ticket_events",
    comment="The ledger's audit trail (ledger.events); ticket holds the full snapshot after the event, as JSON.",
    columns=(
        "event_id String",
        "ticket_id String",
        "type LowCardinality(String)",
        f"at DateTime64(3, '{TZ}')",
        "actor String",
        "command_id String",
        "reason String",
        "ticket String",
        "version UInt64 MATERIALIZED JSONExtractUInt(ticket, 'version')",
        "unit_code LowCardinality(String) MATERIALIZED JSONExtractString(ticket, 'unit_code')",
        "status LowCardinality(String) MATERIALIZED JSONExtractString(ticket, 'status')",
        "colour LowCardinality(String) MATERIALIZED JSONExtractString(ticket, 'colour')",
        f"inserted_at DateTime('{TZ}') DEFAULT now()",
    ),
    # Keyed on the event id as well: a ledger that re-emits an event after a restart collapses on merge.
    engine="ReplacingMergeTree",
    partition_by="toYYYYMM(at)",
    order_by="(ticket_id, event_id)",
    shard_by="cityHash64(ticket_id)",
)

_T = "ticket"
_TICKET_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # column, type, expression over the snapshot JSON
    ("ticket_id", "String", f"JSONExtractString({_T}, 'ticket_id')"),
    ("version", "UInt64", f"JSONExtractUInt({_T}, 'version')"),
    ("source", "LowCardinality(String)", f"JSONExtractString({_T}, 'source')"),
    ("source_id", "String", f"JSONExtractString({_T}, 'source_id')"),
    (
        "opened_at",
        f"DateTime64(3, '{TZ}')",
        f"parseDateTime64BestEffort(JSONExtractString({_T}, 'opened_at'), 3, '{TZ}')",
    ),
    ("colour", "LowCardinality(String)", f"JSONExtractString({_T}, 'colour')"),
    ("original_colour", "LowCardinality(String)", f"JSONExtractString({_T}, 'original_colour')"),
    ("reasons", "String", f"JSONExtractRaw({_T}, 'reasons')"),
    ("region_code", "LowCardinality(String)", f"JSONExtractString({_T}, 'region_code')"),
    ("hall_id", "LowCardinality(String)", f"JSONExtractString({_T}, 'hall_id')"),
    ("window_id", "LowCardinality(String)", f"JSONExtractString({_T}, 'window_id')"),
    ("staff_id", "LowCardinality(String)", f"JSONExtractString({_T}, 'staff_id')"),
    ("item_code", "LowCardinality(String)", f"JSONExtractString({_T}, 'item_code')"),
    ("channel", "LowCardinality(String)", f"JSONExtractString({_T}, 'channel')"),
    ("stars", "Nullable(UInt8)", f"JSONExtract({_T}, 'stars', 'Nullable(UInt8)')"),
    ("case_no", "String", f"JSONExtractString({_T}, 'case_no')"),
    ("text", "String", f"JSONExtractString({_T}, 'text')"),
    ("real_name", "Bool", f"JSONExtractBool({_T}, 'real_name')"),
    ("unit_code", "LowCardinality(String)", f"JSONExtractString({_T}, 'unit_code')"),
    ("unit_name", "LowCardinality(String)", f"JSONExtractString({_T}, 'unit_name')"),
    ("responsible_person", "String", f"JSONExtractString({_T}, 'responsible_person')"),
    ("measures", "Array(String)", f"JSONExtract({_T}, 'measures', 'Array(String)')"),
    (
        "callback_due",
        f"DateTime64(3, '{TZ}')",
        f"parseDateTime64BestEffort(JSONExtractString({_T}, 'callback_due'), 3, '{TZ}')",
    ),
    (
        "due",
        f"DateTime64(3, '{TZ}')",
        f"parseDateTime64BestEffort(JSONExtractString({_T}, 'due'), 3, '{TZ}')",
    ),
    ("status", "LowCardinality(String)", f"JSONExtractString({_T}, 'status')"),
    ("warned", "Bool", f"JSONExtractBool({_T}, 'warned')"),
    ("overdue", "Bool", f"JSONExtractBool({_T}, 'overdue')"),
    ("callback_ok", "Nullable(Bool)", f"JSONExtract({_T}, 'callback_ok', 'Nullable(Bool)')"),
    (
        "closed_at",
        f"Nullable(DateTime64(3, '{TZ}'))",
        f"parseDateTime64BestEffortOrNull(JSONExtractString({_T}, 'closed_at'), 3, '{TZ}')",
    ),
    ("calendar_warning", "String", f"JSONExtractString({_T}, 'calendar_warning')"),
    ("last_event", "LowCardinality(String)", "type"),
    ("updated_at", f"DateTime64(3, '{TZ}')", "at"),
)

TICKETS = Table(
    name="tickets",
    comment="The current state of each ticket: read with FINAL (or argMax by version).",
    columns=tuple(f"{name} {typ}" for name, typ, _ in _TICKET_COLUMNS),
    # Keyed on the ticket id alone: assignment may move a ticket to another unit, and a key that held
    # the unit would keep the old row alive beside the new one.
    engine="ReplacingMergeTree",
    engine_args="version",
    partition_by="toYYYYMM(opened_at)",
    order_by="ticket_id",
    shard_by="cityHash64(ticket_id)",
)
TICKETS_MV = MaterializedView(
    name="tickets_mv",
    source="ticket_events",
    to="tickets",
    select="SELECT\n    "
    + ",\n    ".join(f"{expr} AS {name}" for name, _, expr in _TICKET_COLUMNS)
    + "\nFROM {source}",
)

ALERTS = Table(
    name="alerts",
    comment="Alerts for the board (alerts topic).",
    columns=(
        "alert_id String",
        "kind LowCardinality(String)",
        f"at DateTime64(3, '{TZ}')",
        "unit_code LowCardinality(String)",
        "ticket_id String",
        "colour LowCardinality(String)",
        "detail String",
        f"inserted_at DateTime('{TZ}') DEFAULT now()",
    ),
    engine="ReplacingMergeTree",
    partition_by="toYYYYMM(at)",
    order_by="(unit_code, at, alert_id)",
    shard_by="cityHash64(unit_code)",
)

# -- hour and day rollups (migration 2) ------------------------------------------------------------
#
# The minute rollup holds every dimension per minute, so it has nearly as many rows as ``reviews``: fine
# for the live "today per minute" board and the ragged ends of a range, far too big for a month. These
# two answer whole hours and whole days. Each is fed from the inserted block of ``reviews`` by its own
# view that aggregates the block with GROUP BY (one row per bucket and dimensions per insert, not one
# per review), and keeps a deduplication window, so a repeated insert is dropped here as well.
# Counts are UInt32: one bucket of one combination of dimensions never nears four billion ratings, and
# the narrower columns halve what a query over a month reads.


def _rollup_table(name: str, bucket: str, comment: str, dimensions: Sequence[str] = _DIMENSIONS) -> Table:
    names = [d.split()[0] for d in dimensions]
    return Table(
        name=name,
        comment=comment,
        columns=(
            bucket,
            *dimensions,
            *(f"n{i} UInt32" for i in range(1, 6)),
            *(f"f{i} UInt32" for i in range(1, 6)),
        ),
        engine="SummingMergeTree",
        partition_by=f"toYYYYMM({bucket.split()[0]})",
        order_by=f"({', '.join(names[:2])}, {bucket.split()[0]}, {', '.join(names[2:])})",
        shard_by="cityHash64(unit_code)",
    )


# Per hour without staff and item: staff x item x hour is about as many rows as reviews, and hourly
# figures are asked per unit, hall, window or channel. A filter on staff or item at hour granularity is
# answered from the minute rollup (api/queries.py picks the store by the dimensions it needs).
HOURLY_DIMENSIONS = tuple(d for d in _DIMENSIONS if d.split()[0] not in ("staff_id", "item_code"))
SATISFACTION_HOURLY = _rollup_table(
    "satisfaction_hourly",
    f"hour DateTime('{TZ}')",
    "Ratings per Beijing hour, unit, hall, window and channel (no staff, no item), by stars: "
    "n1..n5 official, f1..f5 fraud-flagged.",
    HOURLY_DIMENSIONS,
)
SATISFACTION_DAILY = _rollup_table(
    "satisfaction_daily",
    "day Date",
    "Ratings per Beijing day and dimension, by stars: n1..n5 official, f1..f5 fraud-flagged.",
)


def _dimension_names(table: Table) -> str:
    return ", ".join(c.split()[0] for c in table.columns[1:] if "LowCardinality" in c)


def _rollup_mv(name: str, to: Table, bucket: str) -> MaterializedView:
    dims = _dimension_names(to)
    return MaterializedView(
        name=name,
        source="reviews",
        to=to.name,
        select=(
            f"SELECT {bucket}, {dims},\n    {_COUNTS}\n"
            f"FROM {{source}}\nGROUP BY {bucket.rsplit(' AS ', 1)[-1]}, {dims}"
        ),
    )


SATISFACTION_HOURLY_MV = _rollup_mv(
    "satisfaction_hourly_mv", SATISFACTION_HOURLY, "toStartOfHour(rated_at) AS hour"
)
SATISFACTION_DAILY_MV = _rollup_mv("satisfaction_daily_mv", SATISFACTION_DAILY, "toDate(rated_at) AS day")


def _backfill(t: Target) -> list[str]:
    """Fill the new rollups from the minute rollup, then start their views.

    Run with no writer inserting (``haochaping sink`` migrates before it consumes): a review inserted
    between the backfill's read and the view's creation would be missed, one inserted after the view
    but before the read counted twice. The backfill carries a fixed deduplication token and runs in
    one thread, so a migration cut short and run again inserts the same blocks, which are dropped.
    On a cluster an INSERT cannot go ON CLUSTER: run the same INSERT ... SELECT on each shard's
    ``_local`` tables by hand (documented in docs/clickhouse.md) before the writers start.
    """
    out: list[str] = []
    if not t.cluster:
        sums = ", ".join([f"sum(n{i})" for i in range(1, 6)] + [f"sum(f{i})" for i in range(1, 6)])
        for table, bucket in (
            (SATISFACTION_HOURLY, "toStartOfHour(minute)"),
            (SATISFACTION_DAILY, "toDate(minute)"),
        ):
            dims = _dimension_names(table)
            out.append(
                f"INSERT INTO {t.q(table.name)} SELECT {bucket} AS b, {dims}, {sums}\n"
                f"FROM {t.q(SATISFACTION_MINUTE.name)} GROUP BY b, {dims}\n"
                f"SETTINGS insert_deduplication_token = 'haochaping-migration-2-{table.name}', "
                "max_threads = 1, max_insert_threads = 1"
            )
    out.extend(SATISFACTION_HOURLY_MV.ddl(t))
    out.extend(SATISFACTION_DAILY_MV.ddl(t))
    # Which batch wrote a row: the writer's repeat check (sinks/repeats.py) tells a record another
    # batch wrote (a repeat, left out) from one this batch's own cut-short attempt wrote (sent again,
    # so the token drops it everywhere). Rows from before carry '', i.e. "another batch".
    for table in (REVIEWS, TICKET_EVENTS, ALERTS):
        names = [t.local(table.name)] + ([table.name] if t.cluster else [])
        out.extend(
            f"ALTER TABLE {t.q(name)}{t.on_cluster} ADD COLUMN IF NOT EXISTS sink_batch String DEFAULT ''"
            for name in names
        )
    return out


# -- time-first projections (migration 3) -----------------------------------------------------------
#
# The tables that answer figures are sorted by unit first, so a unit officer's question reads a few
# granules. A supervisor's question over all units and a short time (today per minute, the ragged ends of
# a range) read a granule of every unit instead: over 10 M seeded reviews of 200 units
# (bench/api_bench.py), 1.8 M minute rows for one day, 2.4 M for a 59-minute edge, 1.0 M hourly rows for
# 23 hours, 1.1 M raw rows for a 53-second edge. A projection sorted by time holds the same rows in time
# order inside each part, and ClickHouse reads whichever order touches fewer granules (112 k, 16 k, 41 k
# and 8 k rows for the same questions), so the per-unit path stays as it was. The rollups' projections
# are whole copies (``SELECT *``); the raw one keeps only what a count reads (time, stars, flags and the
# dimensions a filter can name). The day rollup has none: a month of all units is a few granules of it.
#
# What the writer pays, measured here: a second sort and a second part per table and insert, about
# 10 ms of ClickHouse CPU per insert and table, 2.6 us per review in all at 20,000-row batches.
#
# Summing merges collapse rows, so the rollups rebuild their projection after each merge
# (``deduplicate_merge_projection_mode = 'rebuild'``; ClickHouse refuses a projection on a
# SummingMergeTree without that choice). ``MATERIALIZE PROJECTION`` builds it for the parts written
# before, as a background mutation: until it is done those parts are read in unit order, correctly.

TIME_PROJECTION = "by_time"
_REVIEW_PROJECTION_COLUMNS = ("rated_at", "stars", "fraud_flags", *_DIMENSION_NAMES)


def _time_first(
    table: Table, time_column: str, columns: Sequence[str] = ("*",)
) -> Callable[[Target], list[str]]:
    held = {c.split()[0] for c in table.columns}
    dims = [d for d in _DIMENSION_NAMES if d in held]

    def statements(t: Target) -> list[str]:
        name = f"{t.q(t.local(table.name))}{t.on_cluster}"
        out = []
        if table.engine != "MergeTree":
            out.append(f"ALTER TABLE {name} MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild'")
        out.append(
            f"ALTER TABLE {name} ADD PROJECTION IF NOT EXISTS {TIME_PROJECTION}\n"
            f"(SELECT {', '.join(columns)} ORDER BY ({', '.join([time_column, *dims])}))"
        )
        out.append(f"ALTER TABLE {name} MATERIALIZE PROJECTION {TIME_PROJECTION}")
        return out

    return statements


_TIME_FIRST = (
    _time_first(REVIEWS, "rated_at", _REVIEW_PROJECTION_COLUMNS),
    _time_first(SATISFACTION_MINUTE, "minute"),
    _time_first(SATISFACTION_HOURLY, "hour"),
)


def _time_projections(t: Target) -> list[str]:
    return [stmt for statements in _TIME_FIRST for stmt in statements(t)]


SCHEMA_MIGRATIONS = Table(
    name="schema_migrations",
    comment="Which schema migrations were applied, and the checksum of what they ran.",
    columns=(
        "version UInt32",
        "name String",
        "checksum String",
        f"applied_at DateTime('{TZ}') DEFAULT now()",
    ),
    engine="ReplacingMergeTree",
    order_by="version",
    shard_by="version",
    deduplicated=False,
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "reviews, minute rollup and its views, ticket events and tickets, alerts",
        (
            REVIEWS,
            SATISFACTION_MINUTE,
            SATISFACTION_MINUTE_MV,
            SATISFACTION_HOUR,
            SATISFACTION_DAY,
            SATISFACTION_MONTH,
            TICKET_EVENTS,
            TICKETS,
            TICKETS_MV,
            ALERTS,
        ),
    ),
    Migration(
        2,
        "hour and day rollups fed from reviews, filled from the minute rollup",
        (SATISFACTION_HOURLY, SATISFACTION_DAILY),
        extra=_backfill,
    ),
    Migration(
        3,
        "time-first projections of reviews and the minute and hour rollups",
        extra=_time_projections,
    ),
)

# Which table each consumed topic lands in (logical topic names; the prefix is added by the settings).
TABLE_OF_TOPIC: dict[str, str] = {
    "reviews.accepted": REVIEWS.name,
    "ledger.events": TICKET_EVENTS.name,
    "alerts": ALERTS.name,
}


# -- rendering and applying -------------------------------------------------------------------------


def bootstrap_statements(t: Target) -> list[str]:
    return [f"CREATE DATABASE IF NOT EXISTS {_ident(t.database)}{t.on_cluster}", *SCHEMA_MIGRATIONS.ddl(t)]


def render(t: Target, migrations: Sequence[Migration] = MIGRATIONS) -> str:
    """The whole DDL as a script (what ``haochaping migrate --print`` shows)."""
    out = [
        f"-- haochaping ClickHouse schema for database {t.database}"
        + (f" on cluster {t.cluster}" if t.cluster else "")
    ]
    out.extend(s + ";" for s in bootstrap_statements(t))
    for m in migrations:
        out.append(f"\n-- migration {m.version}: {m.name} (checksum {m.checksum(t)})")
        out.extend(s + ";" for s in m.statements(t))
        out.append(
            f"INSERT INTO {t.q(SCHEMA_MIGRATIONS.name)} (version, name, checksum) "
            f"VALUES ({m.version}, {_literal(m.name)}, '{m.checksum(t)}');"
        )
    return "\n\n".join(out) + "\n"


class Commander(Protocol):
    def command(self, cmd: str, *args: object, **kwargs: object) -> object: ...
    def query(self, query: str, *args: object, **kwargs: object) -> object: ...


@dataclass(frozen=True)
class MigrationReport:
    applied: list[int]
    already: list[int]
    ttl_changed: bool


class SchemaError(RuntimeError):
    pass


def migrate(client: Commander, t: Target, migrations: Sequence[Migration] = MIGRATIONS) -> MigrationReport:
    """Apply the migrations that are missing, then bring the raw-review TTL to the configured value.

    Safe to run twice and from two processes at once: every statement is ``IF NOT EXISTS`` and a
    migration is recorded only after all its statements ran, so one cut short is simply run again.
    """
    for stmt in bootstrap_statements(t):
        client.command(stmt)
    # Every checksum ever recorded for a version must match: applied_at has whole seconds, so "the
    # latest" is not well defined when two rows share a second.
    rows = client.query(
        f"SELECT version, groupUniqArray(checksum) FROM {t.q(SCHEMA_MIGRATIONS.name)} GROUP BY version"
    ).result_rows  # type: ignore[attr-defined]
    done = {int(v): sorted(str(c) for c in checksums) for v, checksums in rows}
    applied: list[int] = []
    for m in migrations:
        if m.version in done:
            edited = [c for c in done[m.version] if c != m.checksum(t)]
            if edited:
                raise SchemaError(
                    f"migration {m.version} ({m.name}) was applied to {t.database} with checksum "
                    f"{', '.join(edited)}, but this code's migration {m.version} has checksum {m.checksum(t)}: "
                    "an applied migration was edited; add a new migration instead"
                )
            continue
        for stmt in m.statements(t):
            client.command(stmt)
        client.command(
            f"INSERT INTO {t.q(SCHEMA_MIGRATIONS.name)} (version, name, checksum) "
            f"VALUES ({m.version}, {_literal(m.name)}, '{m.checksum(t)}')"
        )
        applied.append(m.version)
    ttl_changed = reconcile_review_ttl(client, t)
    return MigrationReport(applied, sorted(done), ttl_changed)


def reconcile_review_ttl(client: Commander, t: Target) -> bool:
    """Make the raw-review TTL what the settings say; return whether it had to change."""
    engine_full = client.query(
        "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {name:String}",
        parameters={"db": t.database, "name": t.local(REVIEWS.name)},
    ).result_rows  # type: ignore[attr-defined]
    if not engine_full:
        raise SchemaError(f"table {t.database}.{t.local(REVIEWS.name)} is missing after the migrations")
    has_ttl = " TTL " in str(engine_full[0][0])
    wanted = review_ttl_clause(t.raw_review_ttl_days)
    table = t.q(t.local(REVIEWS.name))
    if wanted is None:
        if not has_ttl:
            return False
        client.command(f"ALTER TABLE {table}{t.on_cluster} REMOVE TTL")
        return True
    if has_ttl and f"toIntervalDay({t.raw_review_ttl_days})" in str(engine_full[0][0]):
        return False
    # Old parts get the new TTL on their next merge, not all at once: a TTL cut by a year should not
    # rewrite every partition during start-up.
    client.command(
        f"ALTER TABLE {table}{t.on_cluster} MODIFY TTL {wanted}",
        settings={"materialize_ttl_after_modify": 0},
    )
    return True


def _ident(name: str | None) -> str:
    if not name or not all(c.isalnum() or c == "_" for c in name):
        raise ValueError(
            f"ClickHouse name {name!r} must be letters, digits and underscores (it goes into DDL unquoted)"
        )
    return name


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
