"""Factories for contract objects: one place that knows what a valid review looks like."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from haochaping.domain.contract import BEIJING, Channel, Review, WorkOrder, WorkOrderCallback, WorkOrderType

UNIT_CODE = "11330102002495613X"
OTHER_UNIT_CODE = "11330102002495621R"


def review_payload(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "event_id": "dev-0042-20261125-000137",
        "channel": "hall_device",
        "stars": 5,
        "case_no": "330102-2026-000137",
        "region_code": "330102",
        "hall_id": "hall-01",
        "unit_code": UNIT_CODE,
        "unit_name": "杭州市上城区市场监督管理局",
        "window_id": "w-07",
        "staff_id": "s-1031",
        "item_code": "330102-0001-XK-01",
        "item_name": "食品经营许可",
        "device_id": "dev-0042",
        "rated_at": "2026-11-25T09:30:00+08:00",
    }
    payload.update(overrides)
    return payload


def review_factory(**overrides: Any) -> Review:
    if isinstance(overrides.get("channel"), Channel):
        overrides["channel"] = overrides["channel"].value
    return Review.model_validate(review_payload(**overrides))


def workorder_factory(**overrides: Any) -> WorkOrder:
    payload: dict[str, Any] = {
        "order_id": "12345-20261125-0001",
        "kind": WorkOrderType.COMPLAINT.value,
        "urgency": "normal",
        "region_code": "330102",
        "unit_code": UNIT_CODE,
        "unit_name": "杭州市上城区市场监督管理局",
        "text": "办理营业执照等了两个小时",
        "created_at": datetime(2026, 11, 25, 10, 0, tzinfo=BEIJING).isoformat(),
    }
    payload.update(overrides)
    return WorkOrder.model_validate(payload)


def callback_factory(**overrides: Any) -> WorkOrderCallback:
    payload: dict[str, Any] = {
        "order_id": "12345-20261125-0001",
        "callback_id": "cb-0001",
        "stars": 4,
        "resolved": True,
        "called_at": "2026-11-27T15:00:00+08:00",
    }
    payload.update(overrides)
    return WorkOrderCallback.model_validate(payload)
