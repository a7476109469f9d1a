"""`qfactory finetune --run RUN --method ppo`: a new, ordinary run holding RUN's sequence model
fine-tuned into a trading policy by PPO (quant_cli.finetune.ppo) on the backtest's own semantics.

The new run copies RUN's split/ (the same rows, the same fitted pipeline: nothing is refit) and
commits its work as the `train` stage, so `backtest`, `bundle`, `predict` and `serve` take it as
they take any trained run: model/ (the same architecture, PPO weights, fit_info.policy), the
val/test scores (positions in [-1, 1]) in predictions.parquet and metrics.json. Its recipe is
RUN's with [finetune] method = "ppo" and a [backtest] that trades the positions as given
(strategy "position", sizing "equal", every bar, no volatility target) — the book the policy was
trained on. The manifest records `finetuned_from` (run id and method).

`walkforward` refits a model per fold from labels and has no PPO step: it refuses a recipe with
a finetune.method (quant_cli.stages.common.check_recipe); compare the two on one split with
benchmarks/ppo_vs_supervised.py.

Leakage: the policy's state is the window ending at t (rows of RUN's panel, features known at t);
rollouts and rewards read the training segment's rows and returns only (purged rows and the
embargo excluded, as for the supervised fit), early stopping the validation segment's, and the
test segment is scored once, at the end.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quant_cli.backtest.engine import run_backtest, with_defaults
from quant_cli.backtest.metrics import market_exposure_note
from quant_cli.backtest.outputs import resolve_periods_per_year
from quant_cli.data import store
from quant_cli.dataset.table import KEYS, Prepared, load_bars, load_split
from quant_cli.errors import RecipeError, RunError
from quant_cli.finetune import ppo
from quant_cli.finetune.env import market
from quant_cli.io import write_json_atomic, write_parquet_atomic
from quant_cli.models.base import Model
from quant_cli.models.registry import load_model
from quant_cli.recipe import Recipe, load_recipe
from quant_cli.report import SILENT, Reporter
from quant_cli.runs.directory import Run, create_run, stage_outputs
from quant_cli.stages import fitting
from quant_cli.stages.common import device_of, pinned_for
from quant_cli.stages.results import TrainResult, as_written
from quant_cli.stages.train import _bar_channels, _segment_metrics

METHODS = ("ppo",)
# [backtest] keys `finetune --set` may change: what the environment charges and limits, not what it trades.
BACKTEST_KEYS = (
    "cost_bps",
    "slippage_bps",
    "min_trade_cost",
    "capital",
    "borrow_bps",
    "max_gross",
    "max_net",
    "max_weight",
    "benchmark",
    "periods_per_year",
    "segment",
)
# What the policy's book is: its positions traded as given, every bar (env.py trades exactly this).
POLICY_BOOK = {"strategy": "position", "sizing": "equal", "rebalance_every": 1, "rebalance": None, "vol_target": None}
SUMMARY_KEYS = ("sharpe", "annual_return", "max_drawdown", "mean_turnover", "exposure", "net_exposure", "beta")


def finetune_existing(
    run: Run,
    method: str,
    data_dir: Path,
    runs_dir: Path,
    overrides: list[str] | None = None,
    reporter: Reporter = SILENT,
) -> TrainResult:
    if method not in METHODS:
        raise RecipeError(f"--method {method!r} is not a fine-tuning method; allowed: {', '.join(map(repr, METHODS))}")
    run.require_stage("train", f"train it first with `qfactory train --run {run.id}`")
    source = run.recipe()
    model = load_model(run.path / "model")
    check_finetunable(model, run)
    recipe = finetuned_recipe(run, source, overrides or [], reporter)
    snapshot = pinned_for(run, source, data_dir)
    prepared = load_split(run.path / "split", source, snapshot)
    with create_run(runs_dir, recipe) as new:
        _copy_split(run, new)
        metrics = _finetune_stage(new, run, recipe, model, prepared, snapshot, reporter)
    return TrainResult(new, metrics)


def finetuned_recipe(run: Run, source: Recipe, overrides: list[str], reporter: Reporter = SILENT) -> Recipe:
    """RUN's recipe with the `--set` overrides (finetune.* and the [backtest] costs and limits
    only: the model, features and split are RUN's), finetune.method = "ppo" and the policy's book."""
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        section, _, name = key.partition(".")
        if not ((section == "finetune" and name != "method") or (section == "backtest" and name in BACKTEST_KEYS)):
            raise RecipeError(
                f"finetune --set {key}: only finetune.* keys and backtest.{{{', '.join(BACKTEST_KEYS)}}} can change; "
                f"the model, features and split are run {run.id}'s"
            )
    if source["finetune"]["method"] != "none":
        raise RunError(
            f"run {run.id} is already a {source['finetune']['method']} fine-tune"
            f" of {run.manifest().get('finetuned_from', {}).get('run', 'another run')}; fine-tune that run instead"
        )
    recipe = load_recipe(run.path / "recipe.toml", overrides)
    recipe["finetune"]["method"] = "ppo"
    changed = {k: v for k, v in POLICY_BOOK.items() if recipe["backtest"].get(k) != v}
    recipe["backtest"].update(POLICY_BOOK)
    if changed:
        reporter.notice(
            "finetune: the policy's positions are traded as given, so the run's [backtest] becomes "
            + ", ".join(f"{k} = {v!r}" for k, v in changed.items())
        )
    return recipe


def check_finetunable(model: Model, run: Run) -> None:
    """One line refusing a model PPO cannot start from."""
    from quant_cli.models.sequence import SequenceModel
    from quant_cli.models.torch.heads import Head

    if not isinstance(model, SequenceModel):
        raise RecipeError(
            f"run {run.id}'s model {model.name!r} is not a torch sequence model; PPO fine-tunes the network of one "
            "(e.g. lstm, gru, tcn, transformer): train one first, e.g. --set model.name=lstm"
        )
    if model.cross_section:  # PPO forwards each symbol's windows alone, outside the timestamp's cross-section
        raise RecipeError(
            f"run {run.id}'s model {model.name!r} scores each symbol within its timestamp's cross-section "
            "(flag cross_section), but PPO trades each symbol's windows alone; fine-tune a per-symbol model "
            "(e.g. lstm, gru, tcn, transformer)"
        )
    if model.is_classifier or model.output == "path":
        what = "a classifier" if model.is_classifier else "a path forecaster"
        raise RecipeError(
            f"run {run.id}'s model {model.name!r} is {what}; PPO starts from a one-score regression model's output "
            "(model.task = 'regression'; not a path model such as nbeats)"
        )
    if not isinstance(getattr(model.net_, "head", None), Head):
        raise RecipeError(
            f"run {run.id}'s model {model.name!r} has no separate output head for the policy and value heads "
            "to read; use another architecture (e.g. lstm, gru, tcn, transformer)"
        )


def _copy_split(run: Run, new: Run) -> None:
    """RUN's split/ and the manifest entries that describe it (dataset version, fingerprints, adjustment)."""
    shutil.copytree(run.path / "split", new.path / "split")
    manifest = run.manifest()
    new.update_manifest(
        **{k: manifest[k] for k in ("dataset", "fingerprints", "adjust") if k in manifest},
        stages={"split": manifest["stages"]["split"]},
        finetuned_from={"run": run.id, "method": "ppo"},
    )


def _finetune_stage(
    new: Run,
    run: Run,
    recipe: Recipe,
    model: Model,
    prepared: Prepared,
    snapshot: store.Snapshot,
    reporter: Reporter,
) -> dict[str, Any]:
    """PPO on the training segment, the kept policy saved as the run's model, its val/test scores
    and metrics: the run's `train` stage (what backtest and bundle require)."""
    cfg = ppo.PPOConfig.from_section(recipe["finetune"])
    with new.stage("train") as info:
        started = time.perf_counter()
        device = device_of(recipe, reporter)
        model.device_ = device
        channels = _bar_channels(model, recipe, prepared, snapshot)
        inputs = fitting.segment_inputs(model, prepared, ("train", "val", "test"), channels)
        bars = prepared.pipeline.adjustment.apply(load_bars(recipe, snapshot))
        backtest = with_defaults(recipe["backtest"])
        ppy, _ = resolve_periods_per_year(
            backtest, bars, recipe["data"]["frequency"] or snapshot.manifest.get("frequency")
        )
        train, _ = _segment(model, inputs["train"], bars, backtest, ppy)
        val_samples, val_rows = _samples_of(model, inputs["val"])
        if len(train.samples) == 0 or len(val_samples) == 0:
            raise RunError(
                f"run {run.id} has no {'training' if len(train.samples) == 0 else 'validation'} rows with a full "
                "window; PPO trades the training segment and stops early on the validation one"
            )

        def validate(positions: np.ndarray) -> dict[str, Any]:
            signal = val_rows.with_columns(score=pl.Series(positions))
            return run_backtest(signal, bars, backtest, ppy).summary

        from quant_cli.models.torch.loop import reproducible

        with reproducible(model.seed, device, model.threads):
            result = ppo.finetune(
                model.net_, train, validate, val_samples, cfg, seed=model.seed, device=device, reporter=reporter
            )
        model.net_ = result.net.to("cpu")
        model.device_ = "cpu"
        model.policy_ = {
            "method": "ppo",
            "from_run": run.id,
            "best_update": result.best_update,
            "score": "tanh(output)",
        }
        with stage_outputs(new, "model") as folder:
            model.save(folder)
        write_json_atomic(new.path / "finetune.json", {"config": ppo.config_json(cfg), "history": result.history})
        predictions = fitting.predict_segments(model, inputs)
        write_parquet_atomic(new.path / "predictions.parquet", predictions)
        metrics = _metrics(
            model, run, cfg, result, predictions, bars, backtest, ppy, prepared, time.perf_counter() - started
        )
        write_json_atomic(new.path / "metrics.json", metrics)
        info.update(model=model.name, method="ppo", device=device, seconds_fit=metrics["train"]["seconds"])
    _report(metrics["finetune"], reporter)
    return as_written(metrics)


def _samples_of(model: Model, part: tuple[pl.DataFrame, Any]):
    """(the scorable windows of a segment, their rows: symbol, ts in the same order)."""
    rows, X = part
    samples, mask = model.windows(X)
    return samples, rows.filter(pl.Series(mask)).select(KEYS)


def _segment(model: Model, part, bars: pl.DataFrame, cfg: dict[str, Any], ppy: float):
    samples, rows = _samples_of(model, part)
    return ppo.Segment(samples, market(rows, bars, cfg, ppy)), rows


def _metrics(model, run, cfg, result, predictions, bars, backtest, ppy, prepared, seconds) -> dict[str, Any]:
    """metrics.json: val/test prediction metrics of the positions, the source's train facts, and the
    finetune block — the kept policy's validation backtest with its net exposure and beta beside its
    Sharpe (a policy that learned to hold the market shows here, and in `mostly_market`)."""
    metrics = _segment_metrics(predictions)
    val = predictions.filter(pl.col("segment") == "val").select(*KEYS, "score")
    summary = run_backtest(val, bars, backtest, ppy).summary
    train = prepared.segment("train")
    metrics["train"] = {
        "seconds": round(seconds, 3),
        "rows": train.height,
        "symbols": train["symbol"].n_unique(),
        "model": model.name,
        **model.fit_info(),
    }
    metrics["finetune"] = {
        "method": "ppo",
        "from_run": run.id,
        "updates_run": len(result.history) - 1,
        "best_update": result.best_update,
        "reward": cfg.reward,
        "val": {
            **{k: summary.get(k) for k in SUMMARY_KEYS},
            "mostly_market": summary.get("mostly_market"),
            "note": market_exposure_note(summary),
        },
        "supervised_val_sharpe": result.history[0]["val_sharpe"],
    }
    return metrics


def _report(block: dict[str, Any], reporter: Reporter) -> None:
    val = block["val"]
    reporter.info(
        f"finetune: ppo kept update {block['best_update']} of {block['updates_run']}; val sharpe "
        f"{_fmt(val['sharpe'])} (supervised {_fmt(block['supervised_val_sharpe'])}), net exposure "
        f"{_fmt(val['net_exposure'])} of gross {_fmt(val['exposure'])}, beta {_fmt(val['beta'])}"
        + (f"; {val['note']}" if val.get("note") else "")
    )


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) and np.isfinite(value) else "n/a"
