"""Posts the simulated city to the real ingest API, signed, at a target rate, and writes the ground truth.

Each emission of the generator becomes one signed request (a device backlog one batch request). What
ingest answers decides the truth: a row is written to the truth file only once ingest took it (2xx),
with ingest's outcome (``accepted``, ``duplicate``, or ``kept`` for an SMS reply it could not turn into a
rating). A 5xx, a 429 or a broken connection (the broker restarting, ingest restarting) is retried, signed
anew, until ``retry_for`` runs out, so a fault drill loses nothing on the sender's side. A malformed
request must come back 4xx; if ingest takes one, that is counted as a finding.

The truth file is JSON lines: one :class:`~haochaping.simulator.generator.TruthRow` per line plus
``outcome``, ``event_id`` (the id ingest gave it), ``sent_at`` and ``acked_at`` (Unix seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import httpx
import orjson

from haochaping.domain import signing
from haochaping.domain.contract import BEIJING
from haochaping.simulator.curve import activity
from haochaping.simulator.generator import CityGenerator, Emission, Route, TruthRow

# Ingest's endpoints (see ingest/routes.py and docs/ingest.md).
PATHS: dict[Route, str] = {
    Route.REVIEW: "/v1/reviews",
    Route.REVIEWS_BATCH: "/v1/reviews/batch",
    Route.WORKORDER: "/v1/hotline/workorders",
    Route.CALLBACK: "/v1/hotline/callbacks",
    Route.SMS_INVITATION: "/v1/sms/invitations",
    Route.SMS: "/v1/sms/replies",
    Route.MALFORMED: "/v1/reviews",
}
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

# Called with the truth rows ingest took, the time the request was first sent and when it was answered.
AcceptedHook = Callable[[list[dict[str, Any]], float, float], None]


@dataclass
class SendStats:
    started: float = field(default_factory=time.monotonic)
    happenings: int = 0  # citizens' actions generated
    requests: int = 0
    rows_accepted: int = 0
    rows_duplicate: int = 0
    rows_kept: int = 0  # SMS replies that made no rating
    rows_rejected: int = 0  # valid rows ingest refused: a finding
    malformed_refused: int = 0
    malformed_taken: int = 0  # broken requests ingest took: a finding
    retries: int = 0
    failed: int = 0  # gave up after retry_for
    in_flight: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    last_retry: str | None = None  # why the last retry was needed: shown while ingest or Kafka is down
    request_seconds: list[float] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def note(self, finding: str) -> None:
        if len(self.findings) < 50:
            self.findings.append(finding)


class TruthWriter:
    """Appends truth rows as JSON lines; flushed on every write so a killed run leaves a usable file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fh: IO[bytes] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(path, "ab")  # noqa: SIM115 - held for the run, closed by close()

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        if self._fh is None:
            return
        self._fh.write(b"".join(orjson.dumps(row) + b"\n" for row in rows))
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_truth(path: Path) -> list[dict[str, Any]]:
    """The rows of a truth file; a last line cut short by a kill is skipped."""
    rows = []
    with open(path, "rb") as fh:
        for line in fh:
            try:
                rows.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
    return rows


class Sender:
    def __init__(
        self,
        ingest_url: str,
        key_id: str,
        secret: str,
        *,
        concurrency: int = 32,
        truth: TruthWriter | None = None,
        retry_for: float = 300.0,
        timeout: float = 10.0,
        on_accepted: AcceptedHook | None = None,
    ) -> None:
        self.key_id = key_id
        self._secret = secret
        self.concurrency = concurrency
        self.truth = truth or TruthWriter(None)
        self.retry_for = retry_for
        self.on_accepted = on_accepted
        self.stats = SendStats()
        self._invitations: dict[str, asyncio.Event] = {}
        self._failing_since: float | None = None  # start of the current run of failed requests
        self._client = httpx.AsyncClient(
            base_url=ingest_url.rstrip("/"),
            timeout=timeout,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )

    async def aclose(self) -> None:
        await self._client.aclose()
        self.truth.close()

    # -- one emission -----------------------------------------------------------------------------

    async def send(self, emission: Emission) -> None:
        if emission.route == Route.SMS:
            # A citizen cannot answer an SMS before it was sent: wait until ingest took its invitation.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._invitation(emission.body["ref"]).wait(), self.retry_for)
        try:
            await self._post(emission)
        finally:
            if emission.route == Route.SMS_INVITATION:
                self._invitation(emission.body["ref"]).set()

    def _invitation(self, ref: str) -> asyncio.Event:
        event = self._invitations.get(ref)
        if event is None:
            event = self._invitations[ref] = asyncio.Event()
        return event

    async def _post(self, emission: Emission) -> None:
        path = PATHS[emission.route]
        if emission.route == Route.REVIEWS_BATCH:
            payload: Any = {"reviews": emission.body}
        else:
            payload = emission.body
        body = payload.encode() if isinstance(payload, str) else orjson.dumps(payload)
        first_sent = time.time()
        deadline = time.monotonic() + self.retry_for
        delay = 0.2
        self.stats.in_flight += 1
        try:
            while True:
                headers = signing.signed_headers(
                    self.key_id,
                    self._secret,
                    "POST",
                    path,
                    body,
                    now=time.time(),
                    nonce=secrets.token_urlsafe(12),
                )
                headers["Content-Type"] = "application/json"
                t0 = time.monotonic()
                problem: str | None
                try:
                    response = await self._client.post(path, content=body, headers=headers)
                except httpx.TransportError as exc:
                    status, answer, problem = 0, None, f"{type(exc).__name__}: {exc}"
                else:
                    status, problem = response.status_code, None
                    answer = _json(response)
                self.stats.requests += 1
                self.stats.statuses[status] += 1
                self.stats.request_seconds.append(time.monotonic() - t0)
                if status == 0 or status in _RETRY_STATUSES:
                    now = time.monotonic()
                    if self._failing_since is None:
                        self._failing_since = now
                    # Give up when this request, or ingest as a whole, has failed for retry_for: with
                    # ingest down for good, the queue then empties in seconds, not queue × retry_for.
                    if now >= deadline or now - self._failing_since >= self.retry_for:
                        self.stats.failed += 1
                        self.stats.note(
                            f"{path}: gave up after {self.retry_for:.0f} s: {problem or f'HTTP {status}'}"
                        )
                        return
                    self.stats.retries += 1
                    self.stats.last_retry = problem or f"HTTP {status}: {_short(answer, 200)}"
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                self._failing_since = None
                self._settle(emission, status, answer, first_sent, time.time())
                return
        finally:
            self.stats.in_flight -= 1

    def _settle(self, emission: Emission, status: int, answer: Any, sent: float, acked: float) -> None:
        if not emission.valid:
            if 400 <= status < 500:
                self.stats.malformed_refused += 1
            else:
                self.stats.malformed_taken += 1
                self.stats.note(f"ingest answered {status} to a broken request ({emission.note})")
            return
        if not 200 <= status < 300:
            self.stats.rows_rejected += len(emission.truth)
            self.stats.note(f"{PATHS[emission.route]} answered {status}: {_short(answer)}")
            return
        outcomes = _outcomes(emission, answer)
        rows = []
        for row, (outcome, event_id) in zip(emission.truth, outcomes, strict=True):
            if outcome == "rejected":
                self.stats.rows_rejected += 1
                self.stats.note(f"batch item {row.id} rejected: {_short(answer)}")
                continue
            if outcome == "kept":
                self.stats.rows_kept += 1
            elif outcome == "duplicate" or row.duplicate:
                self.stats.rows_duplicate += 1
            else:
                self.stats.rows_accepted += 1
            rows.append(_truth_line(row, outcome, event_id, sent, acked))
        self.truth.write(rows)
        if self.on_accepted is not None and rows:
            self.on_accepted(rows, sent, acked)

    # -- a run ------------------------------------------------------------------------------------

    async def run(
        self,
        generator: CityGenerator,
        *,
        rate: float,
        duration: float,
        hour: float | None = None,
        day_minutes: float | None = None,
        start_hour: float = 8.5,
        tick: float = 0.05,
        on_tick: Callable[[SendStats], None] | None = None,
        stop: asyncio.Event | None = None,
    ) -> SendStats:
        """Send ``rate`` happenings a second for ``duration`` seconds, then everything still held.

        ``hour`` fixes the channel mix (e.g. 10 for a busy morning); ``day_minutes`` instead runs a whole
        day in that many minutes from ``start_hour``, with the rate following the daily curve; with
        neither, the mix follows the Beijing clock.
        """
        queue: asyncio.Queue[Emission | None] = asyncio.Queue(maxsize=self.concurrency * 4)
        workers = [asyncio.create_task(self._worker(queue)) for _ in range(self.concurrency)]
        stop = stop or asyncio.Event()
        started = time.monotonic()
        owed = 0.0
        last_elapsed = 0.0
        try:
            while not stop.is_set():
                elapsed = time.monotonic() - started
                if elapsed >= duration:
                    break
                now = datetime.now(BEIJING)
                mix_hour = hour
                factor = 1.0
                if day_minutes:
                    mix_hour = (start_hour + elapsed / (day_minutes * 60) * 24) % 24
                    factor = activity(mix_hour)
                # Owed from the elapsed time, not per tick: a tick that waited on a full queue (ingest
                # slower than the rate) is made up for, up to a second's worth at once.
                owed = min(owed + rate * factor * (elapsed - last_elapsed), max(rate * factor, 1.0))
                last_elapsed = elapsed
                n = int(owed)
                owed -= n
                self.stats.happenings += n
                for emission in generator.tick(now, n, hour=mix_hour):
                    await queue.put(emission)
                if on_tick is not None:
                    on_tick(self.stats)
                # Sleep to the next tick boundary, so a slow tick does not lower the rate.
                next_at = started + (int(elapsed / tick) + 1) * tick
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))
            for emission in generator.drain(datetime.now(BEIJING)):
                await queue.put(emission)
            for _ in workers:
                await queue.put(None)
            while not all(w.done() for w in workers):
                if on_tick is not None:
                    on_tick(self.stats)
                await asyncio.wait(workers, timeout=0.25)
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        return self.stats

    async def _worker(self, queue: asyncio.Queue[Emission | None]) -> None:
        while True:
            emission = await queue.get()
            if emission is None:
                return
            await self.send(emission)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:300]


def _short(answer: Any, limit: int = 300) -> str:
    text = answer if isinstance(answer, str) else orjson.dumps(answer).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _outcomes(emission: Emission, answer: Any) -> list[tuple[str, str | None]]:
    """(outcome, event id) per truth row, from ingest's answer."""
    if emission.route == Route.REVIEWS_BATCH and isinstance(answer, dict) and "results" in answer:
        by_index = {item["index"]: item for item in answer["results"]}
        return [
            (by_index.get(i, {}).get("status", "rejected"), by_index.get(i, {}).get("event_id"))
            for i in range(len(emission.truth))
        ]
    if isinstance(answer, dict):
        outcome = answer.get("status", "accepted")
        event_id = answer.get("event_id") or answer.get("callback_id") or answer.get("order_id")
        return [(outcome, event_id)] * len(emission.truth)
    return [("accepted", None)] * len(emission.truth)


def _truth_line(
    row: TruthRow, outcome: str, event_id: str | None, sent: float, acked: float
) -> dict[str, Any]:
    line = row.as_dict()
    line.update(
        outcome=outcome, event_id=event_id or row.id, sent_at=round(sent, 4), acked_at=round(acked, 4)
    )
    return line
