"""`qfactory data`: list datasets and their versions, vacuum old versions, convert old stores."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from quant_cli.cli import console
from quant_cli.cli.common import DataDirOpt, DebugOpt, QuietOpt, RunsDirOpt, cli_errors
from quant_cli.data import catalog
from quant_cli.runs.directory import data_home, runs_home

app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Datasets in the data store and their table versions.\n\nExample: qfactory data show daily",
)

DatasetArg = Annotated[str, typer.Argument(help="Dataset name, as `qfactory data ls` lists it.", show_default=False)]
JsonListOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@app.command("ls")
def ls(
    data_dir: DataDirOpt = None, as_json: JsonListOpt = False, quiet: QuietOpt = False, debug: DebugOpt = False
) -> None:
    """List datasets: latest version, rows, symbols, date range, last update, source.

    Example: qfactory data ls --json
    """
    with cli_errors(quiet, debug):
        rows = catalog.list_datasets(data_home(data_dir, None))
    if not rows and not as_json:
        console.info("no datasets yet; create one with `qfactory ingest --source ... --dataset NAME`")
    columns = ("dataset", "version", "rows", "symbols", "start", "end", "updated", "source")
    typer.echo(json.dumps(rows, sort_keys=True) if as_json else console.table([_short(r) for r in rows], columns))


@app.command("show")
def show(
    dataset: DatasetArg,
    data_dir: DataDirOpt = None,
    as_json: JsonListOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """List a dataset's versions: version, when, operation (replace/append), rows, symbols, date range, source.

    A version whose files were vacuumed is marked unavailable; runs pinned to it cannot continue.

    Example: qfactory data show daily
    """
    with cli_errors(quiet, debug):
        rows = catalog.dataset_versions(data_home(data_dir, None), dataset)
    if as_json:
        typer.echo(json.dumps(rows, sort_keys=True))
        return
    shown = [{**_short(r), "available": "yes" if r["available"] else "vacuumed"} for r in rows]
    typer.echo(
        console.table(shown, ("version", "when", "operation", "rows", "symbols", "start", "end", "available", "source"))
    )


@app.command("vacuum")
def vacuum(
    dataset: DatasetArg,
    keep: Annotated[
        int, typer.Option("--keep", help="Keep the newest N versions (plus every version a run references).")
    ] = 1,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be removed.")] = False,
    data_dir: DataDirOpt = None,
    runs_dir: RunsDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object instead of a summary.")] = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Remove the files of old versions that no run references (and leftovers of killed writes).

    Runs are found in --runs-dir (their manifest.json records the dataset version they pinned).

    Example: qfactory data vacuum daily --keep 3 --runs-dir runs
    """
    with cli_errors(quiet, debug):
        result = catalog.vacuum(
            data_home(data_dir, None), dataset, keep, runs_home(runs_dir, None), dry_run, console.REPORTER
        )
    if as_json:
        typer.echo(json.dumps(result, sort_keys=True))
        return
    verb = "would remove" if dry_run else "removed"
    typer.echo(
        f"{verb} {result['removed_files']} file(s), {result['removed_bytes']:,} "
        f"bytes; kept versions {result['kept_versions']}"
        f" (referenced by runs: {result['referenced_by_runs'] or 'none'})"
    )


@app.command("convert")
def convert(
    dataset: DatasetArg,
    data_dir: DataDirOpt = None,
    as_json: JsonListOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Convert a dataset written in the old parquet layout into a Delta table (version 0), in place.

    Example: qfactory data convert daily
    """
    with cli_errors(quiet, debug):
        result = catalog.convert(data_home(data_dir, None), dataset, console.REPORTER)
    typer.echo(
        json.dumps(result, sort_keys=True)
        if as_json
        else f"dataset {dataset!r}: version {result['version']}, {result['rows']:,} rows"
    )


def _short(row: dict[str, Any]) -> dict[str, Any]:
    """Dates read better without a midnight-UTC time."""
    return {k: v.removesuffix("T00:00:00+00:00") if isinstance(v, str) else v for k, v in row.items()}
