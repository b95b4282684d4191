"""The problem ledger (问题台账): tickets, their history, and actions on them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.concurrency import run_in_threadpool

from api import queries
from api.auth import Forbidden, check_action, scope_unit
from api.commands import Outcome, new_command, submit
from api.deps import AppSettings, ClickHouse, CurrentActor, Feed, Producer
from api.schemas import ActionIn, CommandOut, Problem, QueryTime, TicketDetail, TicketList
from haochaping.domain.records import Actor, Colour, CommandAction, Role, TicketStatus

router = APIRouter(prefix="/v1", tags=["ledger"])

# What each action needs in its payload; the ledger decides whether the ticket's state allows it.
_REQUIRED: dict[CommandAction, tuple[str, ...]] = {
    CommandAction.ASSIGN: ("responsible_person",),
    CommandAction.RECORD_CALLBACK: ("satisfied",),
    CommandAction.APPEAL: ("reason",),
    CommandAction.REQUEST_NOT_FIXABLE: ("explanation",),
}


@router.get("/tickets", response_model=TicketList, summary="List tickets on the ledger")
def list_tickets(
    actor: CurrentActor,
    client: ClickHouse,
    colour: Colour | None = None,
    status: TicketStatus | None = None,
    unit_code: Annotated[str | None, Query(description="统一社会信用代码 of the unit in charge.")] = None,
    overdue: bool | None = None,
    open_only: Annotated[
        bool, Query(description="Only tickets not yet closed, void or not fixable.")
    ] = False,
    opened_since: QueryTime | None = None,
    opened_until: QueryTime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict[str, Any]:
    flt = queries.TicketFilter(
        unit_code=scope_unit(actor, unit_code),
        colour=colour,
        status=status,
        overdue=overdue,
        opened_since=opened_since,
        opened_until=opened_until,
        open_only=open_only,
    )
    page = queries.list_tickets(client, flt, limit=limit, offset=offset)
    return {"total": page.total, "limit": limit, "offset": offset, "items": page.items}


def _visible_ticket(client: Any, actor: Actor, ticket_id: str) -> dict[str, Any]:
    ticket = queries.get_ticket(client, ticket_id)
    if ticket is None:
        raise HTTPException(404, detail=f"no ticket {ticket_id!r} on the ledger")
    if actor.role is Role.UNIT_OFFICER and ticket["unit_code"] != actor.unit_code:
        raise Forbidden(
            f"ticket {ticket_id} belongs to unit {ticket['unit_code']}; "
            f"a unit officer of {actor.unit_code} may not see it"
        )
    return ticket


@router.get(
    "/tickets/{ticket_id}",
    response_model=TicketDetail,
    summary="A ticket with its whole history",
    responses={403: {"model": Problem}, 404: {"model": Problem}},
)
def get_ticket(ticket_id: str, actor: CurrentActor, client: ClickHouse) -> dict[str, Any]:
    ticket = _visible_ticket(client, actor, ticket_id)
    return {"ticket": ticket, "history": queries.ticket_history(client, ticket_id)}


def _command_out(outcome: Outcome) -> dict[str, Any]:
    command = outcome.command
    out: dict[str, Any] = {
        "command_id": command.command_id,
        "ticket_id": command.ticket_id,
        "action": command.action.value,
        "status": outcome.status,
    }
    if outcome.event is not None:
        out["event"] = outcome.event.model_dump(mode="json", exclude={"ticket"})
        out["ticket"] = outcome.event.ticket.model_dump(mode="json")
        out["reason"] = outcome.event.reason
    else:
        out["poll"] = f"/v1/commands/{command.command_id}"
    return out


@router.post(
    "/tickets/{ticket_id}/actions",
    response_model=CommandOut,
    summary="Act on a ticket: assign, rectify, call back, appeal, decide, close (销号)",
    responses={
        200: {"description": "The ledger applied the action; the body holds the ticket's new state."},
        202: {"description": "The ledger has not answered in time; poll the Location."},
        403: {"model": Problem, "description": "The role or unit may not take this action on this ticket."},
        404: {"model": Problem},
        409: {"model": CommandOut, "description": "The ledger refused the action; the reason says why."},
    },
)
async def act(
    ticket_id: str,
    body: ActionIn,
    response: Response,
    actor: CurrentActor,
    client: ClickHouse,
    producer: Producer,
    feed: Feed,
    settings: AppSettings,
) -> dict[str, Any]:
    """The action goes to the ledger on the stream as a command; the answer is the ledger's own:
    200 applied, 409 refused (with the reason), or 202 pending with a link to poll if the ledger did
    not answer within ``api.command_wait_seconds``. The page shows only what the ledger did."""
    if actor.role is Role.AUDITOR:
        raise Forbidden("an auditor has read-only access and may not act on tickets")
    missing = [name for name in _REQUIRED.get(body.action, ()) if getattr(body, name) in (None, "")]
    if missing:
        raise HTTPException(422, detail=f"{body.action.value} needs {', '.join(missing)} in the body")
    # The ticket's unit decides who may act: from ClickHouse, or from the stream when the sink lags.
    ticket = await run_in_threadpool(queries.get_ticket, client, ticket_id)
    unit = ticket["unit_code"] if ticket else feed.ticket_unit(ticket_id)
    if unit is None:
        raise HTTPException(404, detail=f"no ticket {ticket_id!r} on the ledger")
    payload = body.model_dump(exclude={"action"}, exclude_none=True)
    check_action(actor, body.action, unit, payload)
    command = new_command(ticket_id, body.action, actor, payload)
    outcome = await submit(
        command, producer=producer, feed=feed, wait_seconds=settings.api.command_wait_seconds
    )
    if outcome.status == "refused":
        response.status_code = 409
    elif outcome.status == "pending":
        response.status_code = 202
        response.headers["Location"] = f"/v1/commands/{command.command_id}"
    return _command_out(outcome)


@router.get(
    "/commands/{command_id}",
    response_model=CommandOut,
    summary="The ledger's answer to an earlier action",
    responses={404: {"model": Problem}},
)
def get_command(command_id: str, actor: CurrentActor, client: ClickHouse, feed: Feed) -> dict[str, Any]:
    """``status`` is applied or refused once the ledger answered; 404 while no answer is known yet
    (the command may still be on its way)."""
    event = feed.outcome(command_id)
    if event is not None:
        if actor.role is Role.UNIT_OFFICER and event.ticket.unit_code != actor.unit_code:
            raise Forbidden(f"command {command_id} concerns another unit's ticket")
        status = "refused" if event.type.value == "refused" else "applied"
        return {
            "command_id": command_id,
            "ticket_id": event.ticket_id,
            "action": None,
            "status": status,
            "reason": event.reason,
            "event": event.model_dump(mode="json", exclude={"ticket"}),
            "ticket": event.ticket.model_dump(mode="json"),
        }
    stored = queries.command_event(client, command_id)
    if stored is None:
        raise HTTPException(
            404, detail=f"no answer from the ledger to command {command_id!r} yet; ask again in a moment"
        )
    ticket = _visible_ticket(client, actor, stored["ticket_id"])
    return {
        "command_id": command_id,
        "ticket_id": stored["ticket_id"],
        "action": None,
        "status": "refused" if stored["type"] == "refused" else "applied",
        "reason": stored.get("reason"),
        "event": stored,
        "ticket": ticket,
    }
