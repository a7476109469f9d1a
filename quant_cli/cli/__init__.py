"""The `qfactory` command. Each subcommand lives in its own module and only translates."""

from __future__ import annotations

from typing import Annotated

import typer

from quant_cli import __version__
from quant_cli.cli import (
    audit,
    backtest,
    bundle,
    data,
    doctor,
    features,
    finetune,
    ingest,
    predict,
    pretrain,
    profile,
    recipe,
    report,
    run,
    runs,
    serve,
    split,
    train,
    tune,
    walkforward,
)
from quant_cli.cli.common import OneLineUsageErrors

app = typer.Typer(
    name="qfactory",
    cls=OneLineUsageErrors,
    help="From raw market bars to a served model: ingest → features → split → train → backtest.\n\n"
    "Example: qfactory run --recipe recipes/quickstart.toml",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"qfactory {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """qfactory: leakage-safe quant research from the command line.

    Example: qfactory run --recipe recipes/quickstart.toml
    """


app.command("ingest")(ingest.ingest)
app.add_typer(data.app, name="data")
app.add_typer(features.app, name="features")
app.command("split")(split.split)
app.command("train")(train.train)
app.command("pretrain")(pretrain.pretrain)
app.command("finetune")(finetune.finetune)
app.command("backtest")(backtest.backtest)
app.command("report")(report.report)
app.command("audit")(audit.audit)
app.command("tune")(tune.tune)
app.command("walkforward")(walkforward.walkforward)
app.add_typer(bundle.app, name="bundle")
app.command("predict")(predict.predict)
app.command("serve")(serve.serve)
app.command("run")(run.run)
app.add_typer(recipe.app, name="recipe")
app.add_typer(runs.app, name="runs")
app.command("profile")(profile.profile)
app.command("doctor")(doctor.doctor)
