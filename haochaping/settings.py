"""The one settings object.

Read once (``Settings()``) by the entry point that starts a process and passed down; no other module
reads the environment. Every field can be set as ``HAOCHAPING_<SECTION>__<FIELD>``, e.g.
``HAOCHAPING_KAFKA__BOOTSTRAP_SERVERS=kafka-0:9092``, or from a ``.env`` file.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    controller_port: int = 9093
    # Prefix for every topic name: lets tests and several deployments share one cluster.
    topic_prefix: str = ""
    partitions: int = 3
    # A partition count of its own for a topic the worker writes and never reads (reviews.accepted,
    # ledger.events, satisfaction.minute, alerts, deadletter), in place of ``partitions``. The sink makes
    # one ClickHouse insert per partition per time bound, and each insert has a fixed cost whatever its
    # size, so the sink's topics get one partition; more only for more sink processes (docs/scaling.md
    # has the measurements).
    topic_partitions: dict[str, int] = {"reviews.accepted": 1, "ledger.events": 1, "alerts": 1}
    replication_factor: int = 1
    client_id: str = "haochaping"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def partitions_of(self, name: str) -> int:
        """The partition count topic ``name`` (the short name) is created with."""
        return self.topic_partitions.get(name, self.partitions)

    @property
    def port(self) -> int:
        return int(self.bootstrap_servers.split(",")[0].rsplit(":", 1)[1])


class ClickHouseSettings(BaseModel):
    # http(s)://host:port of a ClickHouse server, or chdb:///abs/path for the embedded engine.
    url: str = "http://127.0.0.1:8123"
    tcp_port: int = 9000
    database: str = "haochaping"
    username: str = "default"
    password: SecretStr = SecretStr("")


class IngestSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 500
    # key id -> shared secret of each sender (device, gateway, hotline system, provincial platform).
    sender_keys: dict[str, SecretStr] = Field(
        default_factory=lambda: {"demo-device": SecretStr("demo-secret")}
    )
    # Key of the HMAC that turns a phone or ID number into a pseudonym before anything leaves ingest.
    pseudonym_key: SecretStr = SecretStr("change-me-pseudonym-key")
    max_clock_skew_seconds: int = 300
    # A request body larger than this is refused with 413 before it is read further.
    max_body_bytes: int = 4 * 1024 * 1024
    # How long a request may wait for Kafka's acknowledgement before the sender gets 503 + Retry-After.
    # The producer gives up on the record a little earlier, so a 503 never leaves a late copy behind.
    delivery_timeout_seconds: float = 5.0
    # How long connecting to the cluster may take when ingest (re)connects; a request never waits longer.
    connect_timeout_seconds: float = 2.0
    retry_after_seconds: int = 5
    # After this long with every write failing and none acknowledged, the producer is replaced by a
    # fresh one (a stuck kafka-python producer does not recover by itself; see ingest/producer.py).
    producer_reset_after_seconds: float = 10.0
    linger_ms: int = 2
    # Per provincial source (its key id): pf code -> channel, for provinces that swap 6 and 7 or add codes.
    # Sources not listed use haochaping.domain.contract.PROVINCIAL_CHANNEL_CODES.
    provincial_channel_codes: dict[str, dict[str, str]] = Field(default_factory=dict)
    # SMS invitations are kept this long for replies to link to (the compacted topic's retention too).
    invitation_ttl_days: int = 30


class StreamsSettings(BaseModel):
    app_id: str = "haochaping-streams"
    # memory:// in tests, rocksdb:// in production.
    store: str = "rocksdb://"
    web_port: int = 6066
    # Path of a YAML file that overrides the built-in triage rules (see haochaping/domain/rules.yaml).
    rules_file: Path | None = None
    # Path of a YAML file of holidays / make-up working days for years chinese-calendar lacks.
    calendar_overrides_file: Path | None = None
    # Prometheus metrics of the worker; 0 serves none (several workers on one host need distinct ports).
    metrics_port: int = 9466
    # Where RocksDB tables live; default <var_dir>/streams/<app id>. One directory per worker process.
    data_dir: Path | None = None
    # Records per batch and how long a batch waits to fill: the throughput / latency trade.
    batch_size: int = 2000
    batch_within_seconds: float = 0.05
    # How long the broker waits for data before answering an empty fetch: bounds the latency of a
    # quiet partition (Faust's own default is 1.5 s).
    fetch_max_wait_ms: int = 100
    broker_session_timeout: float = 60.0
    broker_heartbeat_interval: float = 3.0
    standby_replicas: int = 0
    producer_linger_seconds: float = 0.005
    # Bytes per partition batch of the producer. aiokafka makes a send wait for a broker round trip
    # whenever a partition's batch is full, so its 16 KiB default (about 20 reviews) made every batch
    # of outputs a chain of round trips. Must stay under the broker's message.max.bytes (1 MiB).
    producer_max_batch_bytes: int = 512 * 1024
    commit_interval_seconds: float = 1.0
    # How often the ledger looks for tickets whose 预警 or deadline has come.
    deadline_check_seconds: float = 5.0
    # A worker that has fetched no record and finished no batch for this long while records wait on its
    # partitions writes its task dump to its log and exits with code 70 for its supervisor to restart it
    # (haochaping/liveness.py); 0 turns the check off. Well above a rebalance (session timeout plus
    # recovery) and a slow batch under load.
    stall_seconds: float = Field(default=180.0, ge=0)
    # How long 一次一评 remembers a case and stage: a rating period (a year) plus the time appeals and
    # 复核 of that period's ratings take. A second rating of the same case more than this many days
    # after the first counts as a new rating, and the purge deletes dedupe keys older than this.
    dedupe_horizon_days: int = Field(default=400, ge=1)
    # A purge of the dedupe table starts over each source partition at most this often.
    dedupe_purge_interval_minutes: float = Field(default=60.0, ge=0)
    # Dedupe keys the purge looks at per batch and partition, hence at most this many deletions per
    # batch: bounds the time and changelog records the purge adds to one batch.
    dedupe_purge_keys_per_batch: int = Field(default=2000, ge=1)


class SinkSettings(BaseModel):
    # Per partition: a batch is cut at this many records ... An insert costs ClickHouse 70-100 ms of CPU
    # whatever its size (three views, projections, new parts to merge): 50,000 rather than 20,000 took
    # ClickHouse's CPU per review, merges included, from 41-43 to 21-29 us (docs/clickhouse.md). The writer then
    # holds up to three copies of a batch per partition: 500 MB RSS with 3 partitions instead of 300 MB,
    # and 540-650 MB since it reads the next batch while one is inserted (docs/sinks.md).
    batch_rows: int = 50_000
    batch_seconds: float = 1.0  # ... or when its oldest record waited this long
    # Topics a person waits for record by record, each with its own time bound in place of batch_seconds:
    # a red ticket should be in the supervisors' list within a second of the rating, and the 1 s bound
    # alone took ledger events 2 s (p50) to ClickHouse at 2,000 reviews/s. `haochaping sink` reads these
    # topics with a consumer of their own (a second member of the same group), so that their small
    # inserts never queue behind a reviews batch. Each insert costs ClickHouse a fixed amount of CPU, so
    # only small streams belong here (docs/sinks.md has what they cost); {} puts every topic on batch_seconds.
    # Alerts are not: the live board gets them from Kafka (api/feed.py), no API query reads their table.
    latency_topics: dict[str, float] = {"ledger.events": 0.15}
    raw_review_ttl_days: int = 0  # 0 keeps raw reviews forever
    group_id: str = "haochaping-sink"
    insert_threads: int = 2  # concurrent inserts (one ClickHouse client each); 1 for chdb://
    # ... and of the latency lane (`haochaping sink`): one insert per partition of its topics at once, so
    # that a ledger event's batch never queues behind another partition's (its inserts are small).
    latency_insert_threads: int = 4
    max_backoff_seconds: float = 30.0  # longest wait between insert attempts while ClickHouse is down
    metrics_port: int = 9108  # Prometheus /metrics of `haochaping sink`; 0 turns it off
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    # Stalled this long with records waiting (no fetch, no batch, no insert attempt): exit 70 for a restart
    # (docs/sinks.md); 0 turns it off. Well above max_backoff_seconds and the slowest insert.
    stall_seconds: float = Field(default=180.0, ge=0)


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8080
    token_secret: SecretStr = SecretStr("change-me-token-secret-for-local-use-only")
    token_issuer: str = "haochaping"
    token_ttl_minutes: int = 12 * 60
    # How long an action waits for the ledger's answer before the API says 202 and hands out a link to poll.
    command_wait_seconds: float = 5.0
    # Rankings leave out anyone with fewer ratings than this, so three ratings don't top a table.
    ranking_min_sample: int = 30
    # Events a slow live-board client may fall behind by before the oldest are dropped for it.
    live_queue_size: int = 1000


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HAOCHAPING_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
    )

    # Where local services keep their data, logs and downloaded jars (git ignores it).
    var_dir: Path = Path("var")
    # Address the worker's and the sink's Prometheus endpoints bind to: 0.0.0.0 in a container.
    metrics_host: str = "127.0.0.1"
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    clickhouse: ClickHouseSettings = Field(default_factory=ClickHouseSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    streams: StreamsSettings = Field(default_factory=StreamsSettings)
    sink: SinkSettings = Field(default_factory=SinkSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
