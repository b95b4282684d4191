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


def test_single_node_ddl_keeps_a_dedup_window_on_every_written_table_and_rollup() -> None:
    ddl = render(Target("haochaping", None, raw_review_ttl_days=400))
    assert "ON CLUSTER" not in ddl and "Distributed" not in ddl
    assert ddl.count("non_replicated_deduplication_window = 10000") == 5
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


@pytest.mark.integration
def test_an_edited_migration_is_refused_in_words(ch_client, settings) -> None:
    db = settings.clickhouse.database
    migrate(ch_client, Target(db))
    ch_client.command(
        f"INSERT INTO {db}.schema_migrations (version, name, checksum) VALUES (1, 'x', 'deadbeef')"
    )
    with pytest.raises(SchemaError, match="an applied migration was edited; add a new migration instead"):
        migrate(ch_client, Target(db))
