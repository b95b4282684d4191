"""The simulated city: deterministic, inside the contract, in realistic proportions."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta

import pytest
from pydantic import ValidationError

from haochaping.domain.contract import BEIJING, Channel, Review, WorkOrder, WorkOrderCallback
from haochaping.simulator.city import load_city
from haochaping.simulator.curve import activity, channel_weights
from haochaping.simulator.generator import CityGenerator, Emission, Rates, Route

CITY = load_city()
MORNING = datetime(2026, 11, 25, 10, 0, tzinfo=BEIJING)


def run(seed: int = 1, run_id: str = "t1", n: int = 4000, rates: Rates | None = None) -> list[Emission]:
    gen = CityGenerator(CITY, seed=seed, run_id=run_id, rates=rates)
    out: list[Emission] = []
    for second in range(20):
        out.extend(gen.tick(MORNING + timedelta(seconds=second), n // 20))
    out.extend(gen.drain(MORNING + timedelta(seconds=20)))
    assert gen.held == 0
    return out


def review_bodies(emissions: list[Emission]) -> list[dict]:
    bodies: list[dict] = []
    for e in emissions:
        if e.route == Route.REVIEW:
            bodies.append(e.body)
        elif e.route == Route.REVIEWS_BATCH:
            bodies.extend(e.body)
    return bodies


def canonical(emissions: list[Emission]) -> str:
    return json.dumps(
        [[e.route, e.body, [r.as_dict() for r in e.truth], e.valid] for e in emissions], ensure_ascii=False
    )


def test_the_same_seed_and_run_give_the_same_city_byte_for_byte() -> None:
    assert canonical(run(seed=7)) == canonical(run(seed=7))


def test_another_seed_or_run_gives_other_events_and_ids() -> None:
    first = run(seed=7)
    assert canonical(first) != canonical(run(seed=8))
    ids = {r.id for e in first for r in e.truth}
    assert not ids & {r.id for e in run(seed=7, run_id="t2") for r in e.truth}


def test_every_valid_review_work_order_and_callback_is_inside_the_contract() -> None:
    emissions = run(rates=Rates(offline=0.02, duplicate=0.05))
    for body in review_bodies(emissions):
        Review.model_validate(body)
    orders = [e.body for e in emissions if e.route == Route.WORKORDER]
    callbacks = [e.body for e in emissions if e.route == Route.CALLBACK]
    assert orders and callbacks
    for body in orders:
        WorkOrder.model_validate(body)
    for body in callbacks:
        WorkOrderCallback.model_validate(body)
    assert {c["order_id"] for c in callbacks} <= {o["order_id"] for o in orders}


def test_sms_invitations_and_replies_are_what_the_gateway_posts() -> None:
    payloads = pytest.importorskip("ingest.payloads")
    emissions = run()
    invitations = [e.body for e in emissions if e.route == Route.SMS_INVITATION]
    replies = [e.body for e in emissions if e.route == Route.SMS]
    assert invitations and replies
    for body in invitations:
        payloads.SmsInvitationIn.model_validate(body)
    for body in replies:
        payloads.SmsReplyIn.model_validate(body)


def test_malformed_requests_are_refused_by_the_contract() -> None:
    malformed = [e for e in run(rates=Rates(malformed=0.05)) if e.route == Route.MALFORMED]
    assert len(malformed) > 50
    for e in malformed:
        assert not e.valid and not e.truth and e.note
        if isinstance(e.body, str):
            with pytest.raises(json.JSONDecodeError):
                json.loads(e.body)
        else:
            with pytest.raises(ValidationError):
                Review.model_validate(e.body)


def test_channel_mix_at_ten_in_the_morning_follows_the_curve() -> None:
    rows = [r for e in run(n=20000, rates=Rates(malformed=0)) for r in e.truth if r.kind == "review"]
    seen = Counter(r.channel for r in rows if not r.duplicate)
    total = sum(seen.values())
    weights = channel_weights(10.0)
    for channel, weight in weights.items():
        expected = weight / sum(weights.values())
        assert abs(seen[channel.value] / total - expected) < 0.02, channel


def test_most_ratings_are_good_and_a_few_percent_are_bad() -> None:
    rows = [r for e in run(n=20000) for r in e.truth if r.kind == "review" and not r.duplicate]
    stars = Counter(r.stars for r in rows)
    bad = (stars[1] + stars[2]) / len(rows)
    assert 0.02 < bad < 0.12
    assert stars[5] > stars[4] > stars[3]
    assert all(r.bad == (r.stars <= 2) for r in rows)
    assert all(r.theme for r in rows if r.bad)
    red = [r for r in rows if r.red]
    assert red and all(r.bad for r in red)


def test_the_units_differ_so_that_rankings_mean_something() -> None:
    rows = [r for e in run(n=20000) for r in e.truth if r.kind == "review" and not r.duplicate]
    by_region: dict[str, list[int]] = {}
    for r in rows:
        by_region.setdefault(r.region_code, []).append(r.bad)
    rates = {region: sum(bad) / len(bad) for region, bad in by_region.items()}
    # 余杭区 is configured with the worst quality, 滨江区 the best.
    assert rates["330110"] > rates["330108"] * 1.5


def test_halls_sleep_at_night_while_the_hotline_and_the_app_stay_awake() -> None:
    night = channel_weights(3.0)
    assert night[Channel.HALL_DEVICE] == 0
    assert night[Channel.HOTLINE] > 0 and night[Channel.APP] > 0
    assert channel_weights(20.5)[Channel.APP] > channel_weights(8.5)[Channel.APP]
    assert activity(10) > 5 * activity(3)
    gen = CityGenerator(CITY, seed=1, run_id="night")
    emissions = gen.tick(MORNING.replace(hour=3), 2000)
    channels = {r.channel for e in emissions for r in e.truth if r.kind == "review"}
    assert Channel.HALL_DEVICE.value not in channels and Channel.HOTLINE.value in channels


def test_a_repeat_counts_once_and_has_the_same_rating_as_the_original() -> None:
    rows = [r for e in run(rates=Rates(duplicate=0.1)) for r in e.truth if r.kind == "review"]
    originals = {r.dedup_key: r for r in rows if not r.duplicate}
    repeats = [r for r in rows if r.duplicate]
    assert len(repeats) > 100
    assert len(originals) == len({r.dedup_key for r in rows})
    for r in repeats:
        assert originals[r.dedup_key].stars == r.stars
    assert any(r.id == originals[r.dedup_key].id for r in repeats)  # retries with the same id
    assert any(r.id != originals[r.dedup_key].id for r in repeats)  # double taps with a new one


def test_an_offline_device_uploads_its_backlog_later_with_the_old_rating_times() -> None:
    gen = CityGenerator(CITY, seed=3, run_id="off", rates=Rates(offline=0.05, offline_seconds=(30, 30)))
    first = gen.tick(MORNING, 3000)
    assert gen.held > 0
    later = gen.tick(MORNING + timedelta(seconds=31), 0)
    batches = [e for e in later if e.route == Route.REVIEWS_BATCH]
    assert batches
    for batch in batches:
        devices = {b["device_id"] for b in batch.body}
        assert len(devices) == 1
        assert all(b["rated_at"].startswith("2026-11-25T10:00:00") for b in batch.body)
    sent_first = {r.id for e in first for r in e.truth}
    assert not sent_first & {r.id for e in batches for r in e.truth}


def test_an_sms_reply_comes_after_its_invitation_and_late_ones_much_later() -> None:
    gen = CityGenerator(CITY, seed=4, run_id="sms", rates=Rates(late_sms=0.5, late_sms_seconds=(60, 60)))
    first = gen.tick(MORNING, 2000)
    invitations = {e.body["ref"]: e.body for e in first if e.route == Route.SMS_INVITATION}
    assert invitations and not [e for e in first if e.route == Route.SMS]
    soon = [e for e in gen.tick(MORNING + timedelta(seconds=21), 0) if e.route == Route.SMS]
    late = [e for e in gen.tick(MORNING + timedelta(seconds=90), 0) if e.route == Route.SMS]
    assert soon and late
    for e in soon + late:
        invitation = invitations[e.body["ref"]]
        assert e.body["content"] and e.truth[0].dedup_key.startswith(invitation["case_no"] + "|")
        assert e.body["received_at"] > invitation["sent_at"]
    assert 0.3 < len({e.body["ref"] for e in late}) / len(invitations) < 0.7


def test_sms_replies_say_the_rating_a_person_would_read_from_them() -> None:
    sms = pytest.importorskip("haochaping.domain.sms")
    replies = [e for e in run() if e.route == Route.SMS]
    assert replies
    for e in replies:
        assert sms.parse_reply(e.body["content"]).stars == e.truth[0].stars, e.body["content"]


def test_a_run_id_that_would_break_case_numbers_is_refused_in_words() -> None:
    with pytest.raises(ValueError, match="letters and digits"):
        CityGenerator(CITY, run_id="a-b")
    with pytest.raises(ValueError, match="between 0 and 1"):
        Rates(duplicate=2)


def test_the_themes_marked_red_are_the_ones_the_triage_rules_grade_red() -> None:
    triage = pytest.importorskip("haochaping.domain.triage")
    from haochaping.domain.records import Colour
    from haochaping.simulator.comments import BAD_THEMES

    rules = triage.TriageRules.load()
    for theme in BAD_THEMES:
        for text in theme.texts:
            colour = rules.result(rules.match_text(text, theme.tags)).colour
            assert (colour is Colour.RED) == theme.red, (theme.key, text, colour)
