"""The ``haochaping`` command.

Commands of the parts (``ingest``, ``worker``, ``sink``, ``api``, ...) are registered by each package's
``cli`` module through ``register(app)``, so this file stays the composition root and nothing else.
Each command reads the settings once, from ``ctx.obj``.
"""

from __future__ import annotations

import importlib
import json
import sys

import typer

from haochaping.settings import Settings

app = typer.Typer(
    name="haochaping",
    help="Real-time pipeline for 政务服务好差评: ratings in, triaged tickets and live satisfaction out.",
    no_args_is_help=True,
    add_completion=False,
)

_PART_CLIS = (
    "haochaping.stack.cli",
    "ingest.cli",
    "streams.cli",
    "sinks.cli",
    "api.cli",
    "haochaping.simulator.cli",
)


@app.callback()
def _main(ctx: typer.Context) -> None:
    ctx.obj = Settings()


@app.command()
def schema(
    name: str = typer.Argument(
        "all", help="review, workorder, workorder-callback, or all", show_default=True
    ),
) -> None:
    """Print the JSON Schema of the event contract (what a sender implements against)."""
    from haochaping.domain.contract import CONTRACTS, json_schema

    if name == "all":
        out: object = {n: json_schema(n) for n in CONTRACTS}
    elif name in CONTRACTS:
        out = json_schema(name)
    else:
        typer.echo(f"unknown contract {name!r}; choose one of: all, {', '.join(CONTRACTS)}", err=True)
        raise typer.Exit(2)
    json.dump(out, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")


@app.command()
def topics(ctx: typer.Context) -> None:
    """Create the Kafka topics that are missing, with the configured partition count."""
    from haochaping.topics import ensure_topics

    settings: Settings = ctx.obj
    created = ensure_topics(settings.kafka)
    typer.echo(f"created {len(created)} topic(s): {', '.join(created) or '-'}")


def _register_parts() -> None:
    for module_name in _PART_CLIS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and (module_name + ".").startswith(exc.name + "."):  # the part has no commands yet
                continue
            raise
        module.register(app)


_register_parts()

if __name__ == "__main__":
    app()
