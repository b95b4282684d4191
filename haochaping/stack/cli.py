"""``haochaping stack``: the local Apache Kafka broker and ClickHouse endpoint."""

from __future__ import annotations

import enum

import typer


class Action(enum.StrEnum):
    INSTALL = "install"
    UP = "up"
    DOWN = "down"
    STATUS = "status"


def register(app: typer.Typer) -> None:
    @app.command()
    def stack(
        ctx: typer.Context, action: Action = typer.Argument(..., help="install, up, down or status")
    ) -> None:
        """Install, start, stop or show the local Kafka broker and ClickHouse (data under var/)."""
        from haochaping.stack import run_stack_cli

        raise typer.Exit(run_stack_cli(action.value, ctx.obj))
