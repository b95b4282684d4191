"""Response and request bodies of the API, as the OpenAPI document shows them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from haochaping.domain.records import CommandAction

_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def _in_store_range(value: datetime) -> datetime:
    # ClickHouse's DateTime64 holds 1900..2299; the figures start with the 好差评 system (2019).
    if not _EARLIEST <= value < _LATEST:
        raise ValueError("give a time between 2000-01-01 and 2099-12-31, with its offset (+08:00)")
    return value


QueryTime = Annotated[AwareDatetime, AfterValidator(_in_store_range)]


class FiguresOut(BaseModel):
    total: int = Field(description="Ratings counted.")
    counts: dict[str, int] = Field(
        description="Ratings per level, keyed by stars (1 = 非常不满意 … 5 = 非常满意).",
        examples=[{"1": 2, "2": 3, "3": 10, "4": 25, "5": 60}],
    )
    satisfaction_rate: float | None = Field(
        description="满意率 = (5 + 4 + 3 stars) / all; null when nothing was rated.", examples=[0.95]
    )
    bad_rate: float | None = Field(description="差评率 = (2 + 1 stars) / all.", examples=[0.05])
    score: float | None = Field(description="Mean of the level scores 10/8/6/3/0 (0–10).", examples=[8.49])


class SeriesPointOut(FiguresOut):
    at: datetime = Field(description="Start of the bucket, Beijing time.")


class SatisfactionOut(FiguresOut):
    filter: dict[str, Any] = Field(description="The filter as applied (a unit officer's unit filled in).")
    granularity: str | None
    series: list[SeriesPointOut] | None


class RankItem(FiguresOut):
    rank: int
    key: str = Field(description="The unit code, hall, window, staff member, region or item ranked.")
    name: str | None = Field(description="The unit's name, for units.")


class RankingOut(BaseModel):
    filter: dict[str, Any]
    by: str
    metric: str
    order: str
    min_sample: int
    items: list[RankItem]


class TicketList(BaseModel):
    total: int = Field(description="Tickets matching the filter.")
    limit: int
    offset: int
    items: list[dict[str, Any]] = Field(description="Tickets in their current state, newest first.")


class TicketDetail(BaseModel):
    ticket: dict[str, Any] = Field(description="The ticket in its current state.")
    history: list[dict[str, Any]] = Field(description="Every ledger event of the ticket, oldest first.")


class ActionIn(BaseModel):
    """An action on a ticket. Which fields matter depends on the action."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "action": "assign",
                    "responsible_person": "王科长",
                    "measures": ["当日电话致歉", "窗口作风整顿"],
                },
                {"action": "record_callback", "satisfied": True, "note": "群众表示满意"},
                {"action": "appeal", "reason": "评价人当日未到窗口办件，系误评"},
                {"action": "close"},
            ]
        },
    )

    action: CommandAction
    responsible_person: str | None = Field(
        default=None, max_length=64, description="assign: who answers for it."
    )
    unit_code: str | None = Field(
        default=None, description="assign: hand to another unit (supervisors only)."
    )
    unit_name: str | None = Field(default=None, max_length=128)
    measures: list[str] | None = Field(default=None, max_length=20, description="assign: 整改措施.")
    note: str | None = Field(default=None, max_length=2000, description="report_rectified / record_callback.")
    satisfied: bool | None = Field(default=None, description="record_callback: the citizen is satisfied.")
    reason: str | None = Field(
        default=None, max_length=2000, description="appeal: why the review is mistaken."
    )
    explanation: str | None = Field(
        default=None, max_length=2000, description="request_not_fixable: 解释说明 to the citizen."
    )


class CommandOut(BaseModel):
    command_id: str
    ticket_id: str
    action: str | None = Field(default=None, description="The action, when this process published it.")
    status: str = Field(description="applied, refused, or pending (the ledger has not answered yet).")
    reason: str | None = Field(default=None, description="Why the ledger refused, in words.")
    event: dict[str, Any] | None = Field(default=None, description="The ledger event that answered.")
    ticket: dict[str, Any] | None = Field(default=None, description="The ticket after the action.")
    poll: str | None = Field(default=None, description="Where to ask again while pending.")


class Problem(BaseModel):
    detail: Any = Field(description="What was wrong and what would be right.")
