"""The small tune study both tune test files run: its recipe and ingested panel."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from quant_cli.data.store import write_store
from quant_cli.data.synthetic import generate

TEST_START = "2016-01-04"
RECIPE = f"""
[run]
name = "tn"
seed = 3
[data]
dataset = "p"
[label]
horizon = 2
[split]
val_start = "2015-09-01"
test_start = "{TEST_START}"
[model]
name = "lightgbm"
[model.params]
n_estimators = 40
min_data_in_leaf = 20
[train]
early_stopping = 0
threads = 1
[tune]
startup_trials = 2
report_every = 10
[tune.space]
"model.params.num_leaves" = {{ int = [4, 64], log = true }}
"model.params.learning_rate" = {{ float = [0.01, 0.3], log = true }}
"""


def bars() -> pl.DataFrame:
    return generate(symbols=6, bars=300, seed=1)


def write_recipe(tmp_path: Path) -> Path:
    write_store(tmp_path / "data", "p", bars(), "test")
    path = tmp_path / "tune.toml"
    path.write_text(RECIPE, encoding="utf-8")
    return path


def read_json_line(text: str) -> dict:
    """The last line of a command's stdout (its --json result) as a dict."""
    return json.loads(text.strip().splitlines()[-1])
