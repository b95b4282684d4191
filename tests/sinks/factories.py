"""Records the stream would write, made deterministic, and small helpers of the sink tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import orjson

from haochaping.domain.contract import BEIJING
from haochaping.domain.records import (
    AcceptedReview,
    Alert,
    AlertKind,
    Colour,
    FraudFlag,
    LedgerEvent,
    LedgerEventType,
    Ticket,
    TicketStatus,
)

UNITS = ("11330102002495613X", "11330102002495621R", "12330100MB0000000A")
BASE_TIME = datetime(2026, 11, 25, 9, 0, tzinfo=BEIJING)


def review(
    i: int, *, stars: int | None = None, unit: str | None = None, fraud: bool = False, **kw: Any
) -> AcceptedReview:
    """The i-th review of a deterministic little city: 3 units, 2 windows each, 5 levels, several minutes."""
    fields: dict[str, Any] = {
        "event_id": f"ev-{i:07d}",
        "channel": ("hall_device", "app", "sms")[i % 3],
        "stars": stars if stars is not None else (i * 7) % 5 + 1,
        "case_no": f"330102-2026-{i:06d}",
        "region_code": "330102",
        "hall_id": "hall-01" if i % 3 == 0 else None,
        "unit_code": unit or UNITS[i % len(UNITS)],
        "unit_name": "某单位",
        "window_id": f"w-{i % 2}" if i % 3 == 0 else None,
        "staff_id": f"s-{i % 4}",
        "item_code": f"item-{i % 5}",
        "rated_at": (BASE_TIME + timedelta(seconds=7 * i)).isoformat(),
        "text": "窗口态度很好" if i % 11 == 0 else None,
        "tags": ("t1", "t2") if i % 13 == 0 else (),
        "fraud_flags": (FraudFlag.DEVICE_BURST,) if fraud else (),
    }
    fields.update(kw)
    return AcceptedReview.model_validate(fields)


def ticket(
    ticket_id: str, version: int, *, status: TicketStatus = TicketStatus.NEW, unit: str = UNITS[0]
) -> Ticket:
    return Ticket(
        ticket_id=ticket_id,
        version=version,
        source="review",
        source_id="ev-0000001",
        opened_at=BASE_TIME,
        colour=Colour.RED,
        original_colour=Colour.BLUE,
        reasons=(),
        region_code="330102",
        unit_code=unit,
        unit_name="某单位",
        stars=1,
        callback_due=BASE_TIME + timedelta(hours=2),
        due=BASE_TIME + timedelta(days=1),
        status=status,
        measures=("当场整改",) if version > 1 else (),
    )


def ledger_event(t: Ticket, kind: LedgerEventType) -> LedgerEvent:
    return LedgerEvent(
        event_id=f"{t.ticket_id}:{t.version}",
        ticket_id=t.ticket_id,
        type=kind,
        at=BASE_TIME + timedelta(minutes=t.version),
        actor="system",
        ticket=t,
    )


def alert(i: int) -> Alert:
    return Alert(
        alert_id=f"al-{i}",
        kind=AlertKind.RED_TICKET,
        at=BASE_TIME + timedelta(minutes=i),
        unit_code=UNITS[0],
        ticket_id=f"tk-{i}",
        colour=Colour.RED,
        detail="新的红色工单",
    )


def dumps(record: Any) -> bytes:
    return orjson.dumps(record.model_dump(mode="json"))


def wait_for(check: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def count(client: Any, sql: str) -> int:
    return int(client.query(sql).result_rows[0][0])
