import time, random
from datetime import timedelta
from haochaping.domain.triage import Triage, TriageRules, RepeatTracker, repeat_keys
from haochaping.domain.ledger import open_ticket, DeadlinePolicy, apply_command, check_deadlines
from haochaping.domain.workdays import WorkCalendar
from haochaping.domain.fraud import FraudDetector
from haochaping.domain.satisfaction import SpikeDetector, Figures
from tests.domain.factories import review_factory
texts = ["窗口人员态度很差，还要我跑了好几趟，排队两个多小时", "乱收费", None, "系统卡顿", "一般般吧" * 10]
reviews = [review_factory(event_id=f"e{i}", stars=random.choice([1,2,3,4,5]), text=random.choice(texts),
            device_id=f"d{i%50}", staff_id=f"s{i%200}", rated_at=f"2026-11-25T09:{i%60:02d}:00+08:00") for i in range(20000)]
tri = Triage(TriageRules.load()); cal = WorkCalendar.from_file(); pol = DeadlinePolicy.load()
rt = RepeatTracker.from_policy(tri.rules.repeats); fd = FraudDetector()
def timeit(name, fn, items):
    t = time.perf_counter()
    for x in items: fn(x)
    dt = time.perf_counter() - t
    print(f"{name:40s} {len(items)/dt:12,.0f} /s  {dt/len(items)*1e6:8.1f} us each")
bad = [r for r in reviews if r.is_bad]
timeit("triage_review (all, 40% bad)", lambda r: tri.triage_review(r), reviews)
timeit("RepeatTracker.observe (window key)", lambda r: rt.observe(repeat_keys(r)[0], r.rated_at), reviews)
timeit("FraudDetector.observe", fd.observe, reviews)
res = tri.triage_review(bad[0])
timeit("open_ticket (bad only)", lambda r: open_ticket(source="review", source_id=r.event_id, opened_at=r.rated_at, triage=res, review=r, calendar=cal, policy=pol), bad)
tk = open_ticket(source="review", source_id="x", opened_at=reviews[0].rated_at, triage=res, review=reviews[0], calendar=cal, policy=pol).ticket
timeit("check_deadlines", lambda i: check_deadlines(tk, tk.opened_at + timedelta(hours=1), cal, pol), range(20000))
sd = SpikeDetector()
timeit("SpikeDetector.observe", lambda r: sd.observe(r.unit_code, r.rated_at, (1,0,0,0,3)), reviews)
timeit("Figures.from_counts", lambda i: Figures.from_counts((1,2,3,4,5)), range(20000))
