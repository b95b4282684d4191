"""Satisfaction figures and rankings."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query

from api import queries
from api.auth import scope_unit
from api.deps import AppSettings, ClickHouse, CurrentActor
from api.schemas import QueryTime, RankingOut, SatisfactionOut
from haochaping.domain.contract import Channel, now_beijing

router = APIRouter(prefix="/v1", tags=["figures"])

_MAX_POINTS = 20_000


def review_filter(
    actor: CurrentActor,
    since: Annotated[
        QueryTime | None,
        Query(description="Start of the range (inclusive), with offset. Default: today 00:00 Beijing time."),
    ] = None,
    until: Annotated[
        QueryTime | None, Query(description="End of the range (exclusive). Default: now.")
    ] = None,
    unit_code: Annotated[str | None, Query(description="统一社会信用代码 of the unit.")] = None,
    region_code: Annotated[str | None, Query(description="行政区划代码.")] = None,
    hall_id: str | None = None,
    window_id: str | None = None,
    staff_id: str | None = None,
    item_code: Annotated[str | None, Query(description="事项编码.")] = None,
    channel: Channel | None = None,
    include_flagged: Annotated[
        bool, Query(description="Count fraud-flagged ratings too (they are left out of official figures).")
    ] = False,
) -> queries.ReviewFilter:
    now = now_beijing()
    start = since or now.replace(hour=0, minute=0, second=0, microsecond=0)
    end = until or now + timedelta(seconds=1)
    if end <= start:
        raise HTTPException(
            422, detail=f"until ({end.isoformat()}) must be after since ({start.isoformat()})"
        )
    return queries.ReviewFilter(
        since=start,
        until=end,
        unit_code=scope_unit(actor, unit_code),
        region_code=region_code,
        hall_id=hall_id,
        window_id=window_id,
        staff_id=staff_id,
        item_code=item_code,
        channel=channel,
        include_flagged=include_flagged,
    )


def _filter_echo(flt: queries.ReviewFilter) -> dict[str, Any]:
    out: dict[str, Any] = {"since": flt.since, "until": flt.until, "include_flagged": flt.include_flagged}
    for name in ("unit_code", "region_code", "hall_id", "window_id", "staff_id", "item_code", "channel"):
        value = getattr(flt, name)
        if value is not None:
            out[name] = value
    return out


_SPAN = {
    queries.Granularity.MINUTE: timedelta(minutes=1),
    queries.Granularity.HOUR: timedelta(hours=1),
    queries.Granularity.DAY: timedelta(days=1),
    queries.Granularity.MONTH: timedelta(days=28),
}


FilterDep = Annotated[queries.ReviewFilter, Depends(review_filter)]


@router.get(
    "/satisfaction", response_model=SatisfactionOut, summary="满意率, 差评率, score and counts per level"
)
def satisfaction(
    flt: FilterDep,
    client: ClickHouse,
    granularity: Annotated[
        queries.Granularity | None,
        Query(
            description="Also return a series at this granularity (minute, hour, day, month), Beijing time."
        ),
    ] = None,
) -> dict[str, Any]:
    """Figures over the range and filters, plus a series when a granularity is given. A unit officer
    gets their own unit's figures; naming another unit is refused with 403."""
    if granularity is not None and (flt.until - flt.since) / _SPAN[granularity] > _MAX_POINTS:
        raise HTTPException(
            422,
            detail=f"the range holds more than {_MAX_POINTS} {granularity.value}s; "
            "narrow since/until or choose a coarser granularity",
        )
    series = None
    if granularity is None:
        total = queries.satisfaction(client, flt)
    else:
        points = queries.satisfaction_series(client, flt, granularity)
        # The points split the range without overlap: their sum is the total, one query fewer.
        total = queries.Figures.summed(p.figures for p in points)
        series = [{"at": p.at, **p.figures.as_dict()} for p in points]
    return {"filter": _filter_echo(flt), **total.as_dict(), "granularity": granularity, "series": series}


@router.get(
    "/rankings",
    response_model=RankingOut,
    summary="Rankings of units, halls, windows or staff (蜗牛奖: worst first)",
)
def rankings(
    flt: FilterDep,
    client: ClickHouse,
    settings: AppSettings,
    by: Annotated[queries.Dimension, Query(description="What to rank.")] = queries.Dimension.UNIT,
    metric: queries.Metric = queries.Metric.SATISFACTION_RATE,
    order: Annotated[
        str, Query(pattern="^(best|worst)$", description="best first, or worst first (the 蜗牛奖 list).")
    ] = "best",
    min_sample: Annotated[
        int | None,
        Query(
            ge=1,
            le=1_000_000,
            description="Leave out anyone with fewer ratings. Default: api.ranking_min_sample.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> dict[str, Any]:
    sample = min_sample or settings.api.ranking_min_sample
    rows = queries.ranking(
        client,
        flt,
        dimension=by,
        metric=metric,
        worst_first=order == "worst",
        min_sample=sample,
        limit=limit,
    )
    return {
        "filter": _filter_echo(flt),
        "by": by,
        "metric": metric,
        "order": order,
        "min_sample": sample,
        "items": [{"rank": r.rank, "key": r.key, "name": r.name, **r.figures.as_dict()} for r in rows],
    }
