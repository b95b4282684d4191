"""The shapes a stage works on: records in from Kafka, records out, table writes. No Faust here.

A stage (``reviews``, ``workorders``, ``ledger``) is a plain object whose ``process(batch)`` turns a
list of :class:`Incoming` into a :class:`BatchResult`; the Faust agents in ``streams.app`` only move
bytes between Kafka and these objects. That keeps every rule of the stream testable without a broker.
"""

from __future__ import annotations

import base64
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

import orjson
from pydantic import ValidationError

from haochaping.domain.contract import now_beijing
from haochaping.domain.problems import problem_dicts, problems_from_validation

# Logical topic names (``settings.kafka.topic(name)`` gives the real one).
REVIEWS_RAW = "reviews.raw"
WORKORDERS_RAW = "workorders.raw"
REVIEWS_ACCEPTED = "reviews.accepted"
LEDGER_INTAKE = "ledger.intake"
LEDGER_COMMANDS = "ledger.commands"
LEDGER_EVENTS = "ledger.events"
SATISFACTION_MINUTE = "satisfaction.minute"
ALERTS = "alerts"
DEADLETTER = "deadletter"


class Incoming(NamedTuple):
    """One record a stage reads. Named tuples (here and :class:`Outgoing`): the worker builds one per
    record, and a frozen dataclass (``object.__setattr__`` per field) cost twice as much to build."""

    topic: str  # logical name
    partition: int
    offset: int
    key: bytes | None
    value: bytes


class Outgoing(NamedTuple):
    """One record a stage sends."""

    topic: str  # logical name
    key: bytes | None
    value: bytes


@dataclass
class BatchResult:
    out: list[Outgoing] = field(default_factory=list)
    # {partition: {table key: value}}: what the batch changed, one value per key (the last).
    writes: dict[int, dict[bytes, bytes]] = field(default_factory=dict)
    # Named counts for metrics and tests: "accepted", "dropped.duplicate", "deadletter.invalid", ...
    counts: Counter[str] = field(default_factory=Counter)

    def emit(self, topic: str, key: bytes | str | None, value: bytes) -> None:
        if isinstance(key, str):
            key = key.encode()
        self.out.append(Outgoing(topic, key, value))

    def write(self, partition: int, key: bytes, value: bytes) -> None:
        writes = self.writes.get(partition)
        if writes is None:
            writes = self.writes[partition] = {}
        writes[key] = value

    def dead_letter(
        self,
        record: Incoming,
        *,
        stage: str,
        reason: str,
        error: Exception | None = None,
        at: datetime | None = None,
    ) -> None:
        """Send the original bytes to ``deadletter`` with what was wrong, where and what would be right."""
        problems: list[dict[str, str]] = []
        if isinstance(error, ValidationError):
            problems = problem_dicts(problems_from_validation(error))
        letter = {
            "at": (at or now_beijing()).isoformat(),
            "stage": stage,
            "source_topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "reason": reason,
            "problems": problems,
            "original_b64": base64.b64encode(record.value).decode(),
        }
        self.emit(DEADLETTER, record.topic, orjson.dumps(letter))
        self.counts[f"deadletter.{stage}"] += 1


def describe_json_error(raw: bytes, error: Exception) -> str:
    """Say why bytes are not a JSON object, in words a sender can act on."""
    if not raw:
        return "empty record: expected a JSON object"
    if isinstance(error, orjson.JSONDecodeError):
        return f"not valid JSON ({error}); expected one UTF-8 JSON object per record"
    if isinstance(error, ValidationError):
        first = error.errors(include_url=False)[0]
        return f"not valid JSON ({first['msg']}); expected one UTF-8 JSON object per record"
    return f"expected a JSON object, got {type(error).__name__}: {error}"
