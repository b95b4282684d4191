"""``haochaping worker``: the stream worker (several may run; they share the partitions)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def worker(
        ctx: typer.Context,
        loglevel: str = typer.Option("info", help="Log level of the worker (debug, info, warning)."),
    ) -> None:
        """Create the topics that are missing, wait until the broker can serve the group, then run a stream
        worker until stopped (Ctrl-C / SIGTERM)."""
        from faust.worker import Worker
        from prometheus_client import start_http_server

        from haochaping import taskdump
        from haochaping.settings import Settings
        from haochaping.topics import ensure_topics, wait_until_ready_for_group
        from streams.app import SOURCES, Stages, app_id_for, create_app

        settings: Settings = ctx.obj
        created = ensure_topics(settings.kafka)
        if created:
            typer.echo(f"created {len(created)} topic(s): {', '.join(created)}", err=True)
        # On a broker that has just started or just created the topics, a group joined too early can sit
        # with no partitions for minutes (haochaping.topics.wait_until_ready_for_group).
        wait_until_ready_for_group(
            settings.kafka, app_id_for(settings), [settings.kafka.topic(name) for name in SOURCES]
        )
        # Read the rules and calendar now: a broken rules file stops the worker before it joins the group.
        stages = Stages.from_settings(settings)
        faust_app = create_app(settings, stages)
        if settings.streams.metrics_port:
            start_http_server(settings.streams.metrics_port, addr=settings.metrics_host)

        class DumpingWorker(Worker):  # type: ignore[misc]
            async def _cry(self) -> None:
                # SIGUSR1 (``kill -USR1 PID``): what every thread, task and async generator waits on,
                # into the worker's log, the consumer thread and the fetcher's wait included.
                taskdump.dump(self.stderr)

        faust_worker = DumpingWorker(faust_app, loglevel=loglevel, quiet=True)
        # At warning and above Faust installs a terminal spinner that sets the root logger to DEBUG
        # so that it ticks on every record: every debug call of aiokafka and Faust then builds a
        # LogRecord (a tenth of the worker's time in the benchmark). A service needs no spinner.
        faust_worker.spinner = None
        faust_worker.execute_from_commandline()
