"""`qfactory predict`: batch scores from a bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from quant_cli.cli import console
from quant_cli.cli.bundle import TrustPickleOpt, TrustPluginsOpt
from quant_cli.cli.common import DataDirOpt, DebugOpt, JsonOpt, QuietOpt, cli_errors, emit
from quant_cli.cli.ingest import DelimiterOpt, FormatOpt, LayoutOpt, QueryOpt, TimezoneOpt
from quant_cli.runs.directory import data_home


def predict(
    bundle: Annotated[Path, typer.Option("--bundle", "-b", help="Bundle folder or .tar.gz.", show_default=False)],
    source: Annotated[
        str,
        typer.Option(
            "--source",
            "-s",
            help="Bars: a CSV/parquet file (or folder, or glob), a .sqlite file, or a dataset name.",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file, .parquet or .csv.", show_default=False)],
    every_bar: Annotated[
        bool, typer.Option("--all", help="Score every bar with enough history, not only each symbol's latest.")
    ] = False,
    layout: LayoutOpt = None,
    format_: FormatOpt = None,
    delimiter: DelimiterOpt = None,
    query: QueryOpt = None,
    timezone: TimezoneOpt = None,
    trust_pickle: TrustPickleOpt = False,
    trust_plugins: TrustPluginsOpt = False,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Score bars with a bundle: symbol, ts, score (and p_<class> for classifiers), latest bar per symbol.

    A file is read as `qfactory ingest` reads it (--layout, --format, --delimiter, --query, --timezone).

    Example: qfactory predict --bundle runs/latest/bundle --source prices.csv --out scores.parquet

    Example: qfactory predict --bundle runs/latest/bundle --source closes.csv --layout wide --out scores.csv
    """
    from quant_cli.serve.predict import predict as run_predict

    with cli_errors(quiet, debug):
        reading = {"layout": layout, "format": format_, "delimiter": delimiter, "query": query, "timezone": timezone}
        result = run_predict(
            bundle, source, out, data_home(data_dir), every_bar, trust_pickle, console.REPORTER, reading, trust_plugins
        )
    emit(out, json_out, result)
