"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _check_clickhouse(request: Request) -> str | None:
    pool = request.app.state.clickhouse
    try:
        client = pool.acquire()
    except Exception as exc:
        return f"ClickHouse at {request.app.state.settings.clickhouse.url} is not reachable: {exc}"
    try:
        client.query("SELECT 1")
        return None
    except Exception as exc:
        return f"ClickHouse query failed: {exc}"
    finally:
        pool.release(client)


@router.get("/readyz", summary="ClickHouse and the broker are reachable", responses={503: {}})
async def readyz(request: Request) -> Response:
    """Ready when ClickHouse answers and the live feed is assigned to the broker's topics (so actions
    can be answered)."""
    feed = request.app.state.feed
    checks: dict[str, Any] = {}
    ch_error = await asyncio.to_thread(_check_clickhouse, request)
    checks["clickhouse"] = "ok" if ch_error is None else ch_error
    checks["broker"] = (
        "ok" if feed.ready else (feed.error or "the live feed is not yet assigned to its topics")
    )
    ok = ch_error is None and feed.ready
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503
    )


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
