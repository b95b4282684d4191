"""``haochaping sink`` and ``haochaping migrate``."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    app.command()(migrate)
    app.command()(sink)


def migrate(
    ctx: typer.Context,
    print_only: bool = typer.Option(False, "--print", help="Print the DDL instead of applying it."),
    cluster: str | None = typer.Option(
        None, "--cluster", help="Render for this cluster: ON CLUSTER, Replicated tables, Distributed fronts."
    ),
) -> None:
    """Create or upgrade the ClickHouse schema (safe to run twice)."""
    from haochaping.settings import Settings
    from sinks.schema import Target, render
    from sinks.schema import migrate as apply

    settings: Settings = ctx.obj
    target = Target(settings.clickhouse.database, cluster, settings.sink.raw_review_ttl_days)
    if print_only:
        typer.echo(render(target), nl=False)
        return
    from sinks.clickhouse import connect

    client = connect(settings.clickhouse)
    try:
        report = apply(client, target)
    finally:
        client.close()
    typer.echo(
        f"{settings.clickhouse.database}: applied {report.applied or 'none'}, already there {report.already or 'none'}"
        + ("; raw-review TTL changed" if report.ttl_changed else "")
    )


def sink(ctx: typer.Context) -> None:
    """Apply the schema migrations, then write the stream's topics into ClickHouse until stopped."""
    import asyncio
    import logging
    import signal
    import sys

    from haochaping import taskdump
    from haochaping.settings import Settings
    from sinks.clickhouse import connect
    from sinks.schema import Target
    from sinks.schema import migrate as apply
    from sinks.writer import exit_for_restart, lanes, run_lanes

    settings: Settings = ctx.obj
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    client = connect(settings.clickhouse)
    try:
        apply(client, Target(settings.clickhouse.database, None, settings.sink.raw_review_ttl_days))
    finally:
        client.close()
    if settings.sink.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.sink.metrics_port, addr=settings.metrics_host)

    writers = lanes(settings)

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def stop() -> None:
            for writer in writers:
                writer.stop()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        # ``kill -USR1 PID``: what each lane's loop, insert and commit waits on, into the log.
        loop.add_signal_handler(signal.SIGUSR1, taskdump.dump, sys.stderr)
        # A lane stalled for good (sink.stall_seconds) ends the process with code 70 for a restart.
        await run_lanes(writers, on_stall=exit_for_restart)

    asyncio.run(main())
