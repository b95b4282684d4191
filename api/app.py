"""The supervisors' API and the live board: ``create_app(settings)``."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import Histogram

from api.auth import Forbidden
from api.commands import CommandProducer, StreamUnavailable
from api.deps import ClickHousePool
from api.feed import LiveFeed
from api.routes import figures, health, live, reports, tickets
from haochaping.settings import Settings

log = logging.getLogger(__name__)

REQUEST_SECONDS = Histogram(
    "haochaping_api_request_seconds",
    "API request latency",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

DESCRIPTION = """
What supervisors (督查), unit officers and auditors use every day: satisfaction figures (满意率,
差评率, score), rankings (and the 蜗牛奖 list), the problem ledger (问题台账) and actions on it, the
monthly 通报, and the live board (`/board`).

**Tokens.** Every `/v1` call needs `Authorization: Bearer <token>`; make one with
`haochaping token --role supervisor|unit_officer|auditor [--unit CODE]`. A unit officer sees and acts
on their own unit only: naming another unit gives 403, never someone else's data.

**Actions** go to the ledger on the stream; the answer is the ledger's: 200 applied, 409 refused
(with the reason), 202 pending (poll `Location`).
"""


def create_app(settings: Settings, *, start_feed: bool = True) -> FastAPI:
    feed = LiveFeed(settings)
    producer = CommandProducer(settings)
    pool = ClickHousePool(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if start_feed:
            await feed.start()
        try:
            yield
        finally:
            if start_feed:
                await feed.stop()
            producer.close()
            pool.close()

    app = FastAPI(
        title="haochaping: 好差评 supervisors' API",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.feed = feed
    app.state.producer = producer
    app.state.clickhouse = pool

    @app.exception_handler(Forbidden)
    async def forbidden(_: Request, exc: Forbidden) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(StreamUnavailable)
    async def stream_down(_: Request, exc: StreamUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})

    from clickhouse_connect.driver.exceptions import ClickHouseError

    @app.exception_handler(ClickHouseError)
    async def clickhouse_down(_: Request, exc: ClickHouseError) -> JSONResponse:
        log.warning("ClickHouse error: %s", exc)
        return JSONResponse(
            {"detail": f"the figures store (ClickHouse) did not answer: {str(exc).splitlines()[0][:300]}"},
            status_code=503,
        )

    @app.middleware("http")
    async def timing(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        REQUEST_SECONDS.labels(
            request.method, getattr(route, "path", "unmatched"), str(response.status_code)
        ).observe(time.perf_counter() - started)
        return response

    for module in (figures, tickets, reports, live, health):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/board")

    return app
