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
    replication_factor: int = 1
    client_id: str = "haochaping"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

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


class StreamsSettings(BaseModel):
    app_id: str = "haochaping-streams"
    # memory:// in tests, rocksdb:// in production.
    store: str = "rocksdb://"
    web_port: int = 6066
    # Path of a YAML file that overrides the built-in triage rules (see haochaping/domain/rules.yaml).
    rules_file: Path | None = None
    # Path of a YAML file of holidays / make-up working days for years chinese-calendar lacks.
    calendar_overrides_file: Path | None = None


class SinkSettings(BaseModel):
    batch_rows: int = 20_000
    batch_seconds: float = 1.0
    raw_review_ttl_days: int = 0  # 0 keeps raw reviews forever


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8080
    token_secret: SecretStr = SecretStr("change-me-token-secret")
    token_issuer: str = "haochaping"
    token_ttl_minutes: int = 12 * 60


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HAOCHAPING_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
    )

    # Where local services keep their data, logs and downloaded jars (git ignores it).
    var_dir: Path = Path("var")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    clickhouse: ClickHouseSettings = Field(default_factory=ClickHouseSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    streams: StreamsSettings = Field(default_factory=StreamsSettings)
    sink: SinkSettings = Field(default_factory=SinkSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
