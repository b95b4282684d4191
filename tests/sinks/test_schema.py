"""The schema: one source for a single node and a cluster; migrations that are safe to run twice."""

from __future__ import annotations

import re

import pytest

from sinks.schema import MIGRATIONS, SchemaError, Target, migrate, render


def test_cluster_ddl_has_replicated_locals_distributed_fronts_and_local_views() -> None:
    ddl = render(Target("haochaping", "prod"))
    for table in (
        "reviews",
        "satisfaction_minute",
        "satisfaction_hourly",
        "satisfaction_daily",
        "ticket_events",
        "tickets",
        "alerts",
        "schema_migrations",
    ):
        assert re.search(rf"CREATE TABLE IF NOT EXISTS haochaping\.{table}_local ON CLUSTER prod", ddl), table
        assert f"ENGINE = Distributed(prod, haochaping, {table}_local" in ddl
    assert (
        "ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/haochaping/satisfaction_minute_local'" in ddl
    )
    assert (
        "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/haochaping/tickets_local', '{replica}', version)"
        in ddl
    )
    assert (
        "TO haochaping.satisfaction_minute_local\nAS SELECT" in ddl and "FROM haochaping.reviews_local" in ddl
    )
    assert "non_replicated_deduplication_window" not in ddl
    assert "replicated_deduplication_window = 10000" in ddl
    # Migration 3's projections go to the tables that hold the data, on every node.
    for table in ("reviews", "satisfaction_minute", "satisfaction_hourly"):
        assert (
            f"ALTER TABLE haochaping.{table}_local ON CLUSTER prod ADD PROJECTION IF NOT EXISTS by_time"
            in ddl
        )
    assert "ALTER TABLE haochaping.reviews ON CLUSTER prod ADD PROJECTION" not in ddl
    assert "satisfaction_daily_local ON CLUSTER prod ADD PROJECTION" not in ddl


def test_single_node_ddl_keeps_a_dedup_window_on_every_written_table_and_rollup() -> None:
    ddl = render(Target("haochaping", None, raw_review_ttl_days=400))
    assert "ON CLUSTER" not in ddl and "Distributed" not in ddl
    # reviews, ticket events, alerts, and the targets of the views: minute, hour, day rollups and tickets
    assert ddl.count("non_replicated_deduplication_window = 10000") == 7
    assert "TTL toDateTime(rated_at) + INTERVAL 400 DAY DELETE" in ddl


def test_a_name_that_cannot_go_into_ddl_is_refused_with_the_rule() -> None:
    with pytest.raises(ValueError, match="letters, digits and underscores"):
        render(Target("haochaping; DROP TABLE x", None))


@pytest.mark.integration
def test_migrations_apply_once_and_the_ttl_follows_the_settings(ch_client, settings) -> None:
    db = settings.clickhouse.database
    first = migrate(ch_client, Target(db, None, 30))
    assert first.applied == [m.version for m in MIGRATIONS] and first.ttl_changed is False
    again = migrate(ch_client, Target(db, None, 30))
    assert again.applied == [] and again.already == [m.version for m in MIGRATIONS] and not again.ttl_changed
    assert migrate(ch_client, Target(db, None, 90)).ttl_changed
    assert (
        "toIntervalDay(90)"
        in ch_client.query(
            f"SELECT engine_full FROM system.tables WHERE database='{db}' AND name='reviews'"
        ).result_rows[0][0]
    )
    assert migrate(ch_client, Target(db, None, 0)).ttl_changed
    views = {
        r[0] for r in ch_client.query(f"SELECT name FROM system.tables WHERE database = '{db}'").result_rows
    }
    assert {"satisfaction_hour", "satisfaction_day", "satisfaction_month", "tickets_mv"} <= views
    assert {
        "satisfaction_hourly",
        "satisfaction_daily",
        "satisfaction_hourly_mv",
        "satisfaction_daily_mv",
    } <= views


ROLLUP_SQL = """
SELECT {bucket} AS b, unit_code, window_id, sum(n1), sum(n2), sum(n3), sum(n4), sum(n5), sum(f1 + f2 + f3 + f4 + f5)
FROM {table} GROUP BY b, unit_code, window_id ORDER BY b, unit_code, window_id
"""


@pytest.mark.integration
def test_migration_2_fills_the_hour_and_day_rollups_from_what_was_there_and_feeds_them_after(
    ch_client, settings
) -> None:
    from sinks.clickhouse import insert_json_rows
    from tests.sinks.factories import dumps, review

    db = settings.clickhouse.database
    before = [review(i, fraud=(i % 7 == 0)) for i in range(0, 3000, 3)]  # 3.5 hours from 09:00
    migrate(ch_client, Target(db), MIGRATIONS[:1])
    insert_json_rows(ch_client, f"{db}.reviews", [dumps(r) for r in before], "before")
    assert migrate(ch_client, Target(db)).applied == [2, 3]
    # A migration cut short after its backfill runs the backfill again: the repeat must be dropped.
    for stmt in MIGRATIONS[1].statements(Target(db)):
        if stmt.startswith("INSERT"):
            ch_client.command(stmt)
    after = [review(i) for i in range(1, 3000, 3)]
    insert_json_rows(ch_client, f"{db}.reviews", [dumps(r) for r in after], "after")

    def rollup(table: str, bucket: str) -> list[tuple[object, ...]]:
        return ch_client.query(ROLLUP_SQL.format(bucket=bucket, table=f"{db}.{table}")).result_rows

    assert rollup("satisfaction_hourly", "hour") == rollup("satisfaction_minute", "toStartOfHour(minute)")
    assert rollup("satisfaction_daily", "day") == rollup("satisfaction_minute", "toDate(minute)")
    assert sum(r[3] + r[4] + r[5] + r[6] + r[7] + r[8] for r in rollup("satisfaction_daily", "day")) == 2000


@pytest.mark.integration
def test_an_edited_migration_is_refused_in_words(ch_client, settings) -> None:
    db = settings.clickhouse.database
    migrate(ch_client, Target(db))
    ch_client.command(
        f"INSERT INTO {db}.schema_migrations (version, name, checksum) VALUES (1, 'x', 'deadbeef')"
    )
    with pytest.raises(SchemaError, match="an applied migration was edited; add a new migration instead"):
        migrate(ch_client, Target(db))
