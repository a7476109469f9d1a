"""Every recipe key, its type, its default and what it means — the one place defaults live.

`qfactory recipe defaults` prints this as a commented TOML file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Key:
    """One recipe key. `kind` is one of: str, int, float, bool, list[str], list[int], table."""

    kind: str
    default: Any
    doc: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    nullable: bool = False


# A section maps key names to `Key` or to a nested section (dict). A `table` Key holds free-form
# parameters that a later stage validates (e.g. model.params against the model's own parameters).
SCHEMA: dict[str, dict[str, Any]] = {
    "run": {
        "name": Key("str", "experiment", "Run name; the run directory is <runs_dir>/<name>-<UTC time>-<4 hex>."),
        "seed": Key("int", 42, "Seed for every random generator (synthetic data, models)."),
        "runs_dir": Key("str", None, "Where runs live (after --runs-dir and QFACTORY_RUNS_DIR).", nullable=True),
    },
    "data": {
        "dataset": Key("str", None, "Name of the dataset in the store.", nullable=True),
        "data_dir": Key("str", None, "Where the data store lives (after --data-dir and QFACTORY_DATA_DIR).", nullable=True),
        "source": Key("str", None, "If set, `qfactory run` (re)ingests from it: 'synthetic', a file, a glob, a directory or a .sqlite file.", nullable=True),
        "layout": Key("str", "auto", "Source layout.", choices=("auto", "long", "per_symbol", "wide")),
        "format": Key("str", "auto", "Source file format (auto: from the extension).", choices=("auto", "csv", "parquet", "sqlite")),
        "delimiter": Key("str", ",", "CSV field delimiter."),
        "query": Key("str", None, "SQL query for a SQLite source (default: the assets/series schema).", nullable=True),
        "timezone": Key("str", "UTC", "Time zone of naive timestamps in the source; everything is stored in UTC."),
        "symbols": Key("list[str]", [], "Restrict to these symbols (empty: all)."),
        "start": Key("str", None, "First timestamp used (ISO date or datetime, inclusive).", nullable=True),
        "end": Key("str", None, "Last timestamp used (ISO date or datetime, inclusive).", nullable=True),
        "frequency": Key("str", None, "Bar frequency, e.g. '1d', '1h', '5m' (default: inferred at ingest).", nullable=True),
        "synthetic": {
            "symbols": Key("int", 20, "Number of synthetic symbols.", minimum=1, maximum=100_000),
            "bars": Key("int", 1500, "Bars per symbol.", minimum=10),
            "frequency": Key("str", "1d", "Bar frequency of the synthetic panel ('1d' uses business days)."),
            "start": Key("str", "2015-01-02", "First synthetic timestamp."),
            "seed": Key("int", None, "Seed of the generator (default: run.seed).", nullable=True),
            "signal": Key("float", 0.2, "Strength of the planted predictable drift, as a share of daily volatility (0 = none).", minimum=0.0, maximum=1.0),
        },
    },
    "features": {
        "sets": Key("list[str]", ["core"], "Feature sets to build (see `qfactory features ls-specs`)."),
        "include": Key("list[str]", [], "Extra features or tags to include."),
        "exclude": Key("list[str]", [], "Features or tags to drop."),
        "windows": Key("list[int]", [5, 10, 20, 60], "Windows for windowed features, in bars."),
    },
    "label": {
        "kind": Key("str", "forward_return", "Label kind.", choices=("forward_return",)),
        "horizon": Key("int", 1, "Label horizon in bars, measured from the execution price.", minimum=1),
        "log": Key("bool", False, "Log return instead of simple return."),
    },
    "split": {
        "method": Key("str", "chronological", "Split method.", choices=("chronological",)),
        "train": Key("float", 0.6, "Share of timestamps in the training segment.", minimum=0.05, maximum=0.95),
        "val": Key("float", 0.2, "Share of timestamps in the validation segment.", minimum=0.0, maximum=0.9),
        "val_start": Key("str", None, "Explicit first validation timestamp (overrides the fractions).", nullable=True),
        "test_start": Key("str", None, "Explicit first test timestamp (overrides the fractions).", nullable=True),
        "purge": Key("bool", True, "Drop rows whose label interval [t, t1] reaches into the next segment."),
        "embargo": Key("int", None, "Bars dropped after each boundary (default: the label horizon).", minimum=0, nullable=True),
    },
    "preprocess": {
        "scaler": Key("str", "zscore", "Scaler fit on training rows only.", choices=("zscore", "none")),
        "fill": Key("str", "zero", "What to do with missing feature values after scaling.", choices=("zero", "drop", "none")),
    },
    "model": {
        "name": Key("str", "lightgbm", "Registered model name (`qfactory train --list-models`)."),
        "task": Key("str", "regression", "Learning task.", choices=("regression",)),
        "params": Key("table", {}, "Model parameters, validated against the model's declared parameters."),
    },
    "train": {
        "early_stopping": Key("int", 50, "Stop after this many rounds without validation improvement (0: off).", minimum=0),
        "threads": Key("int", 0, "Worker threads for the model (0: all cores).", minimum=0),
    },
    "backtest": {
        "strategy": Key("str", "long_short", "long_short: long the top, short the bottom quantile of scores at each bar; sign: hold sign(score) per symbol.", choices=("long_short", "sign")),
        "quantile": Key("float", 0.2, "Share of symbols held long (and short) by long_short.", minimum=0.01, maximum=0.5),
        "cost_bps": Key("float", 5.0, "Cost per unit of turnover, in basis points (commission + half-spread + slippage).", minimum=0.0),
        "execution": Key("str", "next_close", "Fill price of a decision made at the close of bar t.", choices=("next_open", "next_close")),
        "segment": Key("str", "test", "Which predictions are traded.", choices=("val", "test")),
    },
    "walkforward": {},
    "serve": {
        "host": Key("str", "127.0.0.1", "Address the server binds to."),
        "port": Key("int", 8000, "Port the server listens on.", minimum=1, maximum=65535),
    },
}

TOP_LEVEL_KEYS = ("extends",)
