"""What senders POST: the contract's models, less the fields ingest sets, plus what senders need.

A sender never sends ``received_at`` or ``sender`` (ingest sets them) nor a pseudonym: it sends the
rater's phone or ID number (``rater_phone`` / ``rater_id_number``), which ingest replaces by a keyed
pseudonym before anything is written; the clear value is never stored or logged.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, create_model
from pydantic.fields import FieldInfo

from haochaping.domain.contract import (
    Code,
    Name,
    RegionCode,
    Review,
    Stage,
    UnitCode,
    WorkOrder,
    WorkOrderCallback,
)

# Spaces, dashes, brackets and +86 are folded away before the pseudonym is made (privacy.normalise_identity).
Phone = Annotated[str, StringConstraints(min_length=3, max_length=32, pattern=r"^[0-9+\-() ]+$")]
IdNumber = Annotated[str, StringConstraints(min_length=15, max_length=18, pattern=r"^[0-9]{14,17}[0-9Xx]$")]
# Fields whose submitted value must never be echoed back, not even in an error message.
IDENTITY_FIELDS = frozenset({"rater_phone", "rater_id_number", "caller_phone", "caller_id_number", "phone"})
SET_BY_INGEST = ("received_at", "sender", "rater_id", "caller_id")


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _input_model(name: str, contract: type[BaseModel], doc: str, **extra: Any) -> type[BaseModel]:
    fields: dict[str, Any] = {
        field: (info.annotation, info)
        for field, info in contract.model_fields.items()
        if field not in SET_BY_INGEST
    }
    fields.update(extra)
    model = create_model(name, __base__=_Input, __doc__=doc, **fields)
    return model


_phone = FieldInfo.from_annotated_attribute(
    Phone | None,
    Field(default=None, description="The rater's phone number; replaced by a pseudonym at once."),
)
_id_number = FieldInfo.from_annotated_attribute(
    IdNumber | None,
    Field(default=None, description="The rater's ID number; replaced by a pseudonym at once."),
)

ReviewIn = _input_model(
    "ReviewIn",
    Review,
    "One rating, as a hall device, the app or the web sends it.",
    rater_phone=(Phone | None, _phone),
    rater_id_number=(IdNumber | None, _id_number),
)
WorkOrderIn = _input_model(
    "WorkOrderIn",
    WorkOrder,
    "A 12345 work order; a later version of the same order_id replaces the earlier one.",
    caller_phone=(Phone | None, _phone),
    caller_id_number=(IdNumber | None, _id_number),
    # Bounded so that every consumer's JSON reader (and orjson, 64-bit) can carry it exactly.
    version=(
        int,
        Field(
            default=1, ge=1, le=2**53 - 1, description="Revision of the order; (order_id, version) is unique."
        ),
    ),
)
CallbackIn = _input_model(
    "CallbackIn", WorkOrderCallback, "The citizen's answer on the 12345 call-back (回访) of a work order."
)


class ReviewBatchIn(_Input):
    """A device's offline backlog: each item is a ReviewIn, answered one by one."""

    reviews: list[dict[str, Any]] = Field(
        min_length=1,
        description="The reviews (ReviewIn objects), oldest first; at most the configured batch size.",
    )


class ValidReviewBatch(_Input):
    """A batch whose every item is a valid ReviewIn: the common case, validated in one pass.

    Not an endpoint's model (the endpoint answers item by item with ReviewBatchIn); a body this
    model refuses is answered that way.
    """

    reviews: list[ReviewIn] = Field(min_length=1)  # type: ignore[valid-type]


class SmsInvitationIn(_Input):
    """Registered by the service that sends the invitation SMS, before (or as) it sends it."""

    ref: Code = Field(description="The reference the gateway will pass back with the citizen's reply.")
    case_no: Code
    stage: Stage = "overall"
    region_code: RegionCode
    unit_code: UnitCode
    unit_name: Name
    item_code: Code
    item_name: Name | None = None
    hall_id: Code | None = None
    window_id: Code | None = None
    staff_id: Code | None = None
    sent_at: AwareDatetime | None = Field(default=None, description="When the invitation SMS was sent.")


class SmsReplyIn(_Input):
    """What the SMS gateway's webhook posts for one citizen reply (上行短信)."""

    message_id: Code = Field(description="The gateway's id of this reply; a redelivered reply keeps its id.")
    ref: Code = Field(description="The invitation reference the reply answers.")
    content: Annotated[str, StringConstraints(max_length=1000)] = Field(
        description="The reply as the citizen typed it."
    )
    phone: Phone | None = Field(
        default=None, description="The citizen's number; replaced by a pseudonym at once."
    )
    received_at: AwareDatetime | None = Field(
        default=None, description="When the gateway received the reply."
    )


__all__ = [
    "IDENTITY_FIELDS",
    "CallbackIn",
    "ReviewBatchIn",
    "ReviewIn",
    "SmsInvitationIn",
    "SmsReplyIn",
    "ValidReviewBatch",
    "WorkOrderIn",
]
