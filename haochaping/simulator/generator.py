"""The simulated city's senders, as a pure, seeded generator (no I/O, no clock of its own).

The caller drives it: ``tick(now, n)`` asks for ``n`` new happenings at wall-clock time ``now`` (a citizen
rating at a window, in the app, by SMS, a 12345 call) and returns what the city's senders deliver at
that moment, which also holds what was held back earlier and is due now: a device's backlog after it
came back online, an SMS reply the gateway delivers late, a work order's call-back. ``drain(now)``
delivers everything still held. The same seed, run id and calls give the same emissions, byte for byte.

Every emission carries its ground truth: the ratings it should add to the figures once (a repeat is
marked ``duplicate``) and whether a bad review should open a red ticket.
"""

from __future__ import annotations

import bisect
import enum
import heapq
import itertools
import random
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from haochaping.domain.contract import BEIJING, Channel, Level, Urgency, WorkOrderType
from haochaping.simulator import comments
from haochaping.simulator.city import City, Unit, Window
from haochaping.simulator.curve import channel_weights


class Route(enum.StrEnum):
    """What kind of request an emission is; the sender maps each to an ingest endpoint."""

    REVIEW = "review"
    REVIEWS_BATCH = "reviews_batch"  # a device's backlog after it was offline
    WORKORDER = "workorder"
    CALLBACK = "callback"
    SMS_INVITATION = "sms_invitation"  # the invitation SMS, registered before the citizen can answer it
    SMS = "sms"  # the citizen's reply, as the gateway's webhook posts it
    MALFORMED = "malformed"  # a review that ingest must refuse with a 4xx


@dataclass(frozen=True, slots=True)
class Rates:
    """How often the city's senders misbehave, and the shape of its traffic."""

    bad_share: float = 0.05  # 差评 share of the city's mix before unit / staff quality
    duplicate: float = 0.01  # a rating sent twice (a retry with the same id, or a double tap with a new one)
    sms_reply_seconds: tuple[float, float] = (2.0, 20.0)  # a citizen reads the invitation, then answers
    late_sms: float = 0.15  # share of SMS replies the gateway delivers late
    late_sms_seconds: tuple[float, float] = (20.0, 600.0)
    malformed: float = 0.005  # share of requests that are broken
    offline: float = 0.002  # chance, per hall-device rating, that its device then goes offline
    offline_seconds: tuple[float, float] = (10.0, 90.0)
    workorders: float = 0.03  # 12345 work orders per rating
    callback: float = 0.7  # share of work orders the hotline calls back
    callback_seconds: tuple[float, float] = (5.0, 60.0)

    def __post_init__(self) -> None:
        for name in ("bad_share", "duplicate", "late_sms", "malformed", "offline", "callback"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"rate {name} is a share between 0 and 1, got {value}")


@dataclass(frozen=True, slots=True)
class TruthRow:
    """One thing the city sent that ingest should accept, as the checks recount it."""

    kind: str  # review, workorder, callback
    id: str  # event_id / order_id / callback_id; for SMS the gateway's message id
    route: str
    dedup_key: str | None  # case|stage|r for reviews: what the figures count once
    duplicate: bool  # a repeat of an earlier row: must not count again
    unit_code: str
    region_code: str
    channel: str | None = None
    hall_id: str | None = None
    window_id: str | None = None
    staff_id: str | None = None
    item_code: str | None = None
    stars: int | None = None
    bad: bool = False  # a 差评: opens exactly one ticket
    theme: str | None = None
    red: bool = False  # the theme (or urgency) that triage grades red
    at: str | None = None  # rated_at / created_at / called_at, ISO 8601

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Emission:
    route: Route
    body: Any  # JSON-ready dict / list, or str for a body that is not JSON at all
    truth: tuple[TruthRow, ...] = ()
    valid: bool = True  # False: ingest must answer 4xx
    note: str | None = None  # what is wrong with an invalid one, for the log


@dataclass(order=True)
class _Held:
    due: datetime
    seq: int
    emission: Emission = field(compare=False)


_GOOD_LEVELS = (5, 4, 3)
_GOOD_WEIGHTS = (0.74, 0.19, 0.07)
_THEME_CUM = list(itertools.accumulate(t.weight for t in comments.BAD_THEMES))
_INVITATION_FIELDS = frozenset(
    [
        "case_no",
        "region_code",
        "unit_code",
        "unit_name",
        "item_code",
        "item_name",
        "hall_id",
        "window_id",
        "staff_id",
    ]
)
_ON_SITE = (Channel.HALL_DEVICE, Channel.HALL_TERMINAL, Channel.QR)


class CityGenerator:
    def __init__(self, city: City, *, seed: int = 0, run_id: str = "sim", rates: Rates | None = None) -> None:
        if not run_id.isalnum():
            raise ValueError(f"run id is letters and digits only (it goes into case numbers), got {run_id!r}")
        self.city = city
        self.rates = rates or Rates()
        self.run_id = run_id
        self._rng = random.Random(f"{seed}:{run_id}")
        self._seq = itertools.count(1)
        self._held: list[_Held] = []
        self._offline_until: dict[str, datetime] = {}  # device id -> back online at
        self._backlog: dict[str, list[Emission]] = {}  # device id -> reviews held while offline
        self._unit_cum = list(itertools.accumulate(u.weight for u in city.units))
        # Some staff are much worse than their unit: the board's window rankings then mean something.
        self._staff_quality = {
            staff: (3.0 if self._rng.random() < 0.06 else self._rng.uniform(0.6, 1.2))
            for window in city.windows
            for staff in window.staff_ids
        }

    # -- driving ----------------------------------------------------------------------------------

    def tick(self, now: datetime, n: int, *, hour: float | None = None) -> list[Emission]:
        """``n`` new happenings at ``now``, plus what is due; ``hour`` picks the mix (default: now's)."""
        if now.tzinfo is None:
            raise ValueError("now must carry its UTC offset, e.g. datetime.now(BEIJING)")
        local = now.astimezone(BEIJING)
        weights = channel_weights(hour if hour is not None else local.hour + local.minute / 60)
        channels = list(weights)
        cum = list(itertools.accumulate(weights[c] for c in channels))
        out = self._due(now)
        if cum[-1] <= 0:
            return out
        for _ in range(n):
            channel = channels[bisect.bisect_right(cum, self._rng.random() * cum[-1])]
            out.extend(self._happening(now, channel))
            if self._rng.random() < self.rates.workorders:
                out.extend(self._workorder(now))
        return out

    def drain(self, now: datetime) -> list[Emission]:
        """Everything still held (backlogs, late SMS, call-backs), delivered at ``now``."""
        out: list[Emission] = []
        for device in sorted(self._backlog):
            out.extend(self._flush_backlog(device))
        self._offline_until.clear()
        while self._held:
            out.append(heapq.heappop(self._held).emission)
        return out

    @property
    def held(self) -> int:
        return len(self._held) + sum(len(b) for b in self._backlog.values())

    # -- what happens -----------------------------------------------------------------------------

    def _due(self, now: datetime) -> list[Emission]:
        out: list[Emission] = []
        for device, until in sorted(self._offline_until.items()):
            if until <= now:
                del self._offline_until[device]
                out.extend(self._flush_backlog(device))
        while self._held and self._held[0].due <= now:
            out.append(heapq.heappop(self._held).emission)
        return out

    def _flush_backlog(self, device: str) -> list[Emission]:
        held = self._backlog.pop(device, [])
        if not held:
            return []
        return [
            Emission(
                Route.REVIEWS_BATCH,
                [e.body for e in held],
                tuple(
                    TruthRow(**{**row.as_dict(), "route": Route.REVIEWS_BATCH.value})
                    for e in held
                    for row in e.truth
                ),
                note=f"backlog of {device}",
            )
        ]

    def _hold(self, due: datetime, emission: Emission) -> None:
        heapq.heappush(self._held, _Held(due, next(self._seq), emission))

    def _pick_unit(self) -> Unit:
        return self.city.units[bisect.bisect_right(self._unit_cum, self._rng.random() * self._unit_cum[-1])]

    def _stars(self, bad_probability: float) -> int:
        r = self._rng.random()
        if r < bad_probability:
            return 1 if r < bad_probability * 0.4 else 2
        return self._rng.choices(_GOOD_LEVELS, _GOOD_WEIGHTS)[0]

    def _theme(self) -> comments.Theme:
        return comments.BAD_THEMES[bisect.bisect_right(_THEME_CUM, self._rng.random() * _THEME_CUM[-1])]

    def _happening(self, now: datetime, channel: Channel) -> list[Emission]:
        n = next(self._seq)
        unit = self._pick_unit()
        # An invitation SMS mostly follows a case done at a window, so it names the window too.
        at_window = channel in _ON_SITE or (channel == Channel.SMS and self._rng.random() < 0.6)
        window: Window | None = self._rng.choice(unit.windows) if at_window else None
        staff = self._rng.choice(window.staff_ids) if window and channel != Channel.HALL_TERMINAL else None
        quality = unit.quality * (self._staff_quality[staff] if staff else 1.0)
        stars = self._stars(min(0.9, self.rates.bad_share * quality))
        theme = self._theme() if Level(stars).is_bad else None
        item = self._rng.choice(unit.items)
        local = now.astimezone(BEIJING)
        case_no = f"{unit.region_code}-{local:%Y%m%d}-{self.run_id}{n:08d}"
        text, tags = self._words(stars, theme)
        event_id = f"{self.run_id}-{n:09d}"
        body: dict[str, Any] = {
            "event_id": event_id,
            "channel": channel.value,
            "stars": stars,
            "case_no": case_no,
            "region_code": unit.region_code,
            "unit_code": unit.code,
            "unit_name": unit.name,
            "item_code": item.code,
            "item_name": item.name,
            "rated_at": local.isoformat(timespec="milliseconds"),
        }
        if window is not None:
            body["hall_id"] = unit.hall_id
        if window is not None and channel != Channel.HALL_TERMINAL:
            body["window_id"] = window.window_id
        if staff is not None:
            body["staff_id"] = staff
        if channel == Channel.HALL_DEVICE and window is not None:
            body["device_id"] = window.device_id
        elif channel == Channel.HALL_TERMINAL:
            body["device_id"] = f"term-{unit.hall_id}"
        if tags:
            body["tags"] = list(tags)
        if text:
            body["text"] = text
        if channel in (Channel.APP, Channel.WEB, Channel.HOTLINE):
            body["real_name"] = True
        truth = TruthRow(
            kind="review",
            id=event_id,
            route=Route.REVIEW.value,
            dedup_key=f"{case_no}|overall|r",
            duplicate=False,
            unit_code=unit.code,
            region_code=unit.region_code,
            channel=channel.value,
            hall_id=body.get("hall_id"),
            window_id=body.get("window_id"),
            staff_id=staff,
            item_code=item.code,
            stars=stars,
            bad=Level(stars).is_bad,
            theme=theme.key if theme else None,
            red=bool(theme and theme.red),
            at=body["rated_at"],
        )
        if self._rng.random() < self.rates.malformed:
            return [self._malformed(body)]
        if channel == Channel.SMS:
            return self._sms(now, n, body, truth, stars, text)
        emissions = [Emission(Route.REVIEW, body, (truth,))]
        if self._rng.random() < self.rates.duplicate:
            emissions.append(self._repeat(body, truth))
        if channel == Channel.HALL_DEVICE and window is not None:
            return self._through_device(now, window.device_id, emissions)
        return emissions

    def _words(self, stars: int, theme: comments.Theme | None) -> tuple[str | None, tuple[str, ...]]:
        if theme is not None:
            # Nearly everyone who gives a bad rating says why; the red ones always do.
            if theme.red or self._rng.random() < 0.85:
                return self._rng.choice(theme.texts), theme.tags
            return None, theme.tags
        if stars == 3 and self._rng.random() < 0.3:
            return self._rng.choice(comments.MIDDLING_TEXTS), ()
        if self._rng.random() < 0.12:
            return self._rng.choice(comments.GOOD_TEXTS), (self._rng.choice(comments.GOOD_TAGS),)
        return None, ()

    def _repeat(self, body: dict[str, Any], truth: TruthRow) -> Emission:
        if self._rng.random() < 0.5:
            # A retry after a lost answer: the same event id.
            return Emission(Route.REVIEW, dict(body), (_as_duplicate(truth, truth.id),), note="retry")
        # A double tap on the device: a new id for the same case and stage.
        new_id = f"{body['event_id']}d"
        return Emission(
            Route.REVIEW, {**body, "event_id": new_id}, (_as_duplicate(truth, new_id),), note="double tap"
        )

    def _through_device(self, now: datetime, device: str, emissions: list[Emission]) -> list[Emission]:
        if device in self._offline_until:
            self._backlog.setdefault(device, []).extend(emissions)
            return []
        if self._rng.random() < self.rates.offline:
            low, high = self.rates.offline_seconds
            self._offline_until[device] = now + timedelta(seconds=self._rng.uniform(low, high))
            self._backlog[device] = []
        return emissions

    def _sms(
        self, now: datetime, n: int, body: dict[str, Any], truth: TruthRow, stars: int, text: str | None
    ) -> list[Emission]:
        ref = f"inv-{self.run_id}-{n:09d}"
        invitation = {k: v for k, v in body.items() if k in _INVITATION_FIELDS}
        invitation["ref"] = ref
        invitation["sent_at"] = body["rated_at"]
        low, high = self.rates.sms_reply_seconds
        delay = self._rng.uniform(low, high)
        if self._rng.random() < self.rates.late_sms:
            low, high = self.rates.late_sms_seconds
            delay += self._rng.uniform(low, high)
        replied = (now + timedelta(seconds=delay)).astimezone(BEIJING).isoformat(timespec="milliseconds")
        words = self._rng.choice(comments.SMS_WORDS[stars])
        message_id = f"sms-{self.run_id}-{n:09d}"
        reply = {
            "message_id": message_id,
            "ref": ref,
            "content": f"{words} {text}" if text else words,
            "phone": f"13{(n * 7919) % 10**9:09d}",
            "received_at": replied,
        }
        row = TruthRow(**{**truth.as_dict(), "id": message_id, "route": Route.SMS.value, "at": replied})
        due = now + timedelta(seconds=delay)
        self._hold(due, Emission(Route.SMS, reply, (row,)))
        if self._rng.random() < self.rates.duplicate:
            # The gateway delivers the same message twice.
            self._hold(
                due,
                Emission(Route.SMS, dict(reply), (_as_duplicate(row, message_id),), note="gateway repeat"),
            )
        return [Emission(Route.SMS_INVITATION, invitation)]

    def _workorder(self, now: datetime) -> list[Emission]:
        n = next(self._seq)
        unit = self._pick_unit()
        kind = self._rng.choices(list(WorkOrderType), (0.35, 0.05, 0.15, 0.3, 0.08, 0.07))[0]
        urgency = self._rng.choices(list(Urgency), (0.03, 0.15, 0.82))[0]
        theme = self._theme() if kind in (WorkOrderType.COMPLAINT, WorkOrderType.REPORT) else None
        title = self._rng.choice(comments.WORKORDER_TITLES[kind.value])
        text = theme.texts[0] if theme else f"来电人{title}，涉及{unit.name}。"
        order_id = f"12345-{self.run_id}-{n:08d}"
        local = now.astimezone(BEIJING)
        body: dict[str, Any] = {
            "order_id": order_id,
            "kind": kind.value,
            "urgency": urgency.value,
            "region_code": unit.region_code,
            "unit_code": unit.code,
            "unit_name": unit.name,
            "title": title,
            "text": text,
            "real_name": self._rng.random() < 0.6,
            "created_at": local.isoformat(timespec="milliseconds"),
        }
        if kind == WorkOrderType.COMPLAINT and self._rng.random() < 0.15:
            other = self._pick_unit()
            if other.code != unit.code:
                body["other_unit_codes"] = [other.code]
        red = urgency == Urgency.EXTRA_URGENT or bool(theme and theme.red)
        row = TruthRow(
            kind="workorder",
            id=order_id,
            route=Route.WORKORDER.value,
            dedup_key=None,
            duplicate=False,
            unit_code=unit.code,
            region_code=unit.region_code,
            theme=theme.key if theme else None,
            red=red,
            at=body["created_at"],
        )
        if self._rng.random() < self.rates.callback:
            low, high = self.rates.callback_seconds
            called = now + timedelta(seconds=self._rng.uniform(low, high))
            stars = self._stars(0.25)
            callback: dict[str, Any] = {
                "order_id": order_id,
                "callback_id": f"cb-{order_id}",
                "stars": stars,
                "resolved": stars >= 3,
                "called_at": called.astimezone(BEIJING).isoformat(timespec="milliseconds"),
            }
            cb_row = TruthRow(
                kind="callback",
                id=callback["callback_id"],
                route=Route.CALLBACK.value,
                dedup_key=None,
                duplicate=False,
                unit_code=unit.code,
                region_code=unit.region_code,
                stars=stars,
                bad=Level(stars).is_bad,
                at=callback["called_at"],
            )
            self._hold(called, Emission(Route.CALLBACK, callback, (cb_row,)))
        return [Emission(Route.WORKORDER, body, (row,))]

    def _malformed(self, body: dict[str, Any]) -> Emission:
        broken = dict(body)
        choice = self._rng.randrange(6)
        if choice == 0:
            broken["stars"] = 6
            note = "stars 6: the scale is 1–5"
        elif choice == 1:
            del broken["unit_code"]
            note = "no unit code"
        elif choice == 2:
            broken["unit_code"] = "91330IOSVZ12345678"
            note = "unit code with letters the 统一社会信用代码 never uses"
        elif choice == 3:
            broken["rated_at"] = broken["rated_at"][:19]
            note = "rated_at without a UTC offset"
        elif choice == 4:
            broken["satisfaction"] = broken.pop("stars")
            note = "a provincial field name instead of stars"
        else:
            return Emission(Route.MALFORMED, "{not json", valid=False, note="not JSON")
        return Emission(Route.MALFORMED, broken, valid=False, note=note)


def _as_duplicate(row: TruthRow, new_id: str) -> TruthRow:
    return TruthRow(**{**row.as_dict(), "id": new_id, "duplicate": True})
