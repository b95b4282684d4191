"""三色分级: grading bad reviews and 12345 complaints red, yellow or blue, with the reasons.

Plain Python, no I/O besides reading the rules file once. The words of every rule are compiled into
one Aho–Corasick automaton per rules object, so matching a text costs one pass whatever the number
of words. Text and words are normalised alike (see :func:`normalise`), so full-width, traditional
or upper-case variants of a word match it.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import ahocorasick  # type: ignore[import-not-found,import-untyped,unused-ignore]
import opencc  # type: ignore[import-untyped,unused-ignore]

from haochaping.domain.config import DomainConfig, RepeatPolicy, RuleSpec, WorkOrderPolicy, load_config
from haochaping.domain.contract import Review, Urgency, WorkOrder, WorkOrderType
from haochaping.domain.records import Colour, TriageReason

DEFAULT_RULE = "blue.default"
_SEVERITY = {Colour.RED: 0, Colour.YELLOW: 1, Colour.BLUE: 2}
# Distinct sets of hits whose results are kept (a few hundred bytes each); the cache starts over when full.
_RESULTS_KEPT = 4096
_WHITESPACE = re.compile(r"[\s\u200b\u200c\u200d\ufeff]+")
_T2S = opencc.OpenCC("t2s")


def normalise(text: str) -> str:
    """NFKC (full-width → half-width), traditional → simplified, lower case, no whitespace."""
    folded = unicodedata.normalize("NFKC", text)
    simplified: str = _T2S.convert(folded)
    return _WHITESPACE.sub("", simplified.lower())


def more_urgent(colour: Colour) -> Colour:
    """One colour up: blue → yellow → red; red stays red."""
    return Colour.RED if colour is Colour.YELLOW or colour is Colour.RED else Colour.YELLOW


def severity(colour: Colour) -> int:
    """0 for red (most urgent) … 2 for blue; sorts reasons most urgent first."""
    return _SEVERITY[colour]


@dataclass(frozen=True, slots=True)
class TriageResult:
    colour: Colour
    reasons: tuple[TriageReason, ...]

    @property
    def rule_ids(self) -> tuple[str, ...]:
        return tuple(reason.rule for reason in self.reasons)


class TriageRules:
    """The rules of one rules file, compiled: one automaton, one regex per pattern, a tag index."""

    def __init__(self, config: DomainConfig) -> None:
        self.config = config
        self.rules: dict[str, RuleSpec] = {rid: spec for rid, spec in config.rules.items() if spec.enabled}
        self.workorders: WorkOrderPolicy = config.workorders
        self.repeats: RepeatPolicy = config.repeats
        self._order = {rid: i for i, rid in enumerate(self.rules)}
        # normalised word -> the (rule id, word as written) pairs it stands for
        words: dict[str, list[tuple[str, str]]] = {}
        self._tags: dict[str, list[str]] = {}
        self._patterns: list[tuple[str, re.Pattern[str]]] = []
        self._signals: dict[str, list[str]] = {}
        for rid, spec in self.rules.items():
            for term in spec.terms:
                key = normalise(term)
                if key:
                    words.setdefault(key, []).append((rid, term))
            for tag in spec.tags:
                self._tags.setdefault(tag.lower(), []).append(rid)
            for pattern in spec.patterns:
                try:
                    self._patterns.append((rid, re.compile(pattern)))
                except re.error as exc:
                    raise ValueError(
                        f"rule {rid}: pattern {pattern!r} is not a valid regular expression: {exc}"
                    ) from exc
            if spec.signal is not None:
                self._signals.setdefault(spec.signal, []).append(rid)
        self._results: dict[tuple[tuple[str, tuple[str, ...]], ...], TriageResult] = {}
        self._automaton: ahocorasick.Automaton | None = None
        if words:
            automaton = ahocorasick.Automaton()
            for key, targets in words.items():
                automaton.add_word(key, tuple(targets))
            automaton.make_automaton()
            self._automaton = automaton

    @classmethod
    def load(cls, path: Path | None = None) -> TriageRules:
        """The packaged ``rules.yaml``, with a deployment's file merged over it when given."""
        return cls(load_config(path))

    def match_text(self, text: str | None, tags: tuple[str, ...] = ()) -> dict[str, list[str]]:
        """Rule id -> the words (as written in the rules file) found in the text or the tags."""
        found: dict[str, list[str]] = {}
        if text:
            norm = normalise(text)
            if self._automaton is not None and norm:
                for _end, targets in self._automaton.iter(norm):
                    for rid, term in targets:
                        terms = found.setdefault(rid, [])
                        if term not in terms:
                            terms.append(term)
            for rid, pattern in self._patterns:
                hit = pattern.search(norm)
                if hit:
                    terms = found.setdefault(rid, [])
                    if hit.group(0) not in terms:
                        terms.append(hit.group(0))
        for tag in tags:
            for rid in self._tags.get(tag.lower(), ()):
                terms = found.setdefault(rid, [])
                label = f"tag:{tag}"
                if label not in terms:
                    terms.append(label)
        return found

    def signal_rules(self, signal: str) -> list[str]:
        return self._signals.get(signal, [])

    def result(self, found: dict[str, list[str]]) -> TriageResult:
        """Reasons sorted most urgent first, then in rules-file order; blue.default when none fired."""
        # Texts differ, the rules and words they hit much less: the same hits give the same (frozen)
        # result, and building its reasons (pydantic models) cost more than matching the text.
        key = tuple((rid, tuple(terms)) for rid, terms in found.items())
        cached = self._results.get(key)
        if cached is None:
            if len(self._results) >= _RESULTS_KEPT:
                self._results.clear()
            cached = self._results[key] = self._result(found)
        return cached

    def _result(self, found: dict[str, list[str]]) -> TriageResult:
        if not found:
            return TriageResult(Colour.BLUE, (TriageReason(rule=DEFAULT_RULE, colour=Colour.BLUE),))
        ordered = sorted(found, key=lambda rid: (severity(self.rules[rid].colour), self._order[rid]))
        reasons = tuple(
            TriageReason(
                rule=rid,
                colour=self.rules[rid].colour,
                terms=_in_file_order(self.rules[rid].terms, found[rid]),
            )
            for rid in ordered
        )
        return TriageResult(reasons[0].colour, reasons)


def _in_file_order(spec_terms: tuple[str, ...], found: list[str]) -> tuple[str, ...]:
    """Words in rules-file order, then pattern hits and tags in the order found."""
    rank = {term: i for i, term in enumerate(spec_terms)}
    return tuple(sorted(found, key=lambda term: rank.get(term, len(rank))))


class Triage:
    """Grades reviews and work orders with one compiled set of rules."""

    def __init__(self, rules: TriageRules) -> None:
        self.rules = rules

    def triage_review(
        self, review: Review, *, repeats_window: int = 0, repeats_staff: int = 0
    ) -> TriageResult | None:
        """None for a good review (3–5 stars never make a ticket); otherwise the colour and reasons.

        ``repeats_window`` / ``repeats_staff``: bad reviews of this review's window / staff member within
        the repeat window, this one included (from :class:`RepeatTracker`).
        """
        if not review.is_bad:
            return None
        found = self.rules.match_text(review.text, review.tags)
        threshold = self.rules.repeats.count
        if repeats_window >= threshold:
            for rid in self.rules.signal_rules("repeat_window"):
                found.setdefault(rid, [])
        if repeats_staff >= threshold:
            for rid in self.rules.signal_rules("repeat_staff"):
                found.setdefault(rid, [])
        return self.rules.result(found)

    def triage_workorder(self, order: WorkOrder) -> TriageResult | None:
        """投诉 / 举报 make a ticket; 表扬 counts as good; 咨询 / 建议 make none; 求助 only when red."""
        policy = self.rules.workorders
        opens = order.kind.value in policy.ticket_kinds
        if not opens and not (order.kind is WorkOrderType.HELP and policy.help_when_red):
            return None
        text = f"{order.title} {order.text}" if order.title else order.text
        found = self.rules.match_text(text)
        if order.urgency is Urgency.EXTRA_URGENT:
            for rid in self.rules.signal_rules("extra_urgent"):
                found.setdefault(rid, [])
        elif order.urgency is Urgency.URGENT:
            for rid in self.rules.signal_rules("urgent"):
                found.setdefault(rid, [])
        if len({order.unit_code, *order.other_unit_codes}) >= policy.several_units_min:
            for rid in self.rules.signal_rules("several_units"):
                found.setdefault(rid, [])
        result = self.rules.result(found)
        if not opens and result.colour is not Colour.RED:
            return None
        return result


def repeat_keys(review: Review) -> tuple[str | None, str | None]:
    """The keys under which a bad review counts as a repeat: its window and its staff member.

    Both start with the unit code, the key of ``reviews.raw``, so the counts live in one partition.
    """
    window = f"{review.unit_code}|{review.hall_id or ''}|{review.window_id}" if review.window_id else None
    staff = f"{review.unit_code}|{review.staff_id}" if review.staff_id else None
    return window, staff


class RepeatTracker:
    """Sliding event-time window of timestamps per key, with bounded memory.

    ``observe(key, at)`` records one event and returns how many events of that key fall within
    ``(at - within, at]``, this one included. Per key only the events within ``within`` of the newest
    are kept (at most ``max_per_key``), and at most ``max_keys`` keys, the least recently seen evicted
    first. Deterministic: the same sequence of calls gives the same answers.
    """

    def __init__(self, within: timedelta, *, max_keys: int = 100_000, max_per_key: int = 1_000) -> None:
        if within <= timedelta(0):
            raise ValueError(f"within must be positive, got {within}")
        self.within_s = within.total_seconds()
        self.max_keys = max_keys
        self.max_per_key = max_per_key
        self._times: OrderedDict[str, list[float]] = OrderedDict()

    @classmethod
    def from_policy(cls, policy: RepeatPolicy) -> RepeatTracker:
        return cls(policy.within, max_keys=policy.max_keys)

    def observe(self, key: str, at: datetime) -> int:
        return self.observe_timestamp(key, at.timestamp())

    def observe_timestamp(self, key: str, t: float) -> int:
        """:meth:`observe` with the event's time as POSIX seconds (``at.timestamp()``)."""
        times = self._times.get(key)
        if times is None:
            times = self._times[key] = []
            if len(self._times) > self.max_keys:
                self._times.popitem(last=False)
        else:
            self._times.move_to_end(key)
        if not times or t >= times[-1]:
            # The usual case, events in time order: every time kept after the drop below lies within
            # (t - within, t], so the count is what is kept; no search needed.
            times.append(t)
            drop = max(bisect.bisect_right(times, t - self.within_s), len(times) - self.max_per_key)
            if drop > 0:
                del times[:drop]
            return max(1, len(times))
        bisect.insort(times, t)
        horizon = times[-1] - self.within_s
        drop = bisect.bisect_right(times, horizon)
        drop = max(drop, len(times) - self.max_per_key)
        if drop > 0:
            del times[:drop]
        # An event later than the window of the newest was forgotten at once: it counts itself only.
        return max(1, bisect.bisect_right(times, t) - bisect.bisect_right(times, t - self.within_s))

    def __len__(self) -> int:
        return len(self._times)
