"""Actions on tickets: published to ``ledger.commands`` (key = ticket id), answered on ``ledger.events``.

What the caller is told, so that a page never shows a change the ledger did not make:

- **200** with the ledger's event: the ledger applied the action (the ticket in the body is the new state);
- **409** with the ledger's reason: the ledger refused it (the ticket is unchanged);
- **202** with ``Location: /v1/commands/{command_id}``: the ledger did not answer within
  ``api.command_wait_seconds``; the command is on the stream and will be decided; poll the link.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from prometheus_client import Counter, Histogram

from api.feed import LiveFeed
from haochaping.domain.records import Actor, CommandAction, LedgerCommand, LedgerEvent, LedgerEventType
from haochaping.settings import Settings

COMMANDS = Counter("haochaping_api_commands_total", "Ticket actions by outcome", ["action", "outcome"])
COMMAND_WAIT = Histogram(
    "haochaping_api_command_wait_seconds",
    "Time from publishing a command to the ledger's answer",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
)


class StreamUnavailable(Exception):
    """The broker did not take the command (503): nothing was changed, the action can be retried."""


class CommandProducer:
    """A kafka-python producer made on first use, so the API starts (and serves figures) without a broker."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        with self._lock:
            if self._producer is None:
                from kafka import KafkaProducer

                self._producer = KafkaProducer(
                    bootstrap_servers=self._settings.kafka.bootstrap_servers,
                    client_id=f"{self._settings.kafka.client_id}-api",
                    acks="all",
                    linger_ms=0,
                    request_timeout_ms=10_000,
                    max_block_ms=10_000,
                )
            return self._producer

    def send_blocking(self, command: LedgerCommand, timeout: float = 10.0) -> None:
        from kafka.errors import KafkaError

        topic = self._settings.kafka.topic("ledger.commands")
        try:
            future = self._get().send(
                topic, key=command.ticket_id.encode(), value=command.model_dump_json().encode()
            )
            future.get(timeout=timeout)
        except KafkaError as exc:
            raise StreamUnavailable(
                f"the broker at {self._settings.kafka.bootstrap_servers} did not take the command "
                f"({type(exc).__name__}); nothing was changed, try again"
            ) from exc

    async def send(self, command: LedgerCommand) -> None:
        # kafka-python blocks on metadata and acks: keep it off the event loop.
        await asyncio.to_thread(self.send_blocking, command)

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=5)
                self._producer = None


@dataclass(frozen=True)
class Outcome:
    status: Literal["applied", "refused", "pending"]
    command: LedgerCommand
    event: LedgerEvent | None = None


def new_command(
    ticket_id: str,
    action: CommandAction,
    actor: Actor,
    payload: dict[str, Any],
    *,
    now: datetime | None = None,
) -> LedgerCommand:
    return LedgerCommand(
        command_id=f"cmd-{uuid.uuid4().hex}",
        ticket_id=ticket_id,
        action=action,
        actor=actor,
        at=now or datetime.now(UTC),
        payload=payload,
    )


def outcome_of(command: LedgerCommand, event: LedgerEvent | None) -> Outcome:
    if event is None:
        return Outcome("pending", command)
    return Outcome("refused" if event.type is LedgerEventType.REFUSED else "applied", command, event)


async def submit(
    command: LedgerCommand, *, producer: CommandProducer, feed: LiveFeed, wait_seconds: float
) -> Outcome:
    loop = asyncio.get_running_loop()
    started = loop.time()
    waiter = feed.expect(command.command_id)
    try:
        await producer.send(command)
        try:
            event = await asyncio.wait_for(asyncio.shield(waiter), timeout=wait_seconds)
        except TimeoutError:
            event = None
    finally:
        feed.forget(command.command_id)
    outcome = outcome_of(command, event)
    if event is not None:
        COMMAND_WAIT.observe(loop.time() - started)
    COMMANDS.labels(command.action.value, outcome.status).inc()
    return outcome
