"""ClickHouse clients and the one insert the writer makes.

The same code talks to an ``http(s)://`` server (the local 26.9 endpoint, a real server or cluster) and
to the embedded engine (``chdb:///abs/path``, one process only). Reviews, ledger events and alerts are
JSON on Kafka; they go to ClickHouse as they are (``FORMAT JSONEachRow``): ClickHouse parses them in C++,
which is what lets one Python process write tens of thousands of rows a second.
"""

from __future__ import annotations

import contextlib
import threading
import urllib.parse
from typing import Any

from haochaping.settings import ClickHouseSettings

# ClickHouse error codes that mean "this data cannot go in", as opposed to "try again later": a batch
# failing with one of these is split to find the records at fault, which go to the dead-letter topic.
DATA_ERROR_CODES = frozenset(
    {
        6,  # CANNOT_PARSE_TEXT
        25,  # CANNOT_PARSE_ESCAPE_SEQUENCE
        26,  # CANNOT_PARSE_QUOTED_STRING
        27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        38,  # CANNOT_PARSE_DATE
        41,  # CANNOT_PARSE_DATETIME
        53,  # TYPE_MISMATCH
        69,  # ARGUMENT_OUT_OF_BOUND
        70,  # CANNOT_CONVERT_TYPE
        72,  # CANNOT_PARSE_NUMBER
        117,  # INCORRECT_DATA
        130,  # CANNOT_READ_ARRAY_FROM_TEXT
        131,  # TOO_LARGE_STRING_SIZE
        349,  # CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
        395,  # FUNCTION_THROW_IF_VALUE_IS_NON_ZERO
        691,  # UNKNOWN_ELEMENT_OF_ENUM
    }
)

INSERT_SETTINGS: dict[str, Any] = {
    "input_format_skip_unknown_fields": 1,  # newer records may carry fields this schema lacks
    "input_format_null_as_default": 1,  # null in a dimension is '' (none)
    "date_time_input_format": "best_effort",  # ISO 8601 with offset, as orjson writes it
    "insert_deduplicate": 1,
    # The rollups fed by materialized views drop the repeated block too (checked in tests/sinks).
    "deduplicate_blocks_in_dependent_materialized_views": 1,
    "async_insert": 0,  # the token must name exactly this block
    # Summing/Replacing targets would otherwise collapse equal keys within each inserted block. The
    # rollup views already GROUP BY per block, so that pass finds nothing to collapse, yet it halved
    # the insert rate with three views on 2 cores (57k -> 96k rows/s measured here without it).
    # Merges still collapse, and every read sums with GROUP BY or reads tickets with FINAL.
    "optimize_on_insert": 0,
    # A batch of 20,000 reviews is about 11 MB of JSON, past the 10 MB at which ClickHouse parses it on
    # several threads; on 2 cores, with the writer's two inserts running at once, those threads only
    # contend: 0.5 us less ClickHouse CPU per review without (inserts of 200,000 bench reviews, 3 runs).
    "input_format_parallel_parsing": 0,
}


def is_data_error(exc: BaseException) -> bool:
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    if isinstance(exc, OperationalError) or not isinstance(exc, DatabaseError):
        return False
    code = getattr(exc, "code", None)
    if code is None:  # the embedded client puts the code only in the message
        text = str(exc)
        return any(f"Code: {candidate}." in text for candidate in DATA_ERROR_CODES)
    return int(code) in DATA_ERROR_CODES


def connect(settings: ClickHouseSettings, *, database: str | None = None) -> Any:
    """A new client (one per thread: a client's session cannot run two queries at once)."""
    import clickhouse_connect

    url = settings.url
    if url.startswith("chdb://"):
        return clickhouse_connect.get_client(dsn=url)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"clickhouse.url {url!r} is neither http(s)://host:port nor chdb:///absolute/path; "
            "e.g. http://127.0.0.1:8123 or chdb:///var/lib/haochaping/chdb"
        )
    return clickhouse_connect.get_client(
        host=parts.hostname,
        port=parts.port or (8443 if parts.scheme == "https" else 8123),
        secure=parts.scheme == "https",
        username=settings.username,
        password=settings.password.get_secret_value(),
        database=database or "",
        # Inserts are retried by the writer with its own backoff; a session is not needed and would
        # forbid the concurrent inserts of several threads.
        autogenerate_session_id=False,
        connect_timeout=5,
        send_receive_timeout=120,
    )


class ClientPerThread:
    """Hands each thread its own client, made on first use."""

    def __init__(self, settings: ClickHouseSettings) -> None:
        self._settings = settings
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    def get(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = connect(self._settings)
            self._local.client = client
            with self._lock:
                self._all.append(client)
        return client

    def drop(self) -> None:
        """Forget this thread's client (after a connection failure, make a fresh one next time)."""
        client = getattr(self._local, "client", None)
        self._local.client = None
        if client is not None:
            with self._lock:
                if client in self._all:
                    self._all.remove(client)
            _close(client)

    def close(self) -> None:
        with self._lock:
            clients, self._all = self._all, []
        for client in clients:
            _close(client)


def _close(client: Any) -> None:
    with contextlib.suppress(Exception):  # closing a client of a server that is gone
        client.close()


def insert_json_rows(client: Any, table: str, values: list[bytes] | tuple[bytes, ...], token: str) -> None:
    """Insert JSON objects, one per value, as one block deduplicated by ``token``."""
    client.raw_insert(
        table,
        insert_block=b"\n".join(values) + b"\n",
        settings={**INSERT_SETTINGS, "insert_deduplication_token": token},
        fmt="JSONEachRow",
    )
