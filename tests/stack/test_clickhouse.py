"""The local ClickHouse endpoint (chdb-core serving HTTP/TCP): a real server, no mocks."""

from __future__ import annotations

import socket
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import clickhouse_connect
import pytest

from haochaping.stack.clickhouse import ClickHouseServer

pytestmark = pytest.mark.integration

SHANGHAI = ZoneInfo("Asia/Shanghai")


def test_endpoint_reports_26_9(clickhouse_stack: ClickHouseServer) -> None:
    assert clickhouse_stack.is_ready()
    assert clickhouse_stack.version().startswith("26.9.")
    client = clickhouse_connect.get_client(host="127.0.0.1", port=clickhouse_stack.http_port)
    try:
        assert client.server_version.startswith("26.9.")
    finally:
        client.close()


def test_native_tcp_port_listens(clickhouse_stack: ClickHouseServer) -> None:
    with socket.create_connection(("127.0.0.1", clickhouse_stack.tcp_port), timeout=2):
        pass


def _create_and_fill(client) -> list[tuple]:
    client.command(
        """
        CREATE TABLE reviews (
            review_id UUID,
            service_code LowCardinality(String),
            rating UInt8,
            comment String,
            submitted_at DateTime64(3, 'Asia/Shanghai')
        ) ENGINE = MergeTree ORDER BY (service_code, submitted_at)
        """
    )
    rows = [
        (
            f"00000000-0000-0000-0000-{i:012d}",
            f"1101050000{i % 3:02d}",
            1 + i % 5,
            "窗口人员态度好" if i % 2 else "材料被退回三次",
            datetime(2026, 11, 25, 9, 30, i, tzinfo=SHANGHAI),
        )
        for i in range(50)
    ]
    client.insert(
        "reviews", rows, column_names=["review_id", "service_code", "rating", "comment", "submitted_at"]
    )
    return rows


def test_mergetree_write_and_read_back(ch_client) -> None:
    rows = _create_and_fill(ch_client)
    result = ch_client.query(
        "SELECT toString(review_id), service_code, rating, comment, submitted_at FROM reviews ORDER BY review_id"
    )
    assert [tuple(r) for r in result.result_rows] == rows
    assert ch_client.command("SELECT count() FROM reviews WHERE rating = 1") == 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_data_survives_restart(tmp_path: Path) -> None:
    server = ClickHouseServer(tmp_path, _free_port(), _free_port())
    try:
        assert server.start() is True
        server.wait_ready(60)
        client = clickhouse_connect.get_client(host="127.0.0.1", port=server.http_port)
        client.command("CREATE DATABASE survive")
        client = clickhouse_connect.get_client(host="127.0.0.1", port=server.http_port, database="survive")
        rows = _create_and_fill(client)
        client.close()

        assert server.stop() is True
        assert not server.is_running() and not server.is_ready()

        assert server.start() is True
        server.wait_ready(60)
        client = clickhouse_connect.get_client(host="127.0.0.1", port=server.http_port, database="survive")
        result = client.query(
            "SELECT toString(review_id), service_code, rating, comment, submitted_at FROM reviews ORDER BY review_id"
        )
        assert [tuple(r) for r in result.result_rows] == rows
        client.close()
    finally:
        server.stop()
    assert not server.is_running()
    assert "clickhouse: stopped" in server.log_file.read_text()
