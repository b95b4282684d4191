"""What the API asks ClickHouse, and the arithmetic on the answers.

Every function takes the unit scope already decided by :mod:`api.auth` (``unit_code`` is the
officer's own unit for a unit officer); none of them decides who may see what. Parameters always go
to the server as bound parameters (``{name:Type}``), never into the SQL text.

Table and column names follow the sinks' schema (``sinks/schema.py``, ``docs/clickhouse.md``).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import orjson

from haochaping.domain.contract import BEIJING, Channel, Level
from haochaping.domain.records import Colour, LedgerEvent, Ticket, TicketStatus

REVIEWS = "reviews"
TICKETS = "tickets"
TICKET_EVENTS = "ticket_events"
TZ = "Asia/Shanghai"

# Statuses a ticket passes through once it has been rectified: it counts toward 整改率 from then on.
RECTIFIED_STATUSES = (TicketStatus.RECTIFIED, TicketStatus.CALLED_BACK, TicketStatus.CLOSED)
OPEN_STATUSES = tuple(
    s for s in TicketStatus if s not in (TicketStatus.CLOSED, TicketStatus.VOID, TicketStatus.NOT_FIXABLE)
)


class Granularity(enum.StrEnum):
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"
    MONTH = "month"


_BUCKET = {
    Granularity.MINUTE: "toStartOfMinute({t}, '" + TZ + "')",
    Granularity.HOUR: "toStartOfHour({t}, '" + TZ + "')",
    Granularity.DAY: "toDateTime(toDate({t}, '" + TZ + "'), '" + TZ + "')",
    Granularity.MONTH: "toDateTime(toStartOfMonth({t}, '" + TZ + "'), '" + TZ + "')",
}


class Dimension(enum.StrEnum):
    """What a ranking ranks."""

    UNIT = "unit"
    HALL = "hall"
    WINDOW = "window"
    STAFF = "staff"
    REGION = "region"
    ITEM = "item"


_DIMENSION_COLUMN = {
    Dimension.UNIT: "unit_code",
    Dimension.HALL: "hall_id",
    Dimension.WINDOW: "window_id",
    Dimension.STAFF: "staff_id",
    Dimension.REGION: "region_code",
    Dimension.ITEM: "item_code",
}


class Metric(enum.StrEnum):
    SATISFACTION_RATE = "satisfaction_rate"
    BAD_RATE = "bad_rate"
    SCORE = "score"


# --- the arithmetic (domain.md: 满意率 = 5+4+3 stars / all, 差评率 = 2+1 / all, score = mean of 10/8/6/3/0)


# Level scores by stars (index i: i+1 stars), looked up once: a per-minute series of a day has 1,440 points.
_LEVEL_SCORES = tuple(Level(i + 1).score for i in range(5))


@dataclass(frozen=True)
class Figures:
    counts: tuple[int, int, int, int, int]  # index i: ratings with i+1 stars

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def satisfaction_rate(self) -> float | None:
        return None if not self.total else sum(self.counts[2:]) / self.total

    @property
    def bad_rate(self) -> float | None:
        return None if not self.total else sum(self.counts[:2]) / self.total

    @property
    def score(self) -> float | None:
        if not self.total:
            return None
        return sum(score * n for score, n in zip(_LEVEL_SCORES, self.counts, strict=True)) / self.total

    @classmethod
    def summed(cls, parts: Iterable[Figures]) -> Figures:
        counts = [0, 0, 0, 0, 0]
        for part in parts:
            for i, n in enumerate(part.counts):
                counts[i] += n
        return cls((counts[0], counts[1], counts[2], counts[3], counts[4]))

    def as_dict(self) -> dict[str, Any]:
        # The properties' arithmetic in one pass: a day per minute is 1,440 of these per answer, and
        # going through the properties took 10 ms of it.
        c1, c2, c3, c4, c5 = self.counts
        total = c1 + c2 + c3 + c4 + c5
        return {
            "total": total,
            "counts": {"1": c1, "2": c2, "3": c3, "4": c4, "5": c5},
            "satisfaction_rate": round((c3 + c4 + c5) / total, 6) if total else None,
            "bad_rate": round((c1 + c2) / total, 6) if total else None,
            "score": round(sum(s * n for s, n in zip(_LEVEL_SCORES, self.counts, strict=True)) / total, 6)
            if total
            else None,
        }


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


# The same arithmetic in SQL, for ordering a ranking on the server (c1..c5: counts by stars).
_METRIC_SQL = {
    Metric.SATISFACTION_RATE: "(c3 + c4 + c5) / (c1 + c2 + c3 + c4 + c5)",
    Metric.BAD_RATE: "(c1 + c2) / (c1 + c2 + c3 + c4 + c5)",
    Metric.SCORE: "(10 * c5 + 8 * c4 + 6 * c3 + 3 * c2) / (c1 + c2 + c3 + c4 + c5)",
}


# --- filters


@dataclass(frozen=True)
class ReviewFilter:
    since: datetime
    until: datetime
    unit_code: str | None = None
    region_code: str | None = None
    hall_id: str | None = None
    window_id: str | None = None
    staff_id: str | None = None
    item_code: str | None = None
    channel: Channel | None = None
    # Fraud-flagged ratings are kept but left out of official figures unless asked for.
    include_flagged: bool = False

    def dimensions(self) -> set[str]:
        """The dimension columns the filter names."""
        names = ("unit_code", "region_code", "hall_id", "window_id", "staff_id", "item_code")
        out = {c for c in names if getattr(self, c) is not None}
        return out | ({"channel"} if self.channel is not None else set())

    def dimension_clauses(self) -> tuple[list[str], dict[str, Any]]:
        clauses: list[str] = []
        params: dict[str, Any] = {}
        for column in ("unit_code", "region_code", "hall_id", "window_id", "staff_id", "item_code"):
            value = getattr(self, column)
            if value is not None:
                clauses.append(f"{column} = {{{column}:String}}")
                params[column] = value
        if self.channel is not None:
            clauses.append("channel = {channel:String}")
            params["channel"] = self.channel.value
        return clauses, params


# --- where the figures come from
#
# Four stores hold the same counts (sinks/schema.py): ``reviews`` (raw), and the rollups per minute,
# hour and day, each with every dimension a filter may name. A range is cut into pieces each answered
# by the coarsest store whose buckets it covers whole: for 03-01 10:17:30 .. 03-31 09:00, the half
# minute to 10:18 from reviews, to 11:00 from minutes, to midnight from hours, 30 days from days, and
# so on down to the end. The pieces do not overlap and every bucket lies wholly inside its piece,
# so the sum over the pieces is the exact figure, the same as counting the raw rows.


class Store(enum.IntEnum):
    """Where counts are read, finest first."""

    RAW = 0
    MINUTE = 1
    HOUR = 2
    DAY = 3


_STORE_TABLE = {
    Store.RAW: REVIEWS,
    Store.MINUTE: "satisfaction_minute",
    Store.HOUR: "satisfaction_hourly",
    Store.DAY: "satisfaction_daily",
}
_STORE_TIME = {Store.RAW: "rated_at", Store.MINUTE: "minute", Store.HOUR: "hour", Store.DAY: "day"}
# The hourly rollup leaves staff and item out (sinks/schema.py: with them it would be as big as reviews):
# a range that filters or groups by them reads minutes where it would have read hours.
_STORE_LACKS = {Store.HOUR: frozenset({"staff_id", "item_code"})}
# The coarsest store a series at this granularity may read: a bucket must not straddle a series point.
_COARSEST_FOR = {
    None: Store.DAY,
    Granularity.MINUTE: Store.MINUTE,
    Granularity.HOUR: Store.HOUR,
    Granularity.DAY: Store.DAY,
    Granularity.MONTH: Store.DAY,
}


@dataclass(frozen=True)
class Piece:
    store: Store
    since: datetime
    until: datetime


def _floor(t: datetime, store: Store) -> datetime:
    t = t.astimezone(BEIJING)
    if store is Store.DAY:
        return t.replace(hour=0, minute=0, second=0, microsecond=0)
    if store is Store.HOUR:
        return t.replace(minute=0, second=0, microsecond=0)
    return t.replace(second=0, microsecond=0)


def _ceil(t: datetime, store: Store) -> datetime:
    down = _floor(t, store)
    if down == t:
        return down
    # Beijing keeps no summer time: a day is always 24 hours.
    step = {Store.DAY: timedelta(days=1), Store.HOUR: timedelta(hours=1)}.get(store, timedelta(minutes=1))
    return down + step


def plan(
    since: datetime,
    until: datetime,
    granularity: Granularity | None = None,
    dimensions: frozenset[str] | set[str] = frozenset(),
) -> list[Piece]:
    """Cut ``[since, until)`` into pieces, each for the coarsest store whose buckets it covers whole
    and that holds every dimension named (filtered or grouped by)."""
    stores = [
        s
        for s in (Store.DAY, Store.HOUR, Store.MINUTE)
        if s <= _COARSEST_FOR[granularity] and not (_STORE_LACKS.get(s, frozenset()) & dimensions)
    ]

    def cut(a: datetime, b: datetime, levels: list[Store]) -> list[Piece]:
        if a >= b:
            return []
        if not levels:
            return [Piece(Store.RAW, a, b)]
        store, finer = levels[0], levels[1:]
        lo, hi = _ceil(a, store), _floor(b, store)
        if lo >= hi:
            return cut(a, b, finer)
        return [*cut(a, lo, finer), Piece(store, lo, hi), *cut(hi, b, finer)]

    return cut(since.astimezone(BEIJING), until.astimezone(BEIJING), stores)


def _counts_sql(store: Store, include_flagged: bool) -> str:
    if store is Store.RAW:
        flagged = "" if include_flagged else " AND empty(fraud_flags)"
        return ", ".join(f"countIf(stars = {s}{flagged}) AS c{s}" for s in range(1, 6))
    return ", ".join(f"sum(n{s}{f' + f{s}' if include_flagged else ''}) AS c{s}" for s in range(1, 6))


def _bucket_sql(store: Store, granularity: Granularity) -> str:
    if store is Store.DAY:
        day = "day" if granularity is Granularity.DAY else "toStartOfMonth(day)"
        return f"toDateTime({day}, '{TZ}')"
    return _BUCKET[granularity].format(t=_STORE_TIME[store])


def counts_query(
    flt: ReviewFilter,
    *,
    group_by: str | None = None,
    granularity: Granularity | None = None,
) -> tuple[str, dict[str, Any]]:
    """``SELECT [bucket,] [key,] c1, .., c5`` over the filter's range, summed over the pieces of its plan.

    ``group_by`` is a dimension column, returned as ``key`` (rows where it is '' are left out); with
    a granularity, ``bucket`` is the start of each series point.
    """
    dims, params = flt.dimension_clauses()
    if group_by:
        dims.append(f"{group_by} != ''")
    pieces = plan(flt.since, flt.until, granularity, flt.dimensions() | ({group_by} if group_by else set()))
    keys = [*(["bucket"] if granularity is not None else []), *(["key"] if group_by else [])]
    parts = []
    for n, piece in enumerate(pieces):
        column = _STORE_TIME[piece.store]
        if piece.store is Store.DAY:
            params[f"s{n}"], params[f"u{n}"] = piece.since.date(), piece.until.date()
            when = [f"{column} >= {{s{n}:Date}}", f"{column} < {{u{n}:Date}}"]
        else:
            params[f"s{n}"], params[f"u{n}"] = piece.since, piece.until
            when = [f"{column} >= {{s{n}:DateTime64(3)}}", f"{column} < {{u{n}:DateTime64(3)}}"]
        heads = []
        if granularity is not None:
            heads.append(f"{_bucket_sql(piece.store, granularity)} AS bucket")
        if group_by:
            heads.append(f"{group_by} AS key")
        heads.append(_counts_sql(piece.store, flt.include_flagged))
        parts.append(
            f"SELECT {', '.join(heads)} FROM {_STORE_TABLE[piece.store]} WHERE {' AND '.join(when + dims)}"
            + (f" GROUP BY {', '.join(keys)}" if keys else "")
        )
    sums = ", ".join(f"sum(c{s}) AS c{s}" for s in range(1, 6))
    sql = f"SELECT {', '.join([*keys, sums])} FROM ({' UNION ALL '.join(parts)})" + (
        f" GROUP BY {', '.join(keys)}" if keys else ""
    )
    return sql, params


def _counts(row: Sequence[Any]) -> tuple[int, int, int, int, int]:
    return (int(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]))


def satisfaction(client: Any, flt: ReviewFilter) -> Figures:
    sql, params = counts_query(flt)
    row = client.query(sql, parameters=params).result_rows[0]
    return Figures(_counts(row))


@dataclass(frozen=True)
class SeriesPoint:
    at: datetime
    figures: Figures


def satisfaction_series(client: Any, flt: ReviewFilter, granularity: Granularity) -> list[SeriesPoint]:
    sql, params = counts_query(flt, granularity=granularity)
    rows = client.query(sql + " ORDER BY bucket", parameters=params).result_rows
    return [SeriesPoint(_beijing(r[0]), Figures(_counts(r[1:]))) for r in rows]


@dataclass(frozen=True)
class RankRow:
    rank: int
    key: str
    name: str | None
    figures: Figures


def ranking(
    client: Any,
    flt: ReviewFilter,
    *,
    dimension: Dimension,
    metric: Metric,
    worst_first: bool,
    min_sample: int,
    limit: int,
) -> list[RankRow]:
    column = _DIMENSION_COLUMN[dimension]
    inner, params = counts_query(flt, group_by=column)
    params.update({"min_sample": min_sample, "limit": limit})
    # The rollups have no unit names: they come from the newest review of each unit, after the ranking.
    # Worst first: lowest 满意率 / score, highest 差评率 (the 蜗牛奖 list). Ties go by sample size so
    # a bigger body of evidence ranks first, then by key so the order is stable.
    ascending = worst_first != (metric is Metric.BAD_RATE)
    order = "ASC" if ascending else "DESC"
    sql = (
        f"SELECT key, '' AS name, c1, c2, c3, c4, c5, {_METRIC_SQL[metric]} AS m FROM ({inner})"
        f" WHERE c1 + c2 + c3 + c4 + c5 >= {{min_sample:UInt32}}"
        f" ORDER BY m {order}, c1 + c2 + c3 + c4 + c5 DESC, key ASC LIMIT {{limit:UInt32}}"
    )
    rows = client.query(sql, parameters=params).result_rows
    names = unit_names(client, [str(r[0]) for r in rows], flt) if dimension is Dimension.UNIT else {}
    return [
        RankRow(rank=i + 1, key=str(r[0]), name=names.get(str(r[0])), figures=Figures(_counts(r[2:7])))
        for i, r in enumerate(rows)
    ]


def unit_names(client: Any, codes: Sequence[str], flt: ReviewFilter) -> dict[str, str]:
    """Each unit's name as its newest review in the filter's range gives it (a 通报 of a past month
    shows the name the unit had then); bounded by the range so it reads the ranked units' rows only."""
    if not codes:
        return {}
    rows = client.query(
        f"SELECT unit_code, argMax(unit_name, rated_at) FROM {REVIEWS}"
        " WHERE unit_code IN {codes:Array(String)}"
        " AND rated_at >= {since:DateTime64(3)} AND rated_at < {until:DateTime64(3)} GROUP BY unit_code",
        parameters={"codes": list(codes), "since": flt.since, "until": flt.until},
    ).result_rows
    return {str(c): str(n) for c, n in rows}


# --- tickets


_TICKET_COLUMNS = tuple(Ticket.model_fields)
_OPTIONAL_TICKET_COLUMNS = frozenset(
    name for name, f in Ticket.model_fields.items() if not f.is_required() and f.default is None
)


@dataclass(frozen=True)
class TicketFilter:
    unit_code: str | None = None
    colour: Colour | None = None
    status: TicketStatus | None = None
    overdue: bool | None = None
    opened_since: datetime | None = None
    opened_until: datetime | None = None
    open_only: bool = False

    def where(self) -> tuple[str, dict[str, Any]]:
        clauses: list[str] = ["1"]
        params: dict[str, Any] = {}
        if self.unit_code is not None:
            clauses.append("unit_code = {unit_code:String}")
            params["unit_code"] = self.unit_code
        if self.colour is not None:
            clauses.append("colour = {colour:String}")
            params["colour"] = self.colour.value
        if self.status is not None:
            clauses.append("status = {status:String}")
            params["status"] = self.status.value
        if self.overdue is not None:
            clauses.append("overdue = {overdue:Bool}")
            params["overdue"] = self.overdue
        if self.opened_since is not None:
            clauses.append("opened_at >= {opened_since:DateTime64(3)}")
            params["opened_since"] = self.opened_since
        if self.opened_until is not None:
            clauses.append("opened_at < {opened_until:DateTime64(3)}")
            params["opened_until"] = self.opened_until
        if self.open_only:
            clauses.append("status IN {open_statuses:Array(String)}")
            params["open_statuses"] = [s.value for s in OPEN_STATUSES]
        return " AND ".join(clauses), params


def _current_tickets_sql() -> str:
    # The newest version of each ticket; FINAL alone would also do, but argMax works whatever the
    # merge state and whatever the engine.
    return f"SELECT * FROM {TICKETS} FINAL"


@dataclass
class TicketPage:
    total: int
    items: list[dict[str, Any]] = field(default_factory=list)


def list_tickets(client: Any, flt: TicketFilter, *, limit: int, offset: int) -> TicketPage:
    where, params = flt.where()
    params.update({"limit": limit, "offset": offset})
    base = f"({_current_tickets_sql()}) AS t WHERE {where}"
    total = int(client.query(f"SELECT count() FROM {base}", parameters=params).result_rows[0][0])
    result = client.query(
        f"SELECT * FROM {base} ORDER BY opened_at DESC, ticket_id LIMIT {{limit:UInt32}} OFFSET {{offset:UInt32}}",
        parameters=params,
    )
    return TicketPage(total, [_ticket_dict(result.column_names, row) for row in result.result_rows])


def colour_counts(client: Any, unit_code: str | None) -> dict[str, int]:
    flt = TicketFilter(unit_code=unit_code, open_only=True)
    where, params = flt.where()
    rows = client.query(
        f"SELECT colour, count() FROM ({_current_tickets_sql()}) AS t WHERE {where} GROUP BY colour",
        parameters=params,
    ).result_rows
    out = {c.value: 0 for c in Colour}
    out.update({str(c): int(n) for c, n in rows})
    return out


def get_ticket(client: Any, ticket_id: str) -> dict[str, Any] | None:
    result = client.query(
        f"SELECT * FROM ({_current_tickets_sql()}) AS t WHERE ticket_id = {{ticket_id:String}} LIMIT 1",
        parameters={"ticket_id": ticket_id},
    )
    if not result.result_rows:
        return None
    return _ticket_dict(result.column_names, result.result_rows[0])


def ticket_history(client: Any, ticket_id: str) -> list[dict[str, Any]]:
    result = client.query(
        f"SELECT event_id, type, at, actor, command_id, reason FROM {TICKET_EVENTS} "
        f"WHERE ticket_id = {{ticket_id:String}} ORDER BY at, event_id",
        parameters={"ticket_id": ticket_id},
    )
    return [
        {
            k: (_beijing(v) if isinstance(v, datetime) else v)
            for k, v in zip(result.column_names, row, strict=True)
        }
        for row in result.result_rows
    ]


def command_event(client: Any, command_id: str) -> dict[str, Any] | None:
    result = client.query(
        f"SELECT event_id, ticket_id, type, at, actor, command_id, reason FROM {TICKET_EVENTS} "
        f"WHERE command_id = {{command_id:String}} LIMIT 1",
        parameters={"command_id": command_id},
    )
    if not result.result_rows:
        return None
    return _none_if_empty(dict(zip(result.column_names, result.result_rows[0], strict=True)))


def _ticket_dict(columns: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in zip(columns, row, strict=True):
        if name not in _TICKET_COLUMNS:
            continue
        if name == "reasons" and isinstance(value, str):
            value = orjson.loads(value) if value else []
        elif isinstance(value, datetime):
            value = _beijing(value)
        elif value == "" and name in _OPTIONAL_TICKET_COLUMNS:
            value = None  # the store writes "" for "none" in string columns
        out[name] = value
    return out


def _none_if_empty(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (_beijing(v) if isinstance(v, datetime) else (None if v == "" else v)) for k, v in row.items()}


def ticket_from_event(event: LedgerEvent) -> dict[str, Any]:
    return event.ticket.model_dump(mode="json")


# --- the monthly 通报


@dataclass(frozen=True)
class ReportRow:
    rank: int
    unit_code: str
    unit_name: str
    figures: Figures
    tickets: int
    rectified: int
    called_back: int
    overdue: int

    @property
    def rectification_rate(self) -> float | None:
        return None if not self.tickets else self.rectified / self.tickets

    @property
    def callback_rate(self) -> float | None:
        return None if not self.tickets else self.called_back / self.tickets

    @property
    def overdue_rate(self) -> float | None:
        return None if not self.tickets else self.overdue / self.tickets


def month_bounds(month: date) -> tuple[datetime, datetime]:
    start = datetime(month.year, month.month, 1, tzinfo=BEIJING)
    end = datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=BEIJING)
    return start, end


def monthly_report(client: Any, month: date, *, unit_code: str | None) -> list[ReportRow]:
    """The 通报 table: each unit's figures for the month, and the tickets opened in the month as they stand now.

    整改率 = tickets rectified (or further: called back, closed) / tickets; 回访率 = tickets with a
    recorded call-back / tickets; 超期率 = tickets that went overdue / tickets. Ranked by 满意率 (ties:
    lower 差评率, then more ratings).
    """
    since, until = month_bounds(month)
    flt = ReviewFilter(since=since, until=until, unit_code=unit_code)
    sql, params = counts_query(flt, group_by="unit_code")
    reviews = [(r[0], "", *r[1:]) for r in client.query(sql, parameters=params).result_rows]
    names = unit_names(client, [str(r[0]) for r in reviews], flt)
    reviews = [(code, names.get(code, ""), *rest) for code, _, *rest in reviews]
    tflt = TicketFilter(unit_code=unit_code, opened_since=since, opened_until=until)
    twhere, tparams = tflt.where()
    tparams["rectified"] = [s.value for s in RECTIFIED_STATUSES]
    tickets = client.query(
        f"SELECT unit_code, any(unit_name), count(), countIf(status IN {{rectified:Array(String)}}),"
        f" countIf(callback_ok IS NOT NULL), countIf(overdue)"
        f" FROM ({_current_tickets_sql()}) AS t WHERE {twhere} AND status != 'void' GROUP BY unit_code",
        parameters=tparams,
    ).result_rows
    by_unit: dict[str, dict[str, Any]] = {}
    for code, name, *counts in reviews:
        by_unit[code] = {"name": name, "figures": Figures(_counts(counts)), "t": (0, 0, 0, 0)}
    for code, name, n, rectified, called_back, overdue in tickets:
        entry = by_unit.setdefault(
            code, {"name": name, "figures": Figures((0, 0, 0, 0, 0)), "t": (0, 0, 0, 0)}
        )
        entry["t"] = (int(n), int(rectified), int(called_back), int(overdue))

    def order(item: tuple[str, dict[str, Any]]) -> tuple[float, float, int, str]:
        f: Figures = item[1]["figures"]
        return (
            -(f.satisfaction_rate if f.satisfaction_rate is not None else -1.0),
            f.bad_rate if f.bad_rate is not None else 2.0,
            -f.total,
            item[0],
        )

    rows = []
    for rank, (code, entry) in enumerate(sorted(by_unit.items(), key=order), start=1):
        n, rectified, called_back, overdue = entry["t"]
        rows.append(
            ReportRow(rank, code, entry["name"], entry["figures"], n, rectified, called_back, overdue)
        )
    return rows


def _beijing(value: datetime) -> datetime:
    if value.tzinfo is None:
        # clickhouse-connect returns naive datetimes for columns without a time zone: they hold UTC.
        from datetime import UTC

        value = value.replace(tzinfo=UTC)
    return value.astimezone(BEIJING)
