from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from haochaping.domain.config import ConfigError, load_config
from haochaping.domain.contract import BEIJING, Urgency, WorkOrderType
from haochaping.domain.records import Colour
from haochaping.domain.triage import (
    DEFAULT_RULE,
    RepeatTracker,
    Triage,
    TriageRules,
    more_urgent,
    normalise,
    repeat_keys,
)
from tests.domain.factories import OTHER_UNIT_CODE, review_factory, workorder_factory

RULES = TriageRules.load()
TRIAGE = Triage(RULES)
T0 = datetime(2026, 11, 25, 9, 0, tzinfo=BEIJING)


def bad(text: str | None = None, **kw: object) -> tuple[Colour, dict[str, tuple[str, ...]]]:
    result = TRIAGE.triage_review(review_factory(stars=1, text=text, **kw))
    assert result is not None
    return result.colour, {r.rule: r.terms for r in result.reasons}


class TestRulesFire:
    @pytest.mark.parametrize(
        ("text", "rule", "term"),
        [
            ("工作人员吃拿卡要", "red.integrity", "吃拿卡要"),
            ("办个证还要交好处费", "red.integrity", "好处费"),
            ("窗口乱收费", "red.integrity", "乱收费"),
            ("大厅地面有漏电的安全隐患", "red.safety", "安全隐患"),
            ("有位老人在大厅晕倒了没人管", "red.safety", "晕倒"),
            ("工作人员和我吵架", "red.conflict", "吵架"),
            ("保安推搡群众", "red.conflict", "推搡"),
            ("再这样我就找记者", "red.media", "记者"),
            ("我要发到网上曝光你们", "red.media", "曝光"),
            ("几个部门互相推诿", "yellow.shirking", "推诿"),
            ("像踢皮球一样", "yellow.shirking", "踢皮球"),
            ("为了一个章跑了好几趟", "yellow.repeat_visits", "跑了好几趟"),
            ("一直让我来回跑", "yellow.repeat_visits", "来回跑"),
            ("等了很久才轮到我", "yellow.long_wait", "等了很久"),
            ("工作人员态度恶劣", "blue.attitude", "态度"),
            ("没有一次性告知需要的材料", "blue.guidance", "没有一次性告知"),
            ("大厅厕所很脏", "blue.environment", "厕所"),
            ("系统卡顿，办得慢", "blue.slow", "卡顿"),
        ],
    )
    def test_each_rule_fires_on_its_words(self, text: str, rule: str, term: str) -> None:
        colour, reasons = bad(text)
        assert term in reasons[rule]
        assert colour == RULES.rules[rule].colour

    @pytest.mark.parametrize(
        ("text", "term"),
        [
            ("排队3个小时", "排队3个小时"),
            ("排队排了两个多小时", "排队排了两个多小时"),
            ("等了一个半小时", None),  # 一 ... 小时 within the pattern
            ("跑了5趟", "跑了5趟"),
            ("跑了三次", "跑了三次"),
        ],
    )
    def test_patterns_count_hours_and_visits(self, text: str, term: str | None) -> None:
        colour, reasons = bad(text)
        assert colour is Colour.YELLOW
        if term:
            assert term in next(iter(reasons.values()))

    def test_most_urgent_colour_wins_and_every_reason_is_kept_most_urgent_first(self) -> None:
        result = TRIAGE.triage_review(review_factory(stars=2, text="态度很差，还乱收费，跑了好几趟"))
        assert result is not None
        assert result.colour is Colour.RED
        assert result.rule_ids == ("red.integrity", "yellow.repeat_visits", "blue.attitude")

    def test_no_rule_is_blue_default(self) -> None:
        assert bad("不满意") == (Colour.BLUE, {DEFAULT_RULE: ()})
        assert bad(None) == (Colour.BLUE, {DEFAULT_RULE: ()})

    def test_tags_map_to_rules(self) -> None:
        colour, reasons = bad(None, tags=["illegal_fee"])
        assert colour is Colour.RED
        assert reasons == {"red.integrity": ("tag:illegal_fee",)}


class TestVariantsMatch:
    @pytest.mark.parametrize(
        "text",
        [
            "窗口人員亂收費",  # traditional
            "ｘｘ窗口乱收费！",  # full-width letters and punctuation
            "窗口 乱 收 费",  # spaced out
            "窗口亂　收費",  # traditional with an ideographic space
        ],
    )
    def test_traditional_full_width_and_spaced_variants(self, text: str) -> None:
        colour, reasons = bad(text)
        assert colour is Colour.RED
        assert reasons["red.integrity"] == ("乱收费",)

    def test_normalise(self) -> None:
        assert normalise("ＡＢＣ 態度 １２３") == "abc态度123"

    def test_words_written_in_traditional_in_a_rules_file_still_match(self, tmp_path: Path) -> None:
        path = tmp_path / "rules.yaml"
        path.write_text("rules:\n  blue.attitude:\n    terms: [態度不好]\n", encoding="utf-8")
        triage = Triage(TriageRules.load(path))
        result = triage.triage_review(review_factory(stars=1, text="态度不好"))
        assert result is not None
        assert result.reasons[0].terms == ("態度不好",)


class TestGoodNeverMakesATicket:
    @pytest.mark.parametrize("stars", [3, 4, 5])
    def test_good_review_with_alarming_words(self, stars: int) -> None:
        review = review_factory(stars=stars, text="没有吃拿卡要，也没有乱收费")
        assert TRIAGE.triage_review(review, repeats_window=10, repeats_staff=10) is None

    def test_praise_counts_as_good(self) -> None:
        order = workorder_factory(
            kind=WorkOrderType.PRAISE.value, text="表扬窗口，态度好", urgency="extra_urgent"
        )
        assert TRIAGE.triage_workorder(order) is None

    @pytest.mark.parametrize("kind", [WorkOrderType.INQUIRY, WorkOrderType.SUGGESTION])
    def test_inquiry_and_suggestion_make_no_ticket(self, kind: WorkOrderType) -> None:
        assert TRIAGE.triage_workorder(workorder_factory(kind=kind.value, text="乱收费吗？")) is None


class TestWorkOrders:
    def test_complaint_opens_a_ticket(self) -> None:
        result = TRIAGE.triage_workorder(workorder_factory())
        assert result is not None
        assert result.colour is Colour.YELLOW
        assert result.rule_ids == ("yellow.long_wait",)

    def test_report_of_integrity_is_red(self) -> None:
        result = TRIAGE.triage_workorder(workorder_factory(kind="report", text="举报某窗口索贿"))
        assert result is not None and result.colour is Colour.RED

    def test_urgency(self) -> None:
        extra = TRIAGE.triage_workorder(workorder_factory(urgency=Urgency.EXTRA_URGENT.value, text="x"))
        urgent = TRIAGE.triage_workorder(workorder_factory(urgency=Urgency.URGENT.value, text="x"))
        assert extra is not None and extra.rule_ids == ("red.hotline_extra_urgent",)
        assert urgent is not None and urgent.rule_ids == ("yellow.hotline_urgent",)

    def test_complaint_naming_several_units_is_yellow(self) -> None:
        result = TRIAGE.triage_workorder(workorder_factory(text="x", other_unit_codes=[OTHER_UNIT_CODE]))
        assert result is not None and result.rule_ids == ("yellow.several_units",)

    def test_help_only_when_red(self) -> None:
        plain = workorder_factory(kind="help", text="不知道怎么办理居住证")
        danger = workorder_factory(kind="help", text="小区燃气泄漏，请求帮助")
        assert TRIAGE.triage_workorder(plain) is None
        result = TRIAGE.triage_workorder(danger)
        assert result is not None and result.rule_ids == ("red.safety",)

    def test_title_counts(self) -> None:
        result = TRIAGE.triage_workorder(workorder_factory(title="投诉乱收费", text="详见标题"))
        assert result is not None and result.colour is Colour.RED


class TestRepeats:
    def test_third_bad_review_of_a_window_within_two_hours_is_red(self) -> None:
        tracker = RepeatTracker.from_policy(RULES.repeats)
        colours = []
        for minutes in (0, 50, 100):
            review = review_factory(
                stars=1, text="不满意", rated_at=(T0 + timedelta(minutes=minutes)).isoformat()
            )
            window_key, staff_key = repeat_keys(review)
            assert window_key and staff_key
            n_window = tracker.observe(window_key, review.rated_at)
            result = TRIAGE.triage_review(review, repeats_window=n_window)
            assert result is not None
            colours.append(result.colour)
        assert colours == [Colour.BLUE, Colour.BLUE, Colour.RED]

    def test_repeat_staff(self) -> None:
        result = TRIAGE.triage_review(review_factory(stars=2), repeats_staff=3)
        assert result is not None and result.rule_ids == ("red.repeat_staff",)

    def test_window_slides(self) -> None:
        tracker = RepeatTracker(timedelta(hours=2))
        assert [tracker.observe("k", T0 + timedelta(minutes=m)) for m in (0, 60, 119, 121, 200, 250)] == [
            1,
            2,
            3,
            3,
            3,
            2,
        ]

    def test_out_of_order_events_count_their_neighbours(self) -> None:
        tracker = RepeatTracker(timedelta(hours=2))
        tracker.observe("k", T0 + timedelta(minutes=100))
        assert tracker.observe("k", T0 + timedelta(minutes=10)) == 1  # nothing before it within 2 h
        assert tracker.observe("k", T0 + timedelta(minutes=110)) == 3

    def test_memory_is_bounded(self) -> None:
        tracker = RepeatTracker(timedelta(hours=2), max_keys=100, max_per_key=5)
        for i in range(1000):
            tracker.observe(f"k{i}", T0)
        assert len(tracker) == 100
        counts = [tracker.observe("busy", T0 + timedelta(seconds=i)) for i in range(20)]
        assert max(counts) == 5

    @given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 10_000)), max_size=60))
    def test_count_matches_brute_force(self, events: list[tuple[str, int]]) -> None:
        tracker = RepeatTracker(timedelta(minutes=30))
        seen: dict[str, list[int]] = {}
        for key, minute in events:
            count = tracker.observe(key, T0 + timedelta(minutes=minute))
            seen.setdefault(key, []).append(minute)
            newest = max(seen[key])
            if minute > newest - 30:
                expected = sum(1 for m in seen[key] if minute - 30 < m <= minute and m > newest - 30)
                assert count == expected
            else:
                assert count == 1


class TestRulesFile:
    def test_override_merges_over_the_defaults(self, tmp_path: Path) -> None:
        path = tmp_path / "rules.yaml"
        path.write_text(
            "version: 1\nrules:\n  red.media:\n    enabled: false\nrepeats:\n  count: 2\n", encoding="utf-8"
        )
        rules = TriageRules.load(path)
        assert "red.media" not in rules.rules
        assert rules.repeats.count == 2
        assert rules.repeats.within_minutes == 120
        assert "red.integrity" in rules.rules
        assert Triage(rules).triage_review(review_factory(stars=1, text="找记者")) is not None

    def test_a_bad_file_says_where(self, tmp_path: Path) -> None:
        path = tmp_path / "rules.yaml"
        path.write_text("rules:\n  red.x:\n    colour: purple\n    terms: [a]\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=r"rules\.red\.x\.colour"):
            load_config(path)

    def test_a_rule_without_trigger_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "rules.yaml"
        path.write_text("rules:\n  red.x:\n    colour: red\n", encoding="utf-8")
        with pytest.raises(ConfigError, match="at least one of terms, tags, patterns or signal"):
            load_config(path)

    def test_unknown_version_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "rules.yaml"
        path.write_text("version: 2\n", encoding="utf-8")
        with pytest.raises(ConfigError, match="version 2 is unknown; expected 1"):
            load_config(path)

    def test_more_urgent(self) -> None:
        assert [more_urgent(c) for c in Colour] == [Colour.RED, Colour.RED, Colour.YELLOW]


@settings(max_examples=200)
@given(
    text=st.one_of(st.none(), st.text(max_size=200)),
    stars=st.integers(1, 5),
    repeats=st.integers(0, 10),
    tags=st.lists(st.sampled_from(["integrity", "attitude", "x", "slow"]), max_size=3),
)
def test_triage_never_raises_and_is_deterministic(
    text: str | None, stars: int, repeats: int, tags: list[str]
) -> None:
    review = review_factory(stars=stars, text=text, tags=tags)
    first = TRIAGE.triage_review(review, repeats_window=repeats)
    again = Triage(TriageRules.load()).triage_review(review, repeats_window=repeats)
    assert first == again
    assert (first is None) == (stars >= 3)
    if first is not None:
        assert first.reasons and first.colour == first.reasons[0].colour
        assert all(r.colour in Colour for r in first.reasons)


@settings(max_examples=100)
@given(
    text=st.text(max_size=200),
    kind=st.sampled_from(list(WorkOrderType)),
    urgency=st.sampled_from(list(Urgency)),
)
def test_workorder_triage_never_raises(text: str, kind: WorkOrderType, urgency: Urgency) -> None:
    order = workorder_factory(text=text, kind=kind.value, urgency=urgency.value)
    result = TRIAGE.triage_workorder(order)
    assert result == TRIAGE.triage_workorder(order)
    if kind in (WorkOrderType.PRAISE, WorkOrderType.INQUIRY, WorkOrderType.SUGGESTION):
        assert result is None
    if kind in (WorkOrderType.COMPLAINT, WorkOrderType.REPORT):
        assert result is not None


def _reference_count(times: list[float], t: float, within: float, max_per_key: int) -> int:
    """RepeatTracker's rule written the slow way: insert, forget, count (the tracker before its fast path)."""
    import bisect

    bisect.insort(times, t)
    drop = max(bisect.bisect_right(times, times[-1] - within), len(times) - max_per_key)
    if drop > 0:
        del times[:drop]
    return max(1, bisect.bisect_right(times, t) - bisect.bisect_right(times, t - within))


@given(
    steps=st.lists(st.tuples(st.sampled_from("ab"), st.integers(-5, 40)), max_size=80),
    max_per_key=st.integers(1, 6),
)
def test_repeat_counts_of_events_in_time_order_and_out_of_it_follow_one_rule(
    steps: list[tuple[str, int]], max_per_key: int
) -> None:
    # Mostly increasing times with ties and some late ones: both the in-order path and the general one.
    tracker = RepeatTracker(timedelta(minutes=10), max_per_key=max_per_key)
    reference: dict[str, list[float]] = {}
    clock = 0
    for key, step in steps:
        clock += step
        t = T0.timestamp() + clock * 60
        expected = _reference_count(reference.setdefault(key, []), t, 600.0, max_per_key)
        assert tracker.observe_timestamp(key, t) == expected


def test_the_same_hits_give_the_same_result_whether_remembered_or_not() -> None:
    rules = TriageRules.load()
    texts = ["窗口要辛苦费", "排队3个小时还吵架", None, "態度很差", "窗口要辛苦费"]
    first = [rules.result(rules.match_text(text, ("slow",))) for text in texts]
    again = [TriageRules.load().result(TriageRules.load().match_text(text, ("slow",))) for text in texts]
    assert first == again
    assert first[0] is first[-1]  # remembered, and immutable, so sharing it is safe
