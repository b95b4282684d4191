"""What the ledger agent reads from ``ledger.intake`` (key: ticket id).

Two shapes share the topic:

- :class:`haochaping.domain.records.LedgerIntake`: a triaged bad review or 12345 complaint / report
  that opens a ticket. Opening is idempotent: the ticket id is derived from the source, and an
  intake for a ticket that exists is a no-op, so a replayed batch never opens a second ticket.
- :class:`DeadlineTick` (``"kind": "tick"``): "check this ticket's deadlines as of ``now``", published
  by the ledger's own timer. The check runs inside the ledger agent like any other change, so the
  ticket table is only ever written from the partition that owns the ticket, and the audit trail
  records the clock that decided it (a replay gives the same events).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from haochaping.domain.records import LedgerIntake


class DeadlineTick(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["tick"] = "tick"
    ticket_id: str
    now: datetime


_TICK_START = b'{"kind":"tick"'  # how DeadlineTick's JSON starts (its first field)
_VALIDATE_INTAKE = TypeAdapter(LedgerIntake).validate_json


def parse_intake(raw: bytes) -> LedgerIntake | DeadlineTick:
    """Decode one ``ledger.intake`` value; raises ``ValueError`` (or ValidationError) if it is neither."""
    if not raw.startswith(_TICK_START):
        # Nearly every record is an intake: validating the JSON at once took half the time of
        # decoding it and then validating the objects. Whatever fails takes the path below, so a
        # bad record is described exactly as before.
        try:
            return _VALIDATE_INTAKE(raw)
        except ValidationError:
            pass
    data = orjson.loads(raw)
    if isinstance(data, dict) and data.get("kind") == "tick":
        return DeadlineTick.model_validate(data)
    return LedgerIntake.model_validate(data)
