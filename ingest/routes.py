"""The /v1 endpoints: thin, each says what it accepts and answers; :mod:`ingest.intake` says how."""

from __future__ import annotations

from collections import Counter
from operator import attrgetter
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from haochaping.domain.problems import Problem
from ingest.auth import Principal
from ingest.errors import JSONResponse, problem_response
from ingest.intake import Intake
from ingest.payloads import (
    CallbackIn,
    ReviewBatchIn,
    ReviewIn,
    SmsInvitationIn,
    SmsReplyIn,
    WorkOrderIn,
)

router = APIRouter(prefix="/v1")
_STATUS = attrgetter("status")

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "The body is not valid JSON."},
    401: {"description": "The signature is missing, expired, replayed or wrong; `check` says which."},
    413: {"description": "The body (or the batch) is too large."},
    415: {"description": "The body is not application/json."},
    422: {
        "description": "The body does not follow the contract; `problems` names each field by JSON pointer."
    },
    503: {"description": "Kafka did not acknowledge in time; retry after `Retry-After` seconds."},
}


# Dependencies are async on purpose: FastAPI runs a plain `def` dependency in a thread pool, a thread
# hop per request that cost more than the rest of the route.
async def sender(request: Request) -> Principal:
    # Set by the signature middleware, which refuses unsigned /v1 requests before any route runs.
    principal: Principal = request.scope["state"]["principal"]
    return principal


async def intake(request: Request) -> Intake:
    value: Intake = request.app.state.intake
    return value


Sender = Annotated[Principal, Depends(sender)]
IntakeDep = Annotated[Intake, Depends(intake)]


@router.post("/reviews", status_code=202, responses=_ERRORS, tags=["hall devices, app and web"])
async def post_review(review: ReviewIn, principal: Sender, intake: IntakeDep) -> JSONResponse:  # type: ignore[valid-type]
    """One rating. 202 once Kafka acknowledged it; a retry with the same event_id is a duplicate downstream."""
    event_id, _ = await intake.accept_review(review, principal.key_id)
    return JSONResponse({"status": "accepted", "event_id": event_id}, status_code=202)


@router.post("/reviews/batch", status_code=202, responses=_ERRORS, tags=["hall devices, app and web"])
async def post_review_batch(batch: ReviewBatchIn, principal: Sender, intake: IntakeDep) -> Response:
    """A device's offline backlog. A result per item: accepted, duplicate (same event_id earlier in the
    batch) or rejected with its problems. 202 once Kafka acknowledged every accepted item; on 503 send
    the whole batch again (event ids keep it idempotent)."""
    limit = intake.settings.ingest.max_batch
    if len(batch.reviews) > limit:
        return problem_response(
            413,
            "too many reviews in one request",
            [
                Problem(
                    "/reviews",
                    f"at most {limit} reviews per request, got {len(batch.reviews)}: split the backlog",
                    "too_long",
                )
            ],
        )
    results = await intake.accept_batch(batch.reviews, principal.key_id)
    return item_results(results)


@router.post("/sms/invitations", status_code=202, responses=_ERRORS, tags=["SMS"])
async def post_sms_invitation(
    invitation: SmsInvitationIn, principal: Sender, intake: IntakeDep
) -> JSONResponse:
    """Register an invitation before sending its SMS: the reference the gateway will pass back with the
    reply, and the case it is about."""
    await intake.register_invitation(invitation, principal.key_id)
    return JSONResponse({"status": "registered", "ref": invitation.ref}, status_code=202)


@router.post("/sms/replies", responses=_ERRORS, tags=["SMS"])
async def post_sms_reply(reply: SmsReplyIn, principal: Sender, intake: IntakeDep) -> JSONResponse:
    """The gateway's webhook for a citizen's reply. Always 200 once the reply is safely kept: status
    `accepted` (a review with its stars) or `kept` (no level could be read, or the reference is unknown;
    kept with the reason for a person to look at). Do not retry a 200."""
    return JSONResponse(await intake.accept_sms_reply(reply, principal.key_id))


@router.post("/hotline/workorders", status_code=202, responses=_ERRORS, tags=["12345 hotline"])
async def post_workorder(order: WorkOrderIn, principal: Sender, intake: IntakeDep) -> JSONResponse:  # type: ignore[valid-type]
    """A forwarded work order. (order_id, version) identifies it: a resend of the same version is a
    duplicate downstream, a higher version replaces the earlier one."""
    accepted = await intake.accept_workorder(order, principal.key_id)
    return JSONResponse(
        {"status": "accepted", "order_id": accepted.order_id, "version": accepted.version}, status_code=202
    )


@router.post("/hotline/callbacks", status_code=202, responses=_ERRORS, tags=["12345 hotline"])
async def post_callback(callback: CallbackIn, principal: Sender, intake: IntakeDep) -> JSONResponse:  # type: ignore[valid-type]
    """The call-back (回访) result of a work order; callback_id is its idempotency key."""
    accepted = await intake.accept_callback(callback, principal.key_id)
    return JSONResponse(
        {"status": "accepted", "order_id": accepted.order_id, "callback_id": accepted.callback_id},
        status_code=202,
    )


@router.post("/provincial/records", status_code=202, responses=_ERRORS, tags=["provincial 好差评 interface"])
async def post_provincial(
    records: dict[str, Any] | list[Any], principal: Sender, intake: IntakeDep
) -> Response:
    """One provincial interface record (a JSON object) or several (a JSON array), as provincial
    platforms and their devices produce them. A result per record; see docs/ingest.md for the mapping."""
    items = records if isinstance(records, list) else [records]
    limit = intake.settings.ingest.max_batch
    if len(items) > limit:
        return problem_response(
            413,
            "too many records in one request",
            [Problem("", f"at most {limit} records per request, got {len(items)}: split them", "too_long")],
        )
    if not items:
        return problem_response(422, "no records", [Problem("", "send at least one record", "too_short")])
    results = await intake.accept_provincial(items, principal.key_id)
    return item_results(results)


def item_results(results: list[Any]) -> JSONResponse:
    tally = Counter(map(_STATUS, results))
    counts = {s: tally[s] for s in ("accepted", "duplicate", "rejected")}
    # 202 says Kafka holds something; with nothing accepted, the items' problems are the answer.
    status = 202 if counts["accepted"] else 422 if counts["rejected"] else 200
    body: dict[str, Any] = {**counts, "results": [r.as_dict() for r in results]}
    if status == 422:
        body = {"status": 422, "title": "no item was accepted; each item's problems say why", **body}
    return JSONResponse(body, status_code=status)
