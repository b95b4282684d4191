"""From a sender's input to records on Kafka: the layer under the routes.

Every record carries the receive time and the sender's key id; identities are pseudonymised here,
before a record exists. Keys keep one unit's reviews (and one work order's versions) in order on
one partition.
"""

from __future__ import annotations

import base64
import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import Any

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from haochaping.domain import provincial, sms
from haochaping.domain.contract import Channel, Code, Review, WorkOrder, WorkOrderCallback, now_beijing
from haochaping.domain.privacy import pseudonym
from haochaping.domain.problems import Problem
from haochaping.domain.records import DeadLetter
from haochaping.settings import Settings
from ingest.errors import problems_of
from ingest.invitations import InvitationRegistry, invitation_topic
from ingest.metrics import IngestMetrics
from ingest.payloads import ReviewIn, SmsInvitationIn, SmsReplyIn
from ingest.producer import Delivered, EventProducer, OutgoingRecord

_SENDER = TypeAdapter(Code)
_TIME = TypeAdapter(datetime)  # pydantic's JSON form of a time ("Z" for UTC), as in Review's JSON
_CHANNEL = attrgetter("channel")
_INPUTS = TypeAdapter(list[ReviewIn])  # type: ignore[valid-type]
_WITHOUT_IDENTITIES = {"__all__": {"rater_phone", "rater_id_number"}}
# Where the fields ingest sets go in a Review's JSON, between the input's own fields (checked below).
_FIRST = b'{"event_id":'
_NEXT_ITEM = b'},{"event_id":'
_BEFORE_RECEIVED_AT = b',"tags":'
_BEFORE_RATER_ID = b',"follow_up":'
_REAL_NAME_FALSE = b',"real_name":false'


def _check_review_layout() -> None:
    """The byte layout review_values relies on follows from the contract's field order: say so if it changes."""
    written = [name for name in ReviewIn.model_fields if name not in ("rater_phone", "rater_id_number")]
    review = list(Review.model_fields)
    expected = [name for name in review if name not in ("received_at", "rater_id", "sender")]
    layout_holds = (
        written == expected
        and written[0] == "event_id"
        and review[review.index("received_at") + 1] == "tags"
        and review[review.index("rater_id") - 1 : review.index("rater_id") + 2]
        == ["real_name", "rater_id", "follow_up"]
        and review[-1] == "sender"
        and written[-1] == "follow_up"
    )
    if not layout_holds:
        raise RuntimeError(
            "Review's field order changed: ingest.intake.review_values splices received_at before tags, "
            "rater_id between real_name and follow_up and sender at the end; update it to the new order"
        )


_check_review_layout()


class RegistryNotReady(RuntimeError):
    """The invitation registry is still being read; the gateway should retry shortly."""


@dataclass(slots=True)
class ItemResult:
    index: int
    status: str  # accepted | duplicate | rejected
    event_id: str | None = None
    problems: list[Problem] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "status": self.status}
        if self.event_id is not None:
            out["event_id"] = self.event_id
        if self.problems:
            out["problems"] = [p.as_dict() for p in self.problems]
        return out


class Intake:
    def __init__(
        self,
        settings: Settings,
        producer: EventProducer,
        metrics: IngestMetrics,
        invitations: InvitationRegistry,
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.metrics = metrics
        self.invitations = invitations
        # Records carry the sender's key id as a contract Code: a key id that is not one is a
        # configuration error, found here rather than as a failed request.
        for key_id in settings.ingest.sender_keys:
            try:
                _SENDER.validate_python(key_id)
            except ValidationError as exc:
                raise ValueError(
                    f"sender key id {key_id!r} in ingest.sender_keys is not a valid code: use 1-64 "
                    "characters of A-Z a-z 0-9 _ . : -"
                ) from exc
        self._pseudonym_key = settings.ingest.pseudonym_key.get_secret_value().encode()
        kafka = settings.kafka
        self.reviews_topic = kafka.topic("reviews.raw")
        self.workorders_topic = kafka.topic("workorders.raw")
        self.deadletter_topic = kafka.topic("deadletter")
        self.invitations_topic = invitation_topic(settings)
        self._channel_codes: dict[str, dict[str, Channel]] = {
            source: {code: Channel(ch) for code, ch in codes.items()}
            for source, codes in settings.ingest.provincial_channel_codes.items()
        }

    # -- identities ---------------------------------------------------------------------------------

    def _identity(self, phone: str | None, id_number: str | None) -> str | None:
        # An ID number names one person; a phone may be shared: prefer the ID when both are given.
        value = id_number or phone
        return pseudonym(value, self._pseudonym_key) if value else None

    # -- records ------------------------------------------------------------------------------------

    def _review_record(self, review: Review) -> OutgoingRecord:
        return OutgoingRecord(
            self.reviews_topic, review.unit_code.encode(), orjson.dumps(review.model_dump(mode="json"))
        )

    def review_from_input(self, item: BaseModel, sender: str, received_at: datetime) -> Review:
        return Review.model_validate_json(self.review_value(item, sender, received_at))

    def review_value(self, item: BaseModel, sender: str, received_at: datetime) -> bytes:
        """The Review's JSON (as ``Review.model_dump(mode="json")`` would write it) from a validated input."""
        return self.review_values([item], sender, received_at)[0]

    def review_values(self, items: list[Any], sender: str, received_at: datetime) -> list[bytes]:
        """Each validated ReviewIn's Review JSON, as ``Review.model_dump(mode="json")`` would write it.

        The input model carries the Review's own field types and constraints, and Review has no
        model-level rules, so an input is validated once: the fields ingest sets are valid by
        construction (the sender's key id was checked at start-up).

        On the batch path this was the largest cost after the producer (a dump, a dict and an orjson
        call per review). pydantic now writes all the inputs, identities left out, in one call, in the
        Review's form and order; the fields ingest sets are spliced in as bytes: received_at before
        ``,"tags":``, rater_id before ``,"follow_up":`` (real_name set when there is a rater), sender at
        the end, and the items are cut apart at ``},{"event_id":``. Those markers cannot occur inside a
        value: a quote inside a JSON string is always escaped (``\\"``), and no field holds an object.
        The field order they rely on is checked at import (_check_review_layout); a property test
        compares the result with Review's own JSON for arbitrary strings.
        """
        if not items:
            return []
        received_at_json = orjson.dumps(_TIME.dump_python(received_at, mode="json"))
        received = b',"received_at":' + received_at_json + _BEFORE_RECEIVED_AT
        written = _INPUTS.dump_json(items, exclude=_WITHOUT_IDENTITIES).replace(_BEFORE_RECEIVED_AT, received)
        # b'[{"event_id":' … '},{"event_id":' … '}]' → the inside of each object after its first key.
        parts = written[1 + len(_FIRST) : -2].split(_NEXT_ITEM)
        if len(parts) != len(items):
            raise RuntimeError(f"cut {len(items)} reviews' JSON into {len(parts)} parts")
        last = b',"sender":' + orjson.dumps(sender) + b"}"
        values: list[bytes] = []
        for item, part in zip(items, parts, strict=True):
            rater = self._identity(item.rater_phone, item.rater_id_number)
            cut = part.rindex(_BEFORE_RATER_ID)
            head = part[:cut]
            if rater is None:
                rater_id = b',"rater_id":null'
            else:
                rater_id = b',"rater_id":"' + rater.encode() + b'"'
                if head.endswith(_REAL_NAME_FALSE):  # giving an identity makes it a real-name rating
                    head = head[: -len(b"false")] + b"true"
            values.append(b"".join((_FIRST, head, rater_id, part[cut:], last)))
        return values

    async def accept_review(self, item: Any, sender: str) -> tuple[str, Delivered]:
        """Send one review (a validated ReviewIn); its event id and where Kafka put it."""
        value = self.review_value(item, sender, now_beijing())
        record = OutgoingRecord(self.reviews_topic, item.unit_code.encode(), value)
        delivered = await self.producer.send_all([record])
        self.metrics.count(item.channel.value, "accepted")
        event_id: str = item.event_id
        return event_id, delivered[0]

    async def accept_batch(self, items: Sequence[Any], sender: str) -> list[ItemResult]:
        """Validate each item on its own (a ReviewIn is taken as it is); send the valid ones together;
        a result per item, in order."""
        received_at = now_beijing()
        results: list[ItemResult] = []
        accepted: list[Any] = []
        seen: set[str] = set()
        for index, raw in enumerate(items):
            item: Any = raw
            if not isinstance(raw, ReviewIn):
                try:
                    item = ReviewIn.model_validate(raw)
                except ValidationError as exc:
                    problems = problems_of(exc, prefix=("reviews", index))
                    results.append(ItemResult(index, "rejected", _event_id_of(raw), problems))
                    self.metrics.count(
                        _channel_of(raw), "rejected", problems[0].type if problems else "invalid"
                    )
                    continue
            event_id: str = item.event_id
            if event_id in seen:
                results.append(ItemResult(index, "duplicate", event_id))
                self.metrics.count(item.channel.value, "duplicate", "in_batch")
                continue
            seen.add(event_id)
            accepted.append(item)
            results.append(ItemResult(index, "accepted", event_id))
        topic = self.reviews_topic
        values = self.review_values(accepted, sender, received_at)
        await self.producer.send_all(
            [
                OutgoingRecord(topic, item.unit_code.encode(), value)
                for item, value in zip(accepted, values, strict=True)
            ]
        )
        # Counted by the enum member (a C-level pass): its .value per review cost more than the count.
        for channel, n in Counter(map(_CHANNEL, accepted)).items():
            self.metrics.count(channel.value, "accepted", n=n)
        return results

    async def accept_workorder(self, item: BaseModel, sender: str) -> WorkOrder:
        data = item.model_dump(exclude={"caller_phone", "caller_id_number"})
        caller = self._identity(getattr(item, "caller_phone", None), getattr(item, "caller_id_number", None))
        data.update(
            received_at=now_beijing(),
            sender=sender,
            caller_id=caller,
            real_name=data["real_name"] or bool(caller),
        )
        order = WorkOrder.model_validate(data)
        value = orjson.dumps({"type": "workorder", "data": order.model_dump(mode="json")})
        await self.producer.send_all([OutgoingRecord(self.workorders_topic, order.order_id.encode(), value)])
        self.metrics.count(Channel.HOTLINE.value, "accepted", "workorder")
        return order

    async def accept_callback(self, item: BaseModel, sender: str) -> WorkOrderCallback:
        data = item.model_dump()
        data.update(received_at=now_beijing(), sender=sender)
        callback = WorkOrderCallback.model_validate(data)
        value = orjson.dumps({"type": "callback", "data": callback.model_dump(mode="json")})
        await self.producer.send_all(
            [OutgoingRecord(self.workorders_topic, callback.order_id.encode(), value)]
        )
        self.metrics.count(Channel.HOTLINE.value, "accepted", "callback")
        return callback

    async def accept_provincial(self, records: Sequence[Any], sender: str) -> list[ItemResult]:
        received_at = now_beijing()
        codes = self._channel_codes.get(sender)
        results: list[ItemResult] = []
        outgoing: list[OutgoingRecord] = []
        channels: list[str] = []
        seen: set[str] = set()
        for index, raw in enumerate(records):
            if not isinstance(raw, Mapping):
                problem = Problem(
                    f"/{index}", f"expected a record (a JSON object), got {type(raw).__name__}", "dict_type"
                )
                results.append(ItemResult(index, "rejected", None, [problem]))
                self.metrics.count("provincial", "rejected", "dict_type")
                continue
            try:
                kwargs: dict[str, Any] = {"received_at": received_at, "sender": sender}
                if codes is not None:
                    kwargs["channel_codes"] = codes
                review = provincial.to_review(raw, **kwargs)
            except provincial.ProvincialRecordError as exc:
                problems = [Problem(f"/{index}{p.pointer}", p.message, p.type) for p in exc.problems]
                results.append(ItemResult(index, "rejected", None, problems))
                self.metrics.count("provincial", "rejected", exc.problems[0].type)
                continue
            if review.event_id in seen:
                results.append(ItemResult(index, "duplicate", review.event_id))
                self.metrics.count(review.channel.value, "duplicate", "in_batch")
                continue
            seen.add(review.event_id)
            outgoing.append(self._review_record(review))
            channels.append(review.channel.value)
            results.append(ItemResult(index, "accepted", review.event_id))
        await self.producer.send_all(outgoing)
        for channel in set(channels):
            self.metrics.count(channel, "accepted", n=channels.count(channel))
        return results

    # -- SMS ----------------------------------------------------------------------------------------

    async def register_invitation(self, item: SmsInvitationIn, sender: str) -> None:
        entry = item.model_dump(mode="json")
        entry.update(registered_at=now_beijing().isoformat(), sender=sender)
        await self.producer.send_all(
            [OutgoingRecord(self.invitations_topic, item.ref.encode(), orjson.dumps(entry))]
        )
        self.invitations.remember(item.ref, entry)

    async def accept_sms_reply(self, item: SmsReplyIn, sender: str) -> dict[str, Any]:
        """Parse the reply; a review when it names a level and its invitation is known, else a dead letter."""
        received_at = now_beijing()
        if not self.invitations.ready:
            raise RegistryNotReady("the invitation registry is still being read")
        rater = self._identity(item.phone, None)
        reply = sms.parse_reply(item.content)
        invitation = self.invitations.get(item.ref, received_at)
        reason: str | None = None
        review: Review | None = None
        if invitation is None:
            reason = f"no invitation is registered under ref {item.ref!r} (or it is older than {self.settings.ingest.invitation_ttl_days} days)"
        elif reply.stars is None:
            reason = reply.reason
        else:
            try:
                review = Review(
                    event_id=f"sms_{_short_hash(sender, item.message_id)}",
                    channel=Channel.SMS,
                    stars=reply.stars,
                    case_no=invitation["case_no"],
                    stage=invitation.get("stage") or "overall",
                    region_code=invitation["region_code"],
                    hall_id=invitation.get("hall_id"),
                    unit_code=invitation["unit_code"],
                    unit_name=invitation["unit_name"],
                    window_id=invitation.get("window_id"),
                    staff_id=invitation.get("staff_id"),
                    item_code=invitation["item_code"],
                    item_name=invitation.get("item_name"),
                    rated_at=item.received_at or received_at,
                    received_at=received_at,
                    text=reply.text,
                    real_name=rater is not None,
                    rater_id=rater,
                    sender=sender,
                )
            except (ValidationError, KeyError) as exc:
                reason = f"the invitation under ref {item.ref!r} cannot make a review: {exc}"
        if review is not None:
            await self.producer.send_all([self._review_record(review)])
            self.metrics.count(Channel.SMS.value, "accepted")
            return {"status": "accepted", "event_id": review.event_id, "stars": review.stars}
        assert reason is not None
        kept = item.model_dump(mode="json")
        kept.update(phone=None, rater_id=rater, sender=sender)  # the clear number is never kept
        letter = DeadLetter(
            at=received_at,
            stage="ingest.sms",
            reason=reason,
            original_b64=base64.b64encode(orjson.dumps(kept)).decode(),
        )
        await self.producer.send_all(
            [
                OutgoingRecord(
                    self.deadletter_topic, b"ingest.sms", orjson.dumps(letter.model_dump(mode="json"))
                )
            ]
        )
        kind = (
            "unknown_ref" if invitation is None else "no_level" if reply.stars is None else "bad_invitation"
        )
        self.metrics.count(Channel.SMS.value, "kept", kind)
        return {"status": "kept", "reason": reason}


def _short_hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _event_id_of(raw: Any) -> str | None:
    value = raw.get("event_id") if isinstance(raw, dict) else None
    return value if isinstance(value, str) and len(value) <= 64 else None


def _channel_of(raw: Any) -> str:
    value = raw.get("channel") if isinstance(raw, dict) else None
    return value if value in Channel._value2member_map_ else "unknown"
