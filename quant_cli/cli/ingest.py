"""`qfactory ingest`: raw bars (CSV, parquet, SQLite, synthetic) into the canonical store."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from quant_cli.cli import console
from quant_cli.cli.common import DataDirOpt, DebugOpt, JsonOpt, OptionalRecipeOpt, QuietOpt, SetOpt, cli_errors, emit
from quant_cli.data import store
from quant_cli.data.ingest import ingest as run_ingest
from quant_cli.data.ingest import request_from_recipe, with_overrides
from quant_cli.recipe import load_recipe
from quant_cli.runs.directory import data_home

_SYN = "Synthetic source"


def _opt(*names: str, help: str, panel: str | None = None) -> Any:  # noqa: A002 - mirrors typer's name
    return typer.Option(*names, help=help, show_default=False, rich_help_panel=panel)


SourceOpt = Annotated[
    str | None,
    _opt(
        "--source", "-s", help="'synthetic', a CSV/parquet file, a directory, a glob ('raw/*.csv') or a .sqlite file."
    ),
]
DatasetOpt = Annotated[
    str | None, _opt("--dataset", "-d", help="Dataset name in the store (else the recipe's data.dataset).")
]
LayoutOpt = Annotated[
    str | None,
    _opt(
        "--layout",
        help="auto | long (a symbol column) | per_symbol (symbol = file name) | wide "
        "(date + one close column per symbol). Default: auto.",
    ),
]
FormatOpt = Annotated[
    str | None, _opt("--format", help="auto | csv | parquet | sqlite. Default: from the file extension.")
]
DelimiterOpt = Annotated[str | None, _opt("--delimiter", help="CSV field delimiter, e.g. ';' or '\\t'. Default: ','.")]
QueryOpt = Annotated[
    str | None, _opt("--query", help="SQL SELECT for a SQLite source (default: the assets/series tables).")
]
TimezoneOpt = Annotated[
    str | None,
    _opt("--timezone", help="Time zone of naive timestamps in the source, e.g. America/New_York. Default: UTC."),
]
ModeOpt = Annotated[str, typer.Option("--mode", help="replace the dataset, or append to it.")]
OnDuplicateOpt = Annotated[
    str,
    typer.Option(
        "--on-duplicate", help="append: overlapping (symbol, ts) bars are an 'error', or 'keep-last' (new rows win)."
    ),
]
FrequencyOpt = Annotated[
    str | None,
    _opt("--frequency", help="Bar frequency, e.g. 1d, 1h, 5m (synthetic: generated; files: declared, else inferred)."),
]
SymbolsOpt = Annotated[int | None, _opt("--symbols", help="Number of symbols. Default: 20.", panel=_SYN)]
BarsOpt = Annotated[int | None, _opt("--bars", help="Bars per symbol. Default: 1500.", panel=_SYN)]
SeedOpt = Annotated[int | None, _opt("--seed", help="Generator seed. Default: run.seed (42).", panel=_SYN)]
StartOpt = Annotated[str | None, _opt("--start", help="First timestamp. Default: 2015-01-02.", panel=_SYN)]
SignalOpt = Annotated[
    float | None,
    _opt("--signal", help="Strength of the planted predictable drift (0 = none). Default: 0.2.", panel=_SYN),
]


def ingest(
    source: SourceOpt = None,
    dataset: DatasetOpt = None,
    recipe: OptionalRecipeOpt = None,
    overrides: SetOpt = None,
    layout: LayoutOpt = None,
    format_: FormatOpt = None,
    delimiter: DelimiterOpt = None,
    query: QueryOpt = None,
    timezone: TimezoneOpt = None,
    mode: ModeOpt = "replace",
    on_duplicate: OnDuplicateOpt = "error",
    frequency: FrequencyOpt = None,
    symbols: SymbolsOpt = None,
    bars: BarsOpt = None,
    seed: SeedOpt = None,
    start: StartOpt = None,
    signal: SignalOpt = None,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Read raw bars into the data store as canonical, validated bars (prints the dataset directory).

    Bad rows are rejected with the file, line and column; the dataset stays at its version.
    Each ingest is one commit (a new table version) of the dataset's Delta table; concurrent
    appends wait for each other. A dataset in the old parquet layout is converted first.
    Options not given come from the recipe's [data] section, if --recipe is passed.

    Example: qfactory ingest --source prices.csv --dataset daily

    Example: qfactory ingest --source synthetic --dataset demo --symbols 10 --bars 500 --seed 7
    """
    with cli_errors(quiet, debug):
        loaded = load_recipe(recipe, overrides)
        request = with_overrides(
            request_from_recipe(loaded, mode=mode),
            source=source,
            dataset=dataset,
            layout=layout,
            format=format_,
            delimiter=delimiter,
            query=query,
            timezone=timezone,
            on_duplicate=on_duplicate,
            frequency=frequency,
            symbols=symbols,
            bars=bars,
            seed=seed,
            start=start,
            signal=signal,
        )
        home = data_home(data_dir, loaded)
        with console.working(f"ingest: reading and validating into dataset {request.dataset!r}"):
            manifest = run_ingest(request, home, console.REPORTER)
    path = store.dataset_dir(home, manifest["dataset"])
    span = f"{_short(manifest['start'])} to {_short(manifest['end'])}"
    console.info(
        f"ingested {manifest['rows']:,} rows x {len(manifest['symbols'])} "
        f"symbols, {span} ({manifest['frequency']}) into {path} "
        f"(version {manifest['table_version']})"
    )
    payload = {key: manifest[key] for key in ("dataset", "rows", "start", "end", "frequency", "content_hash")}
    payload["version"] = manifest["table_version"]
    emit(path, json_out, {**payload, "symbols": len(manifest["symbols"])})


def _short(iso: str | None) -> str:
    """Daily data reads better as dates: drop a midnight-UTC time."""
    return str(iso).removesuffix("T00:00:00+00:00")
