"""``haochaping api`` and ``haochaping token``."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("api")
    def run_api(
        ctx: typer.Context,
        host: str = typer.Option(None, help="Default: api.host"),
        port: int = typer.Option(None, help="Default: api.port"),
    ) -> None:
        """Serve the supervisors' API and the live board (/board)."""
        import uvicorn

        from api.app import create_app

        settings = ctx.obj
        uvicorn.run(
            create_app(settings),
            host=host or settings.api.host,
            port=port or settings.api.port,
            log_level="info",
            access_log=False,
        )

    @app.command("token")
    def token(
        ctx: typer.Context,
        role: str = typer.Option(..., help="supervisor, unit_officer or auditor"),
        unit: str = typer.Option(None, help="统一社会信用代码 of the unit (unit officers only)"),
        sub: str = typer.Option("local", help="Who the token is for"),
        ttl_minutes: int = typer.Option(None, help="Default: api.token_ttl_minutes"),
    ) -> None:
        """Print a signed token for local use (e.g. /board#token=<token>)."""
        from api.auth import mint_token
        from haochaping.domain.records import Role

        try:
            typer.echo(
                mint_token(ctx.obj.api, role=Role(role), sub=sub, unit_code=unit, ttl_minutes=ttl_minutes)
            )
        except ValueError as exc:
            typer.echo(f"cannot make the token: {exc}", err=True)
            raise typer.Exit(2) from exc
