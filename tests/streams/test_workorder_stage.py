"""The work-order stage: complaints open tickets, praise does not, call-backs become commands."""

from __future__ import annotations

import orjson

from haochaping.domain.ledger import ticket_id_for
from haochaping.domain.triage import TriageRules
from streams.batch import DEADLETTER, LEDGER_COMMANDS, LEDGER_INTAKE, WORKORDERS_RAW
from streams.workorders import WorkOrderStage
from tests.domain.factories import callback_factory, workorder_factory
from tests.streams.conftest import incoming


def test_complaints_open_tickets_praise_and_inquiries_do_not() -> None:
    stage = WorkOrderStage.from_rules(TriageRules.load())
    values = [
        workorder_factory(order_id="o-1", urgency="extra_urgent").model_dump_json().encode(),
        workorder_factory(order_id="o-2", kind="praise", text="窗口服务很好").model_dump_json().encode(),
        workorder_factory(order_id="o-3", kind="inquiry").model_dump_json().encode(),
    ]
    result = stage.process(incoming(WORKORDERS_RAW, values))
    intakes = [o for o in result.out if o.topic == LEDGER_INTAKE]
    assert [o.key for o in intakes] == [ticket_id_for("workorder", "o-1").encode()]
    body = orjson.loads(intakes[0].value)
    assert body["colour"] == "red" and body["reasons"][0]["rule"] == "red.hotline_extra_urgent"


def test_a_call_back_becomes_a_record_callback_command_on_the_orders_ticket() -> None:
    stage = WorkOrderStage.from_rules(TriageRules.load())
    ok = callback_factory(order_id="o-1", callback_id="cb-1", stars=4, resolved=True)
    unhappy = callback_factory(order_id="o-1", callback_id="cb-2", stars=2, resolved=True)
    result = stage.process(
        incoming(WORKORDERS_RAW, [ok.model_dump_json().encode(), unhappy.model_dump_json().encode(), b"{}"])
    )
    commands = [orjson.loads(o.value) for o in result.out if o.topic == LEDGER_COMMANDS]
    assert [(c["command_id"], c["payload"]["satisfied"]) for c in commands] == [
        ("callback:cb-1", True),
        ("callback:cb-2", False),
    ]
    assert {c["ticket_id"] for c in commands} == {ticket_id_for("workorder", "o-1")}
    [letter] = [orjson.loads(o.value) for o in result.out if o.topic == DEADLETTER]
    assert "/order_id" in {p["pointer"] for p in letter["problems"]}
