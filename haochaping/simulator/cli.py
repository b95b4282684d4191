"""``haochaping simulate`` and ``haochaping demo``."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def simulate(
        ctx: typer.Context,
        rate: float = typer.Option(200.0, help="Citizens' actions per second (ratings, calls, SMS replies)."),
        duration: float = typer.Option(60.0, help="Seconds to run; then everything held back is sent."),
        truth: Path | None = typer.Option(
            None, help="Write the ground truth (what ingest took) as JSON lines."
        ),
        seed: int = typer.Option(0, help="Same seed and run id, same city and events."),
        run_id: str | None = typer.Option(
            None, help="Letters and digits that make this run's ids unique (default: from the clock)."
        ),
        ingest_url: str | None = typer.Option(None, help="Base URL of ingest (default: from the settings)."),
        key_id: str = typer.Option(
            "demo-device", help="Sender key id; its secret comes from ingest.sender_keys."
        ),
        concurrency: int = typer.Option(32, help="Requests in flight at most."),
        hour: float | None = typer.Option(
            None, help="Fix the channel mix at this hour of the day (e.g. 10)."
        ),
        day_minutes: float | None = typer.Option(
            None, help="Run a whole day in this many minutes, the rate following the daily curve."
        ),
        city: Path | None = typer.Option(None, help="City file (default: the built-in 示范市)."),
        duplicate: float = typer.Option(0.01, help="Share of ratings sent twice."),
        malformed: float = typer.Option(0.005, help="Share of broken requests."),
        late_sms: float = typer.Option(0.15, help="Share of SMS replies delivered late."),
        offline: float = typer.Option(0.002, help="Chance per device rating that the device goes offline."),
        quiet: bool = typer.Option(False, help="No progress display; one summary line at the end."),
        retry_for: float = typer.Option(
            300.0, help="Seconds a request is retried while ingest or Kafka is down before it is given up."
        ),
    ) -> None:
        """Send a simulated city's ratings, 12345 work orders and SMS replies to ingest, signed."""
        from haochaping.settings import Settings
        from haochaping.simulator.run import SimulationOptions, simulate_blocking

        settings: Settings = ctx.obj
        secret = settings.ingest.sender_keys.get(key_id)
        if secret is None:
            known = ", ".join(sorted(settings.ingest.sender_keys)) or "none"
            typer.echo(
                f"no secret for sender key {key_id!r} in ingest.sender_keys (known: {known}); "
                "pass --key-id or set HAOCHAPING_INGEST__SENDER_KEYS",
                err=True,
            )
            raise typer.Exit(2)
        options = SimulationOptions(
            ingest_url=ingest_url or f"http://{settings.ingest.host}:{settings.ingest.port}",
            key_id=key_id,
            secret=secret.get_secret_value(),
            rate=rate,
            duration=duration,
            truth=truth,
            seed=seed,
            run_id=run_id,
            concurrency=concurrency,
            hour=hour,
            day_minutes=day_minutes,
            city_file=city,
            duplicate=duplicate,
            malformed=malformed,
            late_sms=late_sms,
            offline=offline,
            progress=not quiet,
            retry_for=retry_for,
        )
        try:
            stats = simulate_blocking(options)
        except ValueError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(2) from exc
        if stats.failed or stats.rows_rejected or stats.malformed_taken:
            raise typer.Exit(1)

    @app.command()
    def demo(
        ctx: typer.Context,
        rate: float = typer.Option(300.0, help="The simulated city's actions per second."),
        day_minutes: float = typer.Option(10.0, help="A simulated day lasts this many minutes."),
        workers: int = typer.Option(1, help="Stream worker processes."),
        fresh: bool = typer.Option(False, help="Start from empty Kafka and ClickHouse data."),
    ) -> None:
        """Start Kafka, ClickHouse, ingest, worker, sink, API and the simulator; Ctrl-C stops them all."""
        from haochaping.demo import Demo

        Demo(ctx.obj, rate=rate, day_minutes=day_minutes, workers=workers, fresh=fresh).run()
