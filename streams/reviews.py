"""The review stage: ``reviews.raw`` → validate, deduplicate, flag fraud, triage, count per minute.

Plain Python over a batch of raw records (see ``streams.batch``); the Faust agent feeds it and sends
what it returns. Outputs: ``reviews.accepted`` (key unit code), ``ledger.intake`` (key ticket id),
``satisfaction.minute`` (key the dimension tuple), ``alerts`` (key unit code), ``deadletter``.

Deduplication (一次一评 / 一事一评). The state is one table keyed ``unit_code|case_no|stage|r`` (first
rating) or ``...|f`` (追评), value ``event_id|stars|yyyymmdd`` (the day of the rating; see
``streams.dedupe`` for the horizon after which a key is forgotten). ``reviews.raw`` is keyed by unit code and the
unit that handled a case is part of the case's identity (谁办理谁负责), so every key of this table
lives in the partition of the records that touch it: no repartition topic is needed. Then:

- same slot, same event id: a retry by the sender; it vanishes (counted as ``dropped.retry``).
- same slot, another event id: a second rating of the same case and stage; a duplicate, not a vote
  (``dropped.duplicate``).
- a stored rating more than ``streams.dedupe_horizon_days`` (400) before the new one is forgotten:
  a second rating of the same case more than 400 days later counts as new (``dedupe.beyond_horizon``).
- a 追评 is accepted once per case and stage, and only if the first rating of that case and stage
  was bad (``dropped.follow_up_without_bad_review`` otherwise). The stage does not wait for the
  ledger to report the ticket rectified: the follow-up comes through the citizen's channel after
  the unit was in touch, and a ledger ↔ dedupe join would cost a topic hop for little.

None of these is an error, so none goes to the dead-letter topic; records that are not JSON or break
the contract do, with the JSON pointers of what was wrong.

Fraud flags, repeat counts and the spike baseline are in-memory windows of minutes to hours, kept per
worker (device, window and staff keys start with the unit code, so they are partition-aligned; a
rater may rate several units, so a rater spree is seen per partition). A restart forgets them: the
first minutes after a restart may miss a burst that began before it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from haochaping.domain.config import DomainConfig
from haochaping.domain.contract import BEIJING, Review
from haochaping.domain.fraud import FraudDetector, FraudFlag
from haochaping.domain.ledger import ticket_id_for
from haochaping.domain.records import Alert, AlertKind, LedgerIntake
from haochaping.domain.satisfaction import SpikeDetector
from haochaping.domain.triage import RepeatTracker, Triage, TriageRules, repeat_keys
from streams.batch import (
    ALERTS,
    LEDGER_INTAKE,
    REVIEWS_ACCEPTED,
    SATISFACTION_MINUTE,
    BatchResult,
    Incoming,
    describe_json_error,
)
from streams.dedupe import Remembered, beyond_horizon, day_text, decode_value, encode_with_day_text

_REVIEW = TypeAdapter(Review)
_VALIDATE_REVIEW = _REVIEW.validate_json
_INTAKE = TypeAdapter(LedgerIntake)
_ALERT = TypeAdapter(Alert)

Lookup = Callable[[bytes], bytes | None]


def dedup_table_key(review: Review) -> bytes:
    return f"{review.unit_code}|{review.dedup_key}".encode()


def accepted_json(review: Review, flags: Sequence[FraudFlag]) -> bytes:
    """The ``reviews.accepted`` value: the review's JSON with its fraud flags, as AcceptedReview dumps it.

    Spliced rather than built through ``AcceptedReview``: copying the review's two dozen fields into
    a new model cost more than validating the review in the first place (a third of the stage).
    """
    body = _REVIEW.dump_json(review)
    if not flags:
        return body[:-1] + _NO_FLAGS
    return body[:-1] + b',"fraud_flags":' + orjson.dumps(flags) + b"}"


_NO_FLAGS = b',"fraud_flags":[]}'


def _first_rating_key(review: Review) -> bytes:
    return f"{review.unit_code}|{review.case_no}|{review.stage}|r".encode()


def _minute(at: datetime) -> datetime:
    return at.astimezone(BEIJING).replace(second=0, microsecond=0)


# Between these instants Beijing is UTC+8 all year (China's last summer time ended 1991-09-15), so a
# Beijing minute starts on a multiple of 60 POSIX seconds, and a float timestamp still resolves a
# microsecond (its spacing stays below 0.5 µs). Instants outside take the time zone's own path.
_FIXED_OFFSET_FROM = datetime(1992, 1, 1, tzinfo=UTC).timestamp()
_FIXED_OFFSET_UNTIL = datetime(2100, 1, 1, tzinfo=UTC).timestamp()


class BeijingMinutes:
    """The Beijing minute, day and stored day text of an instant, remembered per minute.

    Converting every rating's time to Beijing time and formatting its day cost more per review than
    anything else in the stage but validation; the ratings of a batch fall in a few minutes.
    """

    def __init__(self, kept: int = 10_000) -> None:
        self.kept = kept
        self._by_minute: dict[int, tuple[datetime, date, str]] = {}

    def of(self, at: datetime, timestamp: float) -> tuple[datetime, date, str]:
        """``(minute, day, day_text(day))`` of ``at`` in Beijing; ``timestamp`` is ``at.timestamp()``."""
        if _FIXED_OFFSET_FROM <= timestamp < _FIXED_OFFSET_UNTIL:
            epoch_minute = int(timestamp // 60)
            known = self._by_minute.get(epoch_minute)
            if known is None:
                if len(self._by_minute) >= self.kept:
                    self._by_minute.clear()
                minute = datetime.fromtimestamp(epoch_minute * 60, BEIJING)
                day = minute.date()
                known = self._by_minute[epoch_minute] = (minute, day, day_text(day))
            return known
        minute = _minute(at)
        day = minute.date()
        return minute, day, day_text(day)


class ReviewStage:
    def __init__(
        self,
        config: DomainConfig,
        triage: Triage,
        fraud: FraudDetector,
        spikes: SpikeDetector | None = None,
        dedupe_horizon_days: int = 400,
    ) -> None:
        self.config = config
        self.dedupe_horizon_days = dedupe_horizon_days
        self.triage = triage
        self.repeats = RepeatTracker.from_policy(config.repeats)
        self.fraud = fraud
        self.spikes = spikes
        self.minutes = BeijingMinutes()

    @classmethod
    def from_rules(cls, rules: TriageRules, dedupe_horizon_days: int = 400) -> ReviewStage:
        return cls(
            rules.config,
            Triage(rules),
            FraudDetector(rules.config.fraud),
            SpikeDetector(rules.config.spike),
            dedupe_horizon_days,
        )

    def process(self, batch: Sequence[Incoming], lookup: Lookup) -> BatchResult:
        """Handle one batch; ``lookup`` reads the dedupe table (the batch's own writes come first)."""
        result = BatchResult()
        pending: dict[bytes, bytes] = {}
        minutes: dict[tuple[Any, ...], list[int]] = {}
        # official (not fraud-flagged) counts per unit and minute: what the spike baseline is fed
        unit_minutes: dict[tuple[str, datetime], list[int]] = {}

        def seen(key: bytes, rated: date) -> Remembered | None:
            # A rating more than the horizon before this one is forgotten whether or not the purge
            # has deleted it yet, so the decision does not depend on when the purge ran.
            raw = pending.get(key)
            if raw is None:
                raw = lookup(key)
            if raw is None:
                return None
            held = decode_value(raw)
            if held.day is not None and beyond_horizon(held.day, rated, self.dedupe_horizon_days):
                result.counts["dedupe.beyond_horizon"] += 1
                return None
            return held

        minute_of = self.minutes.of
        observe_fraud = self.fraud.observe
        emit, write = result.emit, result.write
        accepted = flagged = 0
        for record in batch:
            try:
                review = _VALIDATE_REVIEW(record.value)
            except ValidationError as exc:
                if _is_json_error(exc):
                    result.dead_letter(
                        record, stage="streams.validate", reason=describe_json_error(record.value, exc)
                    )
                else:
                    result.dead_letter(
                        record,
                        stage="streams.validate",
                        reason="the record is not a valid review (see problems; the contract: haochaping schema review)",
                        error=exc,
                    )
                continue

            # once per review: the fraud windows, the repeat counts and the minute all need it
            timestamp = review.rated_at.timestamp()
            minute, rated, rated_text = minute_of(review.rated_at, timestamp)
            key = dedup_table_key(review)
            previous = seen(key, rated)
            if previous is not None:
                retry = previous.event_id == review.event_id
                result.counts["dropped.retry" if retry else "dropped.duplicate"] += 1
                continue
            if review.follow_up:
                first = seen(_first_rating_key(review), rated)
                if first is None or first.stars > 2:
                    result.counts["dropped.follow_up_without_bad_review"] += 1
                    continue
            value = encode_with_day_text(review.event_id, review.stars, rated_text)
            pending[key] = value
            write(record.partition, key, value)

            flags = observe_fraud(review, timestamp)
            emit(REVIEWS_ACCEPTED, review.unit_code, accepted_json(review, flags))
            accepted += 1
            if flags:
                flagged += 1

            dims = (
                minute,
                review.region_code,
                review.hall_id,
                review.unit_code,
                review.window_id,
                review.staff_id,
                review.item_code,
                review.channel.value,
            )
            counts = minutes.get(dims)
            if counts is None:
                counts = minutes[dims] = [0] * 10
            counts[review.stars - 1 + (5 if flags else 0)] += 1

            if review.is_bad:
                self._triage(review, timestamp, result)
            if not flags:
                official = unit_minutes.get((review.unit_code, minute))
                if official is None:
                    official = unit_minutes[(review.unit_code, minute)] = [0] * 5
                official[review.stars - 1] += 1
        if accepted:
            result.counts["accepted"] += accepted
        if flagged:
            result.counts["fraud_flagged"] += flagged

        if self.spikes is not None:
            for (unit, minute), counts in sorted(unit_minutes.items(), key=lambda item: item[0][1]):
                alert = self._spike(unit, minute, counts)
                if alert is not None:
                    emit(ALERTS, unit, _ALERT.dump_json(alert))
                    result.counts["alert.spike"] += 1
        isos: dict[datetime, str] = {}
        for dims, counts in minutes.items():
            minute, region, hall, unit, window, staff, item, channel = dims
            iso = isos.get(minute)
            if iso is None:
                iso = isos[minute] = minute.isoformat()
            record_ = {
                "minute": iso,
                "region_code": region,
                "hall_id": hall,
                "unit_code": unit,
                "window_id": window,
                "staff_id": staff,
                "item_code": item,
                "channel": channel,
                "counts": counts[:5],
                "fraud_counts": counts[5:],
            }
            key = f"{region}|{hall or ''}|{unit}|{window or ''}|{staff or ''}|{item}|{channel}"
            emit(SATISFACTION_MINUTE, key, orjson.dumps(record_))
        if minutes:
            result.counts["minute_records"] += len(minutes)
        return result

    def _triage(self, review: Review, timestamp: float, result: BatchResult) -> None:
        at = review.received_at or review.rated_at
        window_key, staff_key = repeat_keys(review)
        repeats_window = self.repeats.observe_timestamp(window_key, timestamp) if window_key else 0
        repeats_staff = self.repeats.observe_timestamp(staff_key, timestamp) if staff_key else 0
        triaged = self.triage.triage_review(
            review, repeats_window=repeats_window, repeats_staff=repeats_staff
        )
        if triaged is None:
            return
        ticket_id = ticket_id_for("review", review.event_id)
        intake = LedgerIntake(
            ticket_id=ticket_id,
            source="review",
            source_id=review.event_id,
            at=at,
            colour=triaged.colour,
            reasons=triaged.reasons,
            review=review,
        )
        result.emit(LEDGER_INTAKE, ticket_id, _INTAKE.dump_json(intake))
        result.counts[f"intake.{triaged.colour.value}"] += 1

    def _spike(self, unit: str, minute: datetime, counts: list[int]) -> Alert | None:
        spike = self.spikes.observe(unit, minute, counts)
        if spike is None:
            return None
        return Alert(
            alert_id=f"spike:{unit}:{spike.minute.isoformat()}",
            kind=AlertKind.SPIKE,
            at=spike.minute,
            unit_code=unit,
            detail=spike.detail(self.config.spike.window_minutes),
        )


def _is_json_error(exc: ValidationError) -> bool:
    return any(err["type"] in ("json_invalid", "json_type") for err in exc.errors(include_url=False))
