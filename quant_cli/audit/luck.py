"""Luck: is the run's test IC better than the same procedure reaches with no signal to find?

The null: refit the run `permutations` times — same recipe, seed, features and fitted pipeline —
with the labels of the kept rows shuffled across symbols within each timestamp (what is left is
the time structure: how many symbols, which dates, the market's common move; what is destroyed is
which symbol earned it). Each null model scores the test rows against their TRUE labels with the
run's own IC metric. p = (1 + #{null IC >= run IC}) / (1 + N), the usual permutation p-value that
never reaches 0. Beside it, the deflated Sharpe ratio of the run's test backtest over the trial
ledger (runs/ledger.py): the permutation test asks whether the signal is real, the deflated Sharpe
whether the best of many tries is.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quant_cli.audit.training import adjusted_bars, refit
from quant_cli.backtest.metrics import prediction_metrics
from quant_cli.data import store
from quant_cli.dataset.table import Prepared
from quant_cli.recipe import Recipe
from quant_cli.report import SILENT, Reporter
from quant_cli.runs.ledger import deflated, deflated_now, ledger
from quant_cli.splits.chronological import EXCLUDED

DEFAULT_PERMUTATIONS = 20
SIGNIFICANCE = 0.05


def shuffled_labels(rows: pl.DataFrame, seed: int) -> pl.DataFrame:
    """`rows` with the labels of kept, labelled rows permuted among the symbols of each timestamp."""
    eligible = pl.col(EXCLUDED).is_null() & pl.col("label").is_not_null()
    indexed = rows.with_row_index("_row")
    part = indexed.filter(eligible).sort("ts", "symbol")
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(part.height), part["ts"].to_physical().to_numpy()))  # random order within each ts
    moved = part.select("_row", pl.Series("_label", part["label"].to_numpy()[order]))
    out = indexed.join(moved, on="_row", how="left", maintain_order="left")
    return out.with_columns(pl.coalesce("_label", "label").alias("label")).drop("_row", "_label")


def held_out_ic(scores: pl.DataFrame) -> float:
    ic = prediction_metrics(scores.filter(pl.col("segment") == "test")).get("ic", math.nan)
    return math.nan if ic is None else float(ic)


def permutation_test(
    recipe: Recipe,
    snapshot: store.Snapshot,
    original: Prepared,
    observed_ic: float,
    permutations: int,
    seed: int,
    reporter: Reporter = SILENT,
) -> dict[str, Any]:
    bars = adjusted_bars(recipe, snapshot, original)
    null: list[float] = []
    for i in reporter.track(
        range(permutations), "audit: permutation test (refits on shuffled labels)", total=permutations
    ):
        shuffled = replace(original, rows=shuffled_labels(original.rows, seed + 1 + i))
        null.append(held_out_ic(refit(recipe, shuffled, bars, original, bars).scores))
    finite = [x for x in null if math.isfinite(x)]
    p_value = (
        (1 + sum(x >= observed_ic for x in finite)) / (1 + len(finite))
        if finite and math.isfinite(observed_ic)
        else math.nan
    )
    return {
        "permutations": permutations,
        "default_permutations": DEFAULT_PERMUTATIONS,
        "reduced": permutations < DEFAULT_PERMUTATIONS,
        "observed_test_ic": observed_ic,
        "null_ics": null,
        "null_mean": float(np.mean(finite)) if finite else math.nan,
        "null_std": float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan,
        "p_value": p_value,
        "significant": bool(math.isfinite(p_value) and p_value <= SIGNIFICANCE),
        "significance": SIGNIFICANCE,
        "min_p_value": 1 / (1 + permutations),
    }


def deflated_sharpe(run_id: str, dataset: str, runs_dir: Path) -> dict[str, Any]:
    """The run's test-backtest trial deflated over the ledger now and at its creation (runs/ledger.py)."""
    trials = ledger(runs_dir, dataset)
    mine = next((t for t in trials if t.run_id == run_id and t.kind == "backtest"), None)
    if mine is None:
        return {
            "available": False,
            "why": f"the run has no test-segment backtest; run `qfactory backtest --run {run_id}`",
        }
    now = deflated_now(trials)[(mine.run_id, mine.kind)]
    return {
        "available": True,
        "sharpe": mine.sharpe,
        "deflated_sharpe": now["deflated_sharpe"],
        "n_trials": now["n_trials"],
        "deflated_sharpe_at_creation": deflated(mine, trials)["deflated_sharpe"],
    }
