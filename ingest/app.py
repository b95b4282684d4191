"""The ingest service: every sender's door into Kafka.

``create_app(settings)`` builds the FastAPI app. Under ``/v1`` every request passes the signature
middleware first: size (413), content type (415), then the signature (401), before a route parses the
body (400 / 422). The answer is 202 only once Kafka acknowledged the record (acks=all, idempotent
producer); 503 with Retry-After when it did not in time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from haochaping.domain.problems import Problem
from haochaping.settings import Settings
from ingest.auth import AuthFailure, Verifier
from ingest.errors import JSONResponse, problem_response, request_validation_handler
from ingest.intake import Intake, RegistryNotReady
from ingest.invitations import InvitationRegistry
from ingest.metrics import IngestMetrics
from ingest.payloads import ReviewIn, ValidReviewBatch
from ingest.producer import BrokerUnavailable, EventProducer
from ingest.routes import item_results, router

log = logging.getLogger(__name__)


class SignedRequests:
    """ASGI middleware for /v1: read the body (bounded), check its type, verify the signature.

    It also answers the two busiest requests, a valid review and a valid review batch, without the
    framework's routing and dependency machinery (a third of a request's CPU). Only the success path
    is taken here: a body the input model does not accept in one go (invalid JSON, a contract
    problem, a batch over the limit) goes on to the FastAPI route, which answers it exactly as it
    always did. The routes stay the definition of these endpoints (and of the OpenAPI spec); the
    answers here are built by the same functions.
    """

    def __init__(
        self,
        app: ASGIApp,
        verifier: Verifier,
        metrics: IngestMetrics,
        max_body: int,
        paths: frozenset[str],
        intake: Intake,
        settings: Settings,
    ) -> None:
        self.app = app
        self.paths = paths  # known endpoints: any other path is labelled "other" (bounded metric labels)
        self.verifier = verifier
        self.metrics = metrics
        self.max_body = max_body
        self.intake = intake
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_box: list[int] = [500]

        async def send_timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
            await send(message)

        try:
            response = await self._check(scope, receive)
            if isinstance(response, Response):
                await response(scope, receive, send_timed)
                return
            body = response
            if scope["method"] == "POST" and not scope.get("query_string"):
                answer = await self._fast(scope["path"], body, scope["state"]["principal"].key_id)
                if answer is not None:
                    await answer(scope, receive, send_timed)
                    return

            async def replay() -> Message:
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app(scope, replay, send_timed)
        finally:
            endpoint = scope["path"] if scope["path"] in self.paths else "other"
            self.metrics.requests.labels(endpoint, str(status_box[0])).observe(time.perf_counter() - started)

    async def _fast(self, path: str, body: bytes, sender: str) -> Response | None:
        """The answer to a valid review or batch, or None to let the route answer."""
        try:
            if path == "/v1/reviews":
                review = ReviewIn.model_validate_json(body)
                event_id, _ = await self.intake.accept_review(review, sender)
                return JSONResponse({"status": "accepted", "event_id": event_id}, status_code=202)
            if path == "/v1/reviews/batch":
                # Every item valid, checked in one pass (else the route answers item by item);
                # accept_batch takes the validated items as they are (pydantic does not revalidate).
                batch = ValidReviewBatch.model_validate_json(body)
                if len(batch.reviews) > self.settings.ingest.max_batch:
                    return None
                return item_results(await self.intake.accept_batch(batch.reviews, sender))
        except ValidationError:
            return None
        except BrokerUnavailable as exc:
            return broker_unavailable(self.settings, exc)
        return None

    async def _check(self, scope: Scope, receive: Receive) -> bytes | Response:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            return _too_large(self.max_body)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return Response(status_code=400)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return _too_large(self.max_body)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if scope["method"] == "POST" and media_type != "application/json":
            return problem_response(
                415,
                "the body must be JSON",
                detail=f"Content-Type is {media_type or 'missing'!r}; send Content-Type: application/json (UTF-8)",
            )
        path = scope["path"]
        if scope.get("query_string"):
            path = f"{path}?{scope['query_string'].decode('latin-1')}"
        try:
            principal = self.verifier.verify(scope["method"], path, headers, body)
        except AuthFailure as failure:
            self.metrics.auth_failures.labels(failure.check.value).inc()
            return problem_response(
                401, "the request is not signed correctly", check=failure.check.value, detail=failure.detail
            )
        scope.setdefault("state", {})["principal"] = principal
        return body


def _too_large(limit: int) -> Response:
    return problem_response(
        413, "the body is too large", detail=f"at most {limit} bytes per request; split the batch"
    )


def create_app(settings: Settings, producer: EventProducer | None = None) -> FastAPI:
    metrics = IngestMetrics()
    own_producer = producer is None
    producer = producer or EventProducer(settings, on_error=metrics.producer_error)
    invitations = InvitationRegistry(settings)
    intake = Intake(settings, producer, metrics, invitations)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        invitations.start()
        # Connect in the background: a broker that is down at start-up must not keep ingest from
        # answering (503 until it is back), nor delay start-up.
        warmup = asyncio.create_task(_warm_up(intake))
        try:
            yield
        finally:
            warmup.cancel()
            invitations.stop()
            if own_producer:
                await producer.close()

    app = FastAPI(
        title="haochaping ingest",
        version="1",
        summary="Every sender's door into the 好差评 pipeline: hall devices, the app, SMS, 12345, provincial records.",
        description="Requests under /v1 are signed (see docs/ingest.md). 202 means Kafka acknowledged the record.",
        lifespan=lifespan,
        default_response_class=JSONResponse,
        # Ingest exports its own Prometheus metrics; FastAPI's OpenTelemetry hooks cost ~2 % of a
        # request even with nothing configured.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.intake = intake
    app.state.metrics = metrics
    app.include_router(router)
    app.add_exception_handler(RequestValidationError, request_validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(BrokerUnavailable, _broker_unavailable(settings))
    app.add_exception_handler(RegistryNotReady, _registry_not_ready(settings))
    app.add_middleware(
        SignedRequests,
        verifier=Verifier(settings.ingest.sender_keys, settings.ingest.max_clock_skew_seconds),
        metrics=metrics,
        max_body=settings.ingest.max_body_bytes,
        paths=frozenset(getattr(route, "path", "") for route in router.routes),
        intake=intake,
        settings=settings,
    )

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        # Not ready while the producer cannot deliver (not only before it first connected); asking
        # also replaces a stuck producer and reconnects, so an idle unready pod recovers on its own.
        ready = {"kafka": producer.check(), "invitations": invitations.ready}
        return JSONResponse(ready, status_code=200 if all(ready.values()) else 503)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        # FastAPI's answer to a body it could not even decode (e.g. not UTF-8).
        return problem_response(
            400,
            "the body is not valid JSON",
            [Problem("", "the body could not be decoded: send UTF-8 encoded JSON", "json_invalid")],
        )
    return problem_response(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))


async def _warm_up(intake: Intake) -> None:
    try:
        await intake.producer.connect()
    except BrokerUnavailable as exc:
        log.warning("Kafka is not reachable yet (%s); requests get 503 until it is", exc)


def retry_later(settings: Settings, title: str, detail: str) -> Response:
    """503 with Retry-After: nothing was taken, the sender may send the same thing again later."""
    retry_after = settings.ingest.retry_after_seconds
    return problem_response(
        503,
        title,
        headers={"Retry-After": str(retry_after)},
        detail=f"{detail} after {retry_after} s",
        retry_after=retry_after,
    )


def broker_unavailable(settings: Settings, exc: Exception) -> Response:
    return retry_later(
        settings,
        "Kafka did not acknowledge the write: nothing was accepted",
        f"{exc}; send the same request again (newly signed)",
    )


def _broker_unavailable(settings: Settings) -> Any:
    async def handler(request: Request, exc: Exception) -> Response:
        return broker_unavailable(settings, exc)

    return handler


def _registry_not_ready(settings: Settings) -> Any:
    async def handler(request: Request, exc: Exception) -> Response:
        return retry_later(
            settings, "ingest is still reading the SMS invitation registry", "send the reply again"
        )

    return handler
