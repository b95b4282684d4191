"""The event contract: what a review, a 12345 work order and its call-back look like on the wire.

Every sender's input is converted to these models at the edge (``ingest/``); everything after Kafka
reads only these. The JSON Schema of each (``haochaping schema``) is the document a device vendor
implements against.

Direction of the rating is never left to guesswork: the contract carries ``stars`` (1–5, 5 best).
The GB/T 39046-2020 satisfaction code runs the other way (1 = 非常满意 … 5 = 非常不满意) and is
converted with :meth:`Level.from_gbt39046`; provincial interface records (``satisfaction`` 1 =
非常不满意 … 5 = 非常满意) already run like stars.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

BEIJING = ZoneInfo("Asia/Shanghai")
SCHEMA_VERSION: Literal[1] = 1


class Level(enum.IntEnum):
    """五级评价: the five levels, valued as stars (5 best)."""

    VERY_DISSATISFIED = 1  # 非常不满意
    DISSATISFIED = 2  # 不满意
    BASICALLY_SATISFIED = 3  # 基本满意
    SATISFIED = 4  # 满意
    VERY_SATISFIED = 5  # 非常满意

    @classmethod
    def from_stars(cls, stars: int) -> Level:
        return cls(stars)

    @classmethod
    def from_gbt39046(cls, code: int) -> Level:
        """GB/T 39046-2020 Annex A.8 codes 满意度 1 = 非常满意 … 5 = 非常不满意."""
        if not 1 <= code <= 5:
            raise ValueError(f"GB/T 39046 satisfaction code must be 1..5, got {code}")
        return cls(6 - code)

    def to_gbt39046(self) -> int:
        return 6 - int(self)

    @property
    def score(self) -> int:
        """Score on the 0–10 scale (×10 for the 100-point scale)."""
        return _SCORES[self]

    @property
    def is_bad(self) -> bool:
        """差评: 不满意 and 非常不满意."""
        return self <= Level.DISSATISFIED

    @property
    def is_satisfied(self) -> bool:
        """Counts toward 满意率: 基本满意 and better."""
        return self >= Level.BASICALLY_SATISFIED

    @property
    def label(self) -> str:
        return _LABELS[self]


_SCORES = {
    Level.VERY_SATISFIED: 10,
    Level.SATISFIED: 8,
    Level.BASICALLY_SATISFIED: 6,
    Level.DISSATISFIED: 3,
    Level.VERY_DISSATISFIED: 0,
}
_LABELS = {
    Level.VERY_SATISFIED: "非常满意",
    Level.SATISFIED: "满意",
    Level.BASICALLY_SATISFIED: "基本满意",
    Level.DISSATISFIED: "不满意",
    Level.VERY_DISSATISFIED: "非常不满意",
}
LEVEL_BY_LABEL = {label: level for level, label in _LABELS.items()}
_WORST_BAD = int(max(level for level in Level if level.is_bad))  # the most stars that are still 差评


class Channel(enum.StrEnum):
    """评价渠道: web (PC 端, provincial pf 1), app (移动端, 2), qr (二维码, 3), hall_device (窗口评价器, 4),
    hall_terminal (自助终端, 5), hotline (12345 电话, 6), sms (短信, 7)."""

    WEB = "web"  # 1 PC 端
    APP = "app"  # 2 移动端 (app, mini-program)
    QR = "qr"  # 3 二维码
    HALL_DEVICE = "hall_device"  # 4 窗口评价器 / 平板
    HALL_TERMINAL = "hall_terminal"  # 5 自助终端及其他
    HOTLINE = "hotline"  # 6 电话 (12345)
    SMS = "sms"  # 7 短信

    @property
    def on_site(self) -> bool:
        """一次一评 at a hall window, as opposed to 一事一评 online."""
        return self in (Channel.HALL_DEVICE, Channel.HALL_TERMINAL)


# The default mapping of the provincial `pf` code; a source may carry its own (some swap 6 and 7).
PROVINCIAL_CHANNEL_CODES: dict[str, Channel] = {
    "1": Channel.WEB,
    "2": Channel.APP,
    "3": Channel.QR,
    "4": Channel.HALL_DEVICE,
    "5": Channel.HALL_TERMINAL,
    "6": Channel.HOTLINE,
    "7": Channel.SMS,
}


class WorkOrderType(enum.StrEnum):
    """12345 工单类型."""

    COMPLAINT = "complaint"  # 投诉
    REPORT = "report"  # 举报
    HELP = "help"  # 求助
    INQUIRY = "inquiry"  # 咨询
    SUGGESTION = "suggestion"  # 建议
    PRAISE = "praise"  # 表扬


class Urgency(enum.StrEnum):
    """12345 紧急程度."""

    EXTRA_URGENT = "extra_urgent"  # 特急
    URGENT = "urgent"  # 紧急
    NORMAL = "normal"  # 一般


CODE_PATTERN = r"^[0-9A-Za-z_.:\-]+$"
# 行政区划代码: 6 digits (county level) or 9/12 (township / village).
REGION_PATTERN = r"^[0-9]{6}([0-9]{3}){0,2}$"
# 统一社会信用代码: 18 characters, digits and capital letters except I, O, S, V, Z.
UNIT_PATTERN = r"^[0-9A-HJ-NPQRTUWXY]{2}[0-9]{6}[0-9A-HJ-NPQRTUWXY]{10}$"
PSEUDONYM_PATTERN = r"^p1_[0-9a-f]{32}$"
STAGE_PATTERN = r"^[a-z][a-z_]{0,31}$"

Code = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=CODE_PATTERN)]
RegionCode = Annotated[str, StringConstraints(pattern=REGION_PATTERN)]
UnitCode = Annotated[str, StringConstraints(pattern=UNIT_PATTERN)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True)]
FreeText = Annotated[str, StringConstraints(max_length=2000)]
# A keyed pseudonym made at the edge (haochaping.domain.privacy.pseudonym); never a clear phone or ID.
Pseudonym = Annotated[str, StringConstraints(pattern=PSEUDONYM_PATTERN)]
Stage = Annotated[str, StringConstraints(pattern=STAGE_PATTERN)]


class _Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False, str_strip_whitespace=True)


class Review(_Contract):
    """One rating of one government service (一次一评 / 一事一评)."""

    event_id: Code = Field(
        description="Sender-chosen unique id of this rating; the idempotency key. A retry sends the same id.",
        examples=["dev-0042-20261125-000137"],
    )
    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, description="Version of this contract.")
    channel: Channel = Field(description="Where the rating was given.")
    stars: int = Field(
        ge=1, le=5, description="The level as stars: 1 = 非常不满意 … 5 = 非常满意 (5 is best).", examples=[5]
    )
    case_no: Code = Field(description="办件编号: the case that was handled.", examples=["330102-2026-000137"])
    stage: Stage = Field(
        default="overall",
        description="Stage of a multi-stage case (e.g. accept 受理, approve 审批, deliver 出件) or 'overall'. "
        "One rating per case and stage.",
    )
    region_code: RegionCode = Field(description="行政区划代码 of the place of service.", examples=["330102"])
    hall_id: Code | None = Field(default=None, description="Service hall; absent for online channels.")
    unit_code: UnitCode = Field(
        description="统一社会信用代码 of the unit that handled the case (谁办理谁负责).",
        examples=["11330102002495613X"],
    )
    unit_name: Name = Field(description="Name of that unit.", examples=["杭州市上城区市场监督管理局"])
    window_id: Code | None = Field(default=None, description="Window at the hall, if any.")
    staff_id: Code | None = Field(default=None, description="Staff member who handled the case, if known.")
    item_code: Code = Field(description="事项编码 of the service item.", examples=["330102-0001-XK-01"])
    item_name: Name | None = Field(default=None, description="事项名称.")
    device_id: Code | None = Field(default=None, description="Evaluation device or terminal that sent it.")
    rated_at: AwareDatetime = Field(description="When the citizen rated, with a UTC offset (+08:00).")
    received_at: AwareDatetime | None = Field(
        default=None, description="When ingest received it; set by ingest, not by senders."
    )
    tags: tuple[Code, ...] = Field(default=(), max_length=20, description="Tag codes the citizen picked.")
    text: FreeText | None = Field(default=None, description="The citizen's own words.")
    real_name: bool = Field(default=False, description="Whether the rater is identified (实名).")
    rater_id: Pseudonym | None = Field(
        default=None, description="Keyed pseudonym of the rater, made by ingest; never a clear phone or ID."
    )
    follow_up: bool = Field(
        default=False, description="追评: a second rating after a bad review was handled."
    )
    sender: Code | None = Field(
        default=None, description="Key id of the authenticated sender; set by ingest."
    )

    @property
    def level(self) -> Level:
        return Level(self.stars)

    @property
    def is_bad(self) -> bool:
        # Level.is_bad by the stars alone: building the Level (an enum lookup) cost more than the rest.
        return self.stars <= _WORST_BAD

    @property
    def dedup_key(self) -> str:
        """One rating per case and stage; a follow-up has a slot of its own."""
        return f"{self.case_no}|{self.stage}|{'f' if self.follow_up else 'r'}"


class WorkOrder(_Contract):
    """A 12345 hotline work order (工单) forwarded to the pipeline. Versions replace earlier ones."""

    order_id: Code = Field(
        description="Work-order id in the hotline system.", examples=["12345-20261125-0001"]
    )
    version: int = Field(default=1, ge=1, description="Revision of the order; (order_id, version) is unique.")
    schema_version: Literal[1] = SCHEMA_VERSION
    kind: WorkOrderType = Field(
        description="投诉 complaint, 举报 report, 求助 help, 咨询 inquiry, 建议, 表扬."
    )
    urgency: Urgency = Field(default=Urgency.NORMAL, description="特急 / 紧急 / 一般.")
    region_code: RegionCode
    unit_code: UnitCode = Field(description="承办单位: the unit in charge.")
    unit_name: Name
    other_unit_codes: tuple[UnitCode, ...] = Field(
        default=(),
        max_length=20,
        description="Further units the order names (a complaint about several units).",
    )
    case_no: Code | None = Field(default=None, description="办件编号, when the order is about a case.")
    item_code: Code | None = None
    title: Name | None = None
    text: FreeText = Field(description="What the caller said, as recorded by the operator.")
    real_name: bool = False
    caller_id: Pseudonym | None = Field(
        default=None, description="Keyed pseudonym of the caller, made by ingest."
    )
    created_at: AwareDatetime = Field(description="When the hotline created the order.")
    received_at: AwareDatetime | None = None
    sender: Code | None = None


class WorkOrderCallback(_Contract):
    """The citizen's answer when the hotline called back (回访) on a work order."""

    order_id: Code
    callback_id: Code = Field(description="Id of this call-back in the hotline system; the idempotency key.")
    schema_version: Literal[1] = SCHEMA_VERSION
    stars: int = Field(ge=1, le=5, description="Satisfaction on the call-back as stars (5 best).")
    resolved: bool = Field(description="Whether the citizen says the problem was solved.")
    text: FreeText | None = None
    called_at: AwareDatetime
    received_at: AwareDatetime | None = None
    sender: Code | None = None

    @property
    def level(self) -> Level:
        return Level(self.stars)


CONTRACTS: dict[str, type[BaseModel]] = {
    "review": Review,
    "workorder": WorkOrder,
    "workorder-callback": WorkOrderCallback,
}


def json_schema(name: str) -> dict[str, Any]:
    model = CONTRACTS[name]
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://haochaping.example/schemas/{name}.v{SCHEMA_VERSION}.json"
    return schema


def now_beijing() -> datetime:
    return datetime.now(BEIJING)
