"""Actions through the real broker, with a stand-in for the stream: what the API itself does.

``StandInLedger`` stands in for the Faust worker's ledger agent (``streams/``) and nothing else: it reads
``ledger.commands`` and answers on ``ledger.events`` as the worker would, allowing start_rectifying on a
new or assigned ticket and refusing anything else with a reason, like the real ledger's REFUSED events.
It lets these tests see what the real worker cannot be made to do on demand: stay silent (the 202 +
poll path when no answer comes in time) and show the command exactly as the API put it on the broker
(the actor taken from the token). The same round-trip with the real worker, from a review posted to
ingest to 销号, is ``test_ledger_real_stream.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import httpx
import orjson
import pytest

from haochaping.domain.records import (
    CommandAction,
    LedgerCommand,
    LedgerEvent,
    LedgerEventType,
    Role,
    Ticket,
    TicketStatus,
)
from haochaping.settings import Settings
from haochaping.topics import ensure_topics
from tests.api.conftest import UNIT_A, RunningApi, Seed

pytestmark = pytest.mark.integration


class StandInLedger:
    """Answers commands in place of the worker's ledger agent; never the real ledger (see the module docstring)."""

    def __init__(self, settings: Settings, tickets: dict[str, Ticket], *, silent: bool = False) -> None:
        self.settings = settings
        self.tickets = tickets
        self.silent = silent
        self.seen: list[LedgerCommand] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()

    def __enter__(self) -> StandInLedger:
        self._thread.start()
        assert self._ready.wait(30), "the stand-in ledger did not get its partitions"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        from kafka import KafkaConsumer, KafkaProducer, TopicPartition

        kafka = self.settings.kafka
        consumer = KafkaConsumer(
            bootstrap_servers=kafka.bootstrap_servers, group_id=None, enable_auto_commit=False
        )
        topic = kafka.topic("ledger.commands")
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(parts)
        consumer.seek_to_beginning()
        producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
        self._ready.set()
        try:
            while not self._stop.is_set():
                for records in consumer.poll(timeout_ms=100).values():
                    for record in records:
                        command = LedgerCommand.model_validate_json(record.value)
                        self.seen.append(command)
                        if self.silent:
                            continue
                        event = self._decide(command)
                        producer.send(
                            kafka.topic("ledger.events"),
                            key=command.ticket_id.encode(),
                            value=event.model_dump_json().encode(),
                        ).get(10)
        finally:
            consumer.close()
            producer.close()

    def _decide(self, command: LedgerCommand) -> LedgerEvent:
        ticket = self.tickets[command.ticket_id]
        now = datetime.now(UTC)
        if command.action is CommandAction.START_RECTIFYING and ticket.status in (
            TicketStatus.NEW,
            TicketStatus.ASSIGNED,
        ):
            ticket = ticket.model_copy(
                update={"status": TicketStatus.RECTIFYING, "version": ticket.version + 1}
            )
            self.tickets[ticket.ticket_id] = ticket
            return LedgerEvent(
                event_id=f"{ticket.ticket_id}:{ticket.version}", ticket_id=ticket.ticket_id,
                type=LedgerEventType.RECTIFYING, at=now, actor=command.actor.user_id,
                command_id=command.command_id, ticket=ticket,
            )  # fmt: skip
        return LedgerEvent(
            event_id=f"{ticket.ticket_id}:refused:{command.command_id}", ticket_id=ticket.ticket_id,
            type=LedgerEventType.REFUSED, at=now, actor=command.actor.user_id, command_id=command.command_id,
            reason=f"{command.action.value} is not allowed while the ticket is {ticket.status.value}", ticket=ticket,
        )  # fmt: skip


def ticket_from_seed(row: dict[str, object]) -> Ticket:
    data = {k: v for k, v in row.items() if k in Ticket.model_fields}
    data["reasons"] = ()
    return Ticket.model_validate(data)


@pytest.fixture
def api_with_topics(
    settings: Settings, kafka_stack: object, seeded: Seed, running_api: Callable[[], RunningApi]
) -> Iterator[RunningApi]:
    ensure_topics(settings.kafka)
    settings.api.command_wait_seconds = 5.0
    api = running_api()
    deadline = time.monotonic() + 30
    while httpx.get(api.base_url + "/readyz").status_code != 200:
        assert time.monotonic() < deadline, httpx.get(api.base_url + "/readyz").text
        time.sleep(0.2)
    yield api


def test_an_applied_action_returns_the_new_state_and_a_refused_one_the_reason(
    api_with_topics: RunningApi, seeded: Seed, token: Callable
) -> None:
    tickets = {t["ticket_id"]: ticket_from_seed(t) for t in seeded.tickets}
    officer = token(Role.UNIT_OFFICER, UNIT_A, sub="officer-wang")
    url = api_with_topics.base_url + "/v1/tickets/T-A-1/actions"
    with StandInLedger(api_with_topics.settings, tickets) as ledger:
        applied = httpx.post(url, json={"action": "start_rectifying"}, headers=officer, timeout=15)
        assert applied.status_code == 200, applied.text
        assert applied.json()["status"] == "applied"
        assert applied.json()["ticket"]["status"] == "rectifying"
        # The command on the broker names who acted, taken from the token, not from the body.
        assert ledger.seen[0].actor.user_id == "officer-wang" and ledger.seen[0].actor.unit_code == UNIT_A

        refused = httpx.post(url, json={"action": "start_rectifying"}, headers=officer, timeout=15)
        assert refused.status_code == 409, refused.text
        assert "not allowed while the ticket is rectifying" in refused.json()["reason"]

        # Any process that saw the answer can tell it again.
        polled = httpx.get(
            api_with_topics.base_url + f"/v1/commands/{refused.json()['command_id']}",
            headers=officer,
            timeout=5,
        )
        assert polled.json()["status"] == "refused"


def test_no_answer_in_time_gives_202_and_a_link_to_poll(
    api_with_topics: RunningApi, seeded: Seed, token: Callable
) -> None:
    api_with_topics.settings.api.command_wait_seconds = 0.5
    tickets = {t["ticket_id"]: ticket_from_seed(t) for t in seeded.tickets}
    with StandInLedger(api_with_topics.settings, tickets, silent=True):
        r = httpx.post(
            api_with_topics.base_url + "/v1/tickets/T-A-1/actions",
            json={"action": "start_rectifying"},
            headers=token(Role.SUPERVISOR),
            timeout=15,
        )
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/commands/{r.json()['command_id']}"
    pending = httpx.get(api_with_topics.base_url + r.headers["location"], headers=token(Role.SUPERVISOR))
    assert pending.status_code == 404 and "no answer from the ledger" in pending.json()["detail"]


def test_live_stream_carries_a_new_red_ticket_to_its_unit_only(
    api_with_topics: RunningApi, seeded: Seed, token: Callable, settings: Settings
) -> None:
    from kafka import KafkaProducer

    from tests.api.conftest import UNIT_B

    red_b = ticket_from_seed(
        {**seeded.tickets[0], "ticket_id": "T-B-9", "unit_code": UNIT_B, "unit_name": "乙"}
    )
    red_a = ticket_from_seed({**seeded.tickets[0], "ticket_id": "T-A-9"})
    seen: dict[str, list[str]] = {"supervisor": [], "officer_a": []}

    def listen(name: str, headers: dict[str, str]) -> None:
        tok = headers["Authorization"].removeprefix("Bearer ")
        with httpx.stream(
            "GET", api_with_topics.base_url + "/v1/live", params={"access_token": tok}, timeout=10
        ) as r:
            event = None
            for line in r.iter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event == "red_ticket":
                    seen[name].append(orjson.loads(line[5:])["ticket_id"])
                    if "T-A-9" in seen[name]:
                        return

    threads = [
        threading.Thread(target=listen, args=("supervisor", token(Role.SUPERVISOR)), daemon=True),
        threading.Thread(target=listen, args=("officer_a", token(Role.UNIT_OFFICER, UNIT_A)), daemon=True),
    ]
    for t in threads:
        t.start()
    time.sleep(1.0)  # both streams subscribed
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    for ticket in (red_b, red_a):  # B first: if the officer's stream carried B, it would arrive first
        event = LedgerEvent(
            event_id=f"{ticket.ticket_id}:1", ticket_id=ticket.ticket_id, type=LedgerEventType.OPENED,
            at=datetime.now(UTC), actor="system", ticket=ticket,
        )  # fmt: skip
        producer.send(
            settings.kafka.topic("ledger.events"),
            key=ticket.ticket_id.encode(),
            value=event.model_dump_json().encode(),
        )
    producer.flush()
    producer.close()
    for t in threads:
        t.join(10)
    assert seen["supervisor"] == ["T-B-9", "T-A-9"]
    assert seen["officer_a"] == ["T-A-9"]
