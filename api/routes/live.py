"""The live board: its page, its first picture (summary) and the server-sent events that keep it current."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from api import queries
from api.deps import AppSettings, ClickHouse, CurrentActor, Feed, StreamActor
from haochaping.domain.contract import now_beijing

router = APIRouter(tags=["live"])

STATIC = Path(__file__).resolve().parents[1] / "static"


@router.get("/board", include_in_schema=False)
def board() -> FileResponse:
    # The page itself is public; every figure on it comes from a token-protected call.
    return FileResponse(STATIC / "board.html", media_type="text/html; charset=utf-8")


@router.get("/v1/board/summary", summary="Everything the live board shows, as of now")
def summary(actor: CurrentActor, client: ClickHouse, settings: AppSettings) -> dict[str, Any]:
    """Today's 满意率 and its trend per minute, the ranking of units, open tickets per colour, the
    newest red tickets and the overdue list, each scoped to the caller's unit for a unit officer."""
    now = now_beijing()
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    unit = actor.unit_code
    flt = queries.ReviewFilter(since=start, until=now + timedelta(seconds=1), unit_code=unit)
    today = queries.satisfaction(client, flt)
    trend = queries.satisfaction_series(client, flt, queries.Granularity.MINUTE)
    ranking = queries.ranking(
        client,
        flt,
        dimension=queries.Dimension.UNIT,
        metric=queries.Metric.SATISFACTION_RATE,
        worst_first=False,
        min_sample=settings.api.ranking_min_sample,
        limit=20,
    )
    red = queries.list_tickets(
        client, queries.TicketFilter(unit_code=unit, colour=queries.Colour.RED), limit=10, offset=0
    )
    overdue = queries.list_tickets(
        client, queries.TicketFilter(unit_code=unit, overdue=True, open_only=True), limit=20, offset=0
    )
    return {
        "as_of": now,
        "scope": unit,
        "min_sample": settings.api.ranking_min_sample,
        "today": today.as_dict(),
        "trend": [{"at": p.at, **p.figures.as_dict()} for p in trend],
        "ranking": [{"rank": r.rank, "key": r.key, "name": r.name, **r.figures.as_dict()} for r in ranking],
        "colours": queries.colour_counts(client, unit),
        "red_tickets": red.items,
        "overdue": overdue.items,
    }


@router.get(
    "/v1/live",
    summary="Server-sent events: new red tickets, overdue alerts, ticket changes and satisfaction ticks",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def live(request: Request, actor: StreamActor, feed: Feed) -> EventSourceResponse:
    """Events: ``ready`` (once), ``ticket`` (any ledger change), ``red_ticket`` (a new red ticket),
    ``overdue`` (a ticket escalated past its deadline), ``alert`` (warnings, spikes, fraud) and
    ``satisfaction`` (once a second: counts per level by minute and unit since the last tick).
    A unit officer receives only their unit's events. Browsers pass the token as ``access_token``
    because EventSource cannot set headers."""
    sub = feed.subscribe(actor)

    async def events() -> AsyncIterator[ServerSentEvent]:
        try:
            yield ServerSentEvent(
                data=orjson.dumps({"feed_ready": feed.ready, "scope": actor.unit_code}).decode(),
                event="ready",
            )
            while True:
                if await request.is_disconnected():
                    return
                try:
                    item = await asyncio.wait_for(sub.queue.get(), timeout=5)
                except TimeoutError:
                    continue
                if item.name == "bye":
                    return
                yield ServerSentEvent(data=orjson.dumps(item.data).decode(), event=item.name)
        finally:
            feed.unsubscribe(sub)

    return EventSourceResponse(events(), ping=15)
