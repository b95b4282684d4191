"""``haochaping ingest``: serve the ingest API."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def ingest(
        ctx: typer.Context,
        host: str = typer.Option(None, help="Listen address (default: ingest.host)"),
        port: int = typer.Option(None, help="Listen port (default: ingest.port)"),
        create_topics: bool = typer.Option(True, help="Create missing topics before serving"),
    ) -> None:
        """Serve the ingest API: hall devices, the app, SMS, 12345 and provincial records into Kafka."""
        import uvicorn

        from haochaping.settings import Settings
        from ingest.app import create_app

        settings: Settings = ctx.obj
        if create_topics:
            from haochaping.topics import ensure_topics
            from ingest.invitations import ensure_invitation_topic

            try:
                ensure_topics(settings.kafka, timeout_s=10)
                ensure_invitation_topic(settings, timeout_s=10)
            except Exception as exc:  # ingest still starts and answers 503 until Kafka is there
                typer.echo(
                    f"could not create topics now ({type(exc).__name__}: {exc}); serving anyway", err=True
                )
        import gc
        import sys

        app = create_app(settings)
        # The producer's sender thread and the event loop share the GIL: a shorter switch interval
        # keeps a request from waiting up to 5 ms behind the sender; objects made at start-up are
        # moved out of the collector's way.
        sys.setswitchinterval(0.001)
        gc.freeze()
        uvicorn.run(
            app,
            host=host or settings.ingest.host,
            port=port or settings.ingest.port,
            log_level="info",
            access_log=False,
        )
