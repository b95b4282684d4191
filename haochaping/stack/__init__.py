"""Local Kafka and ClickHouse for development, tests, CI and the demo."""
