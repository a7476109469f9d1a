"""`qfactory bundle --run RUN` and `qfactory bundle verify B`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from quant_cli import stages
from quant_cli.cli import console
from quant_cli.cli.common import DebugOpt, JsonOpt, Printed, QuietOpt, Shared, cli_errors, emit, stage_command
from quant_cli.errors import QFactoryError

TrustPickleOpt = Annotated[
    bool,
    typer.Option(
        "--trust-pickle", help="Allow pickle-based model files (they run code when loaded); only for bundles you made."
    ),
]

TrustPluginsOpt = Annotated[
    bool,
    typer.Option(
        "--trust-plugins",
        help="Allow a bundle that carries factor plugins (your Python, run when loaded); only for bundles you made.",
    ),
]

app = typer.Typer(
    invoke_without_command=True,
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


RunToBundleOpt = Annotated[
    str | None, typer.Option("--run", help="Run to bundle: a path, run id or 'latest'.", show_default=False)
]
OutOpt = Annotated[
    Path | None, typer.Option("--out", help="Bundle folder to create (default: <run>/bundle/).", show_default=False)
]
ArchiveOpt = Annotated[bool, typer.Option("--archive", help="Also write the bundle as one .tar.gz next to the folder.")]


@app.callback()
@stage_command
def bundle(
    ctx: typer.Context,
    run: RunToBundleOpt = None,
    out: OutOpt = None,
    archive: ArchiveOpt = False,
    trust_pickle: TrustPickleOpt = False,
    *,
    shared: Shared,
) -> Printed | None:
    """Package a trained run as a verified inference bundle: model, fitted pipeline, schemas, example, hashes.

    Prints the bundle path. `qfactory bundle verify B` re-checks one.

    Example: qfactory bundle --run latest --archive
    """
    if ctx.invoked_subcommand is not None:
        return None
    if run is None:
        raise QFactoryError("pass --run RUN (a run path, run id or 'latest'), or use `qfactory bundle verify B`")
    existing = shared.run(run)
    result = stages.bundle_existing(
        existing, shared.data(existing.recipe()), out, archive, trust_pickle, console.REPORTER
    )
    return result.bundle, {"run_id": existing.id}


@app.command("verify")
def verify(
    path: Annotated[Path, typer.Argument(help="Bundle folder or .tar.gz.", show_default=False)],
    trust_pickle: TrustPickleOpt = False,
    trust_plugins: TrustPluginsOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Re-check a bundle's hashes and run its input example against the expected output.

    Example: qfactory bundle verify runs/latest/bundle
    """
    from quant_cli.serve import bundle as bundles

    with cli_errors(quiet, debug):
        result = bundles.verify(path, trust_pickle, trust_plugins)
        console.REPORTER.info(
            f"bundle {result['bundle_id']}: {result['files']} files verified; example of {result['example_rows']} "
            f"row(s) matches (max relative difference {result['max_relative_difference']:.2g})"
        )
    emit(path, json_out, result)
