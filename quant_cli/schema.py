"""Every recipe key, its type, its default and what it means — the one place defaults live.

`qfactory recipe defaults` prints this as a commented TOML file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Key:
    """One recipe key. `kind` is one of: str, int, float, bool, int|str, list[str], list[int], table."""

    kind: str
    default: Any
    doc: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    nullable: bool = False
    pattern: str | None = None  # a string value must match this regex in full ...
    pattern_doc: str | None = None  # ... described in words for the error message
    duration: bool = False  # string values (or list items) are durations such as '5d', '12h'
    timestamp: bool = False  # an ISO date or datetime; a bare TOML date is accepted and stored as ISO text
    path: bool = False  # a file or folder path: relative ones are read from the recipe file's folder


# Every integer key has an upper bound: without one a 20-digit value reaches polars or a native
# library and fails there with a traceback. Keys without their own maximum get this one.
INT_MAXIMUM = 1_000_000_000


# Run names become directory names: no path separators, no leading dot, not empty.
RUN_NAME_PATTERN = r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}"
RUN_NAME_DOC = "1 to 100 letters, digits, '.', '_' or '-', not starting with '.'"


# What `qfactory tune` can optimise (quant_cli.tune.objective computes them on train/val only).
TUNE_OBJECTIVES = (
    "val.ic",
    "val.rank_ic",
    "val.icir",
    "val.hit_rate",
    "val.rmse",
    "val.mae",
    "cv.ic_mean",
    "cv.ic_min",
    "backtest.sharpe",
    "backtest.sortino",
    "backtest.annual_return",
)


# Calendar fields a known-future covariate may be (model.known_future).
KNOWN_FUTURE_FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month")


# A section maps key names to `Key` or to a nested section (dict). A `table` Key holds free-form
# parameters that a later stage validates (e.g. model.params against the model's own parameters).
SCHEMA: dict[str, dict[str, Any]] = {
    "run": {
        "name": Key(
            "str",
            "experiment",
            f"Run name ({RUN_NAME_DOC}); the run directory is <runs_dir>/<name>-<UTC time>-<4 hex>.",
            pattern=RUN_NAME_PATTERN,
            pattern_doc=RUN_NAME_DOC,
        ),
        "seed": Key(
            "int", 42, "Seed for every random generator (synthetic data, models).", minimum=0, maximum=2**32 - 1
        ),
        "runs_dir": Key(
            "str",
            None,
            "Where runs live (after --runs-dir and QFACTORY_RUNS_DIR); a relative "
            "path is read from the recipe file's folder.",
            nullable=True,
            path=True,
        ),
    },
    "data": {
        "dataset": Key("str", None, "Name of the dataset in the store.", nullable=True),
        "data_dir": Key(
            "str",
            None,
            "Where the data store lives (after --data-dir and QFACTORY_DATA_DIR); a "
            "relative path is read from the recipe file's folder.",
            nullable=True,
            path=True,
        ),
        "source": Key(
            "str",
            None,
            "If set, `qfactory run` (re)ingests from it: 'synthetic', a file, a "
            "glob, a directory or a .sqlite file; a relative path is read from the "
            "recipe file's folder.",
            nullable=True,
            path=True,
        ),
        "layout": Key("str", "auto", "Source layout.", choices=("auto", "long", "per_symbol", "wide")),
        "format": Key(
            "str",
            "auto",
            "Source file format (auto: from the extension).",
            choices=("auto", "csv", "parquet", "sqlite"),
        ),
        "delimiter": Key("str", ",", "CSV field delimiter."),
        "query": Key("str", None, "SQL query for a SQLite source (default: the assets/series schema).", nullable=True),
        "timezone": Key("str", "UTC", "Time zone of naive timestamps in the source; everything is stored in UTC."),
        "symbols": Key("list[str]", [], "Restrict to these symbols (empty: all)."),
        "start": Key(
            "str", None, "First timestamp used (ISO date or datetime, inclusive).", nullable=True, timestamp=True
        ),
        "end": Key(
            "str", None, "Last timestamp used (ISO date or datetime, inclusive).", nullable=True, timestamp=True
        ),
        "frequency": Key(
            "str", None, "Bar frequency, e.g. '1d', '1h', '5m' (default: inferred at ingest).", nullable=True
        ),
        "adjust": Key(
            "str",
            None,
            "Price adjustment for features, labels and the backtest: split_dividend "
            "scales open/high/low/close by adj_close/close and volume inversely; "
            "none uses raw prices (default: split_dividend when the dataset has adj_close).",
            choices=("none", "split_dividend"),
            nullable=True,
        ),
        "synthetic": {
            "symbols": Key("int", 20, "Number of synthetic symbols.", minimum=1, maximum=100_000),
            "bars": Key("int", 1500, "Bars per symbol.", minimum=10, maximum=10_000_000),
            "frequency": Key("str", "1d", "Bar frequency of the synthetic panel ('1d' uses business days)."),
            "start": Key("str", "2015-01-02", "First synthetic timestamp.", timestamp=True),
            "seed": Key("int", None, "Seed of the generator (default: run.seed).", nullable=True),
            "signal": Key(
                "float",
                0.2,
                "Strength of the planted predictable drift, as a share of daily volatility (0 = none).",
                minimum=0.0,
                maximum=1.0,
            ),
            "sector": Key(
                "bool",
                False,
                "Add a text column `sector` (each symbol's sector block): a static covariate (model.static_columns).",
            ),
        },
    },
    "features": {
        "sets": Key("list[str]", ["core"], "Feature sets to build (see `qfactory features ls-specs`)."),
        "include": Key("list[str]", [], "Extra features or tags to include."),
        "exclude": Key("list[str]", [], "Features or tags to drop."),
        "plugins": Key(
            "list[str]",
            [],
            "Python files of factor functions, each a feature (docs/factors.md); relative to the recipe file. "
            "They run your code: bundles carrying them need --trust-plugins to load.",
            path=True,
        ),
        "windows": Key(
            "list[int]", [5, 10, 20, 60], "Windows for windowed features, in bars.", minimum=1, maximum=100_000
        ),
        "alpha158_windows": Key(
            "list[int]",
            [5, 10, 20, 30, 60],
            "Windows of the alpha158 set's rolling factors (Qlib's), independent of features.windows.",
            minimum=1,
            maximum=100_000,
        ),
        "benchmark": Key(
            "str",
            None,
            "Benchmark symbol of the dataset for cross-asset features (bench_corr_w, bench_beta_w, rel_strength_w).",
            nullable=True,
        ),
        "references": Key(
            "table",
            {},
            "Named groups of reference symbols for every symbol's cross-asset features, e.g. "
            "{ crypto = ['BTC-USD', 'ETH-USD'], dataset = 'refs' } (dataset: another dataset of the data home; "
            "default the recipe's): ref_<group>_<symbol>_{ret,vol,corr,beta}<w> and refgrp_<group>_...<w> "
            "over features.windows (README: Cross-asset references).",
        ),
        "max_staleness": Key(
            "str",
            None,
            "Oldest benchmark or reference bar forward-filled onto a symbol's bar, e.g. '5d' "
            "(default: 5 bars of the data frequency).",
            nullable=True,
            duration=True,
        ),
        "cross_sectional": Key(
            "list[str]",
            [],
            "Per-symbol features to rank and z-score across symbols at each timestamp (cs_rank_<f>, cs_z_<f>).",
        ),
        "timeframes": Key(
            "list[str]",
            [],
            "Coarser bar sizes for the mtf set, e.g. ['1w'] on daily or ['1h', '1d'] on minute bars.",
            duration=True,
        ),
        "expressions": Key(
            "table",
            {},
            'Factor expressions, name = Qlib-style formula, e.g. mom5 = "$close / Ref($close, 5) - 1" '
            "(docs/expressions.md); built per symbol like any feature, after the sets' columns.",
        ),
    },
    "label": {
        "kind": Key(
            "str",
            "forward_return",
            "forward_return (regression), direction (-1/0/1 with a dead zone) or "
            "triple_barrier (-1/0/1 from the first barrier touched).",
            choices=("forward_return", "direction", "triple_barrier"),
        ),
        "horizon": Key(
            "int",
            1,
            "Label horizon in bars, measured from the execution price (the vertical barrier for triple_barrier).",
            minimum=1,
            maximum=100_000,
        ),
        "log": Key("bool", False, "Log return instead of simple return."),
        "vol_scale": Key(
            "bool", False, "Divide forward returns by the EWM volatility known at t (times sqrt(horizon))."
        ),
        "vol_span": Key(
            "int",
            20,
            "Span of the EWM volatility estimate (bars) used by vol_scale and triple_barrier.",
            minimum=2,
            maximum=100_000,
        ),
        "cross_sectional": Key(
            "str",
            "none",
            "Transform forward-return labels across symbols at each timestamp.",
            choices=("none", "rank", "zscore"),
        ),
        "threshold": Key("float", 0.0, "Dead zone of direction labels: |return| <= threshold is class 0.", minimum=0.0),
        "profit_take": Key(
            "float", 1.0, "Upper barrier of triple_barrier, in multiples of EWM volatility (0: none).", minimum=0.0
        ),
        "stop_loss": Key(
            "float", 1.0, "Lower barrier of triple_barrier, in multiples of EWM volatility (0: none).", minimum=0.0
        ),
        "vertical": Key(
            "str",
            "sign",
            "triple_barrier label when only the vertical barrier is reached: sign of the return then, or zero.",
            choices=("sign", "zero"),
        ),
    },
    "split": {
        "method": Key(
            "str",
            "chronological",
            "chronological: train/val/test; purged_kfold and cpcv add "
            "cross-validation folds over the train+val timestamps (the test segment "
            "stays a chronological hold-out).",
            choices=("chronological", "purged_kfold", "cpcv"),
        ),
        "train": Key("float", 0.6, "Share of timestamps in the training segment.", minimum=0.05, maximum=0.95),
        "val": Key("float", 0.2, "Share of timestamps in the validation segment.", minimum=0.0, maximum=0.9),
        "val_start": Key(
            "str", None, "Explicit first validation timestamp (overrides the fractions).", nullable=True, timestamp=True
        ),
        "test_start": Key(
            "str", None, "Explicit first test timestamp (overrides the fractions).", nullable=True, timestamp=True
        ),
        "purge": Key("bool", True, "Drop rows whose label interval [t, t1] reaches into the next segment."),
        "embargo": Key(
            "int|str",
            None,
            "Bars (an integer) or a duration ('5d', '12h') dropped after each "
            "boundary and each test block (default: the label horizon in bars).",
            minimum=0,
            nullable=True,
            duration=True,
        ),
        "folds": Key("int", 5, "purged_kfold: number of folds.", minimum=2, maximum=1_000),
        "groups": Key(
            "int", 6, "cpcv: number of groups N the train+val timestamps are cut into.", minimum=3, maximum=100
        ),
        "test_groups": Key(
            "int",
            2,
            "cpcv: number of test groups k per split (C(N, k) splits, C(N-1, k-1) backtest paths).",
            minimum=1,
            maximum=99,
        ),
        "sample_weight": Key(
            "str",
            "none",
            "Training-row weights: none, or uniqueness (average uniqueness from label concurrency, AFML ch. 4).",
            choices=("none", "uniqueness"),
        ),
        "time_decay": Key(
            "float",
            1.0,
            "Weight of the oldest training row relative to the newest (1: no decay; "
            "0: linear decay to zero), on cumulative uniqueness.",
            minimum=0.0,
            maximum=1.0,
        ),
    },
    "preprocess": {
        "scaler": Key(
            "str",
            "zscore",
            "Scaler fit on training rows only: zscore (mean/std), robust "
            "(median/MAD, clipped), rank_gauss (training quantiles mapped to a "
            "normal) or none.",
            choices=("zscore", "robust", "rank_gauss", "none"),
        ),
        "clip": Key("float", 5.0, "robust: clip scaled values to [-clip, clip].", minimum=0.0),
        "fill": Key(
            "str",
            "zero",
            "Missing feature values: zero (after scaling), median (training median), "
            "drop (rows) or none (leave nulls). Never a backward fill.",
            choices=("zero", "median", "drop", "none"),
        ),
    },
    "model": {
        "name": Key("str", "lightgbm", "Registered model name (`qfactory train --list-models`)."),
        "task": Key(
            "str",
            "regression",
            "Learning task: regression, or classification (needs label.kind direction or triple_barrier).",
            choices=("regression", "classification"),
        ),
        "params": Key("table", {}, "Model parameters, validated against the model's declared parameters."),
        "symbol_encoding": Key(
            "str",
            "none",
            "How a global multi-symbol model sees the symbol: none, one_hot, index "
            "(categorical, boosting) or embedding (torch).",
            choices=("none", "one_hot", "index", "embedding"),
        ),
        "unseen_symbols": Key(
            "str",
            "error",
            "A symbol not seen in training at prediction: error, or neutral (all-zero / missing encoding).",
            choices=("error", "neutral"),
        ),
        # Covariates beside the feature windows, for models whose flags say they take them (refused at load otherwise).
        "static_columns": Key(
            "list[str]",
            [],
            "Static covariates: text columns of the bars constant per symbol "
            "(e.g. ['sector']), for a model with flag static_covariates.",
        ),
        "known_future": Key(
            "list[str]",
            [],
            "Known-future covariates: calendar fields of the bars after t, derived "
            "from the timestamps and the data frequency only (never from future data), for a model "
            "with flag known_future.",
            choices=KNOWN_FUTURE_FIELDS,
        ),
    },
    "train": {
        "device": Key(
            "str",
            "auto",
            "auto, cpu, cuda, cuda:N or mps (--device overrides); cuda unavailable → "
            "warning and CPU unless strict_device.",
        ),
        "strict_device": Key(
            "bool", False, "Fail instead of falling back to CPU when the requested device is unavailable."
        ),
        "early_stopping": Key(
            "int",
            50,
            "Boosting: stop after this many rounds without validation improvement; 0 "
            "turns early stopping off for every model (torch models stop after "
            "train.patience epochs).",
            minimum=0,
        ),
        "threads": Key("int", 0, "Worker threads for the model (0: all cores).", minimum=0),
        # The training loop of every torch model; the same meaning for each. The one source of these keys:
        # quant_cli.models.torch.config.LoopConfig reads its defaults from here.
        "epochs": Key("int", 20, "torch models: passes over the training rows.", minimum=1, maximum=100_000),
        "batch_size": Key(
            "int", 256, "torch models: rows (windows) per optimiser step.", minimum=1, maximum=10_000_000
        ),
        "learning_rate": Key("float", 1e-3, "torch models: AdamW peak learning rate.", minimum=1e-12, maximum=10.0),
        "weight_decay": Key("float", 1e-4, "torch models: AdamW decoupled weight decay.", minimum=0.0, maximum=10.0),
        "schedule": Key(
            "str",
            "cosine",
            "torch models: learning rate after the warm-up: cosine decay to zero, or constant.",
            choices=("cosine", "constant"),
        ),
        "warmup": Key(
            "float",
            0.05,
            "torch models: share of all optimiser steps with a linear learning-rate warm-up.",
            minimum=0.0,
            maximum=1.0,
        ),
        "grad_clip": Key("float", 1.0, "torch models: clip the global gradient norm to this (0: off).", minimum=0.0),
        "patience": Key(
            "int",
            5,
            "torch models: stop after this many epochs without improvement of "
            "train.monitor on the validation rows (0: never).",
            minimum=0,
        ),
        "monitor": Key(
            "str",
            "loss",
            "torch models: what early stopping and the kept best epoch follow: validation loss, or validation IC.",
            choices=("loss", "ic"),
        ),
        "loss": Key(
            "str",
            "mse",
            "torch models (regression): mse, huber, sharpe (maximise mean/std of the "
            "per-timestamp portfolio return of tanh(score)), or pnl (maximise the mean per-timestamp return of "
            "position tanh(score) net of train.pnl_cost_bps x |position change|, minus "
            "train.pnl_drawdown_penalty x max drawdown); classifiers use cross-entropy.",
            choices=("mse", "huber", "sharpe", "pnl"),
        ),
        "pnl_cost_bps": Key(
            "float",
            5.0,
            'torch models, train.loss = "pnl": cost in basis points per unit of '
            "position traded (the previous position comes from the same symbol's window ending one bar "
            "earlier).",
            minimum=0.0,
            maximum=10_000.0,
        ),
        "pnl_drawdown_penalty": Key(
            "float",
            0.0,
            'torch models, train.loss = "pnl": weight of the max drawdown of '
            "the batch's cumulative per-timestamp returns (0: off).",
            minimum=0.0,
            maximum=1_000.0,
        ),
        "precision": Key(
            "str",
            "auto",
            "torch models: autocast of the training forward/backward: auto (bf16 on a CUDA GPU that "
            "supports it, else fp16 with loss scaling on CUDA, else fp32), fp32, bf16 or fp16; the run "
            "records what was used.",
            choices=("auto", "fp32", "bf16", "fp16"),
        ),
        "inference_precision": Key(
            "str",
            "fp32",
            "torch models: precision of scoring (validation, test, predict, serve): fp32, or "
            "auto/bf16/fp16 autocast as for train.precision.",
            choices=("fp32", "auto", "bf16", "fp16"),
        ),
        "compile": Key(
            "bool",
            False,
            "torch models: torch.compile the training forward with dynamic shapes (worth it on a GPU for long fits).",
        ),
        "nproc": Key(
            "int",
            1,
            "torch models: data-parallel processes on this machine (--nproc overrides): gloo on "
            "CPU, nccl on CUDA with one GPU per process; the global batch stays batch_size.",
            minimum=1,
            maximum=1024,
        ),
    },
    "backtest": {
        "strategy": Key(
            "str",
            "long_short",
            "long_short: long the top, short the bottom quantile; long_only: long "
            "the top quantile; top_k: long the top_k (and short the bottom top_k "
            "with top_k_short); threshold: sign(score) where |score| > threshold; "
            "proportional: weights ∝ demeaned score; sign: sign(score) per symbol "
            "(single-asset data); position: the score clipped to [-1, 1] is each symbol's position, "
            "the book's gross split equally over the scored symbols (a fine-tuned policy's scores).",
            choices=("long_short", "long_only", "top_k", "threshold", "proportional", "sign", "position"),
        ),
        "quantile": Key(
            "float",
            0.2,
            "Share of scored symbols held long (and short) by long_short and long_only.",
            minimum=0.01,
            maximum=0.5,
        ),
        "top_k": Key(
            "int", 10, "top_k: number of symbols held long (and short with top_k_short).", minimum=1, maximum=100_000
        ),
        "top_k_short": Key("bool", False, "top_k: also short the bottom top_k symbols (half the gross on each side)."),
        "n_drop": Key(
            "int",
            None,
            "top_k: at most this many holdings replaced per rebalance (Qlib's "
            "TopkDropout hysteresis, cuts turnover); unset: hold the current top k.",
            minimum=0,
            maximum=100_000,
            nullable=True,
        ),
        "threshold": Key("float", 0.0, "threshold: trade a symbol only when |score| is above this.", minimum=0.0),
        "sizing": Key(
            "str",
            "equal",
            "Weights within each side: equal, score (∝ |score − cross-sectional "
            "mean|) or inverse_vol (∝ 1 / trailing volatility of close-to-close "
            "returns known at t).",
            choices=("equal", "score", "inverse_vol"),
        ),
        "vol_window": Key(
            "int",
            20,
            "Bars in the trailing volatility of inverse_vol sizing and vol_target.",
            minimum=2,
            maximum=100_000,
        ),
        "vol_target": Key(
            "float",
            None,
            "Scale the book to this annualised volatility (e.g. 0.10) from its "
            "trailing realised volatility; capped by max_gross.",
            minimum=0.0,
            nullable=True,
        ),
        "max_gross": Key(
            "float", 1.0, "Gross leverage cap Σ|w| (rows above it are scaled down).", minimum=0.001, maximum=100.0
        ),  # 0 would forbid every position
        "max_net": Key(
            "float",
            None,
            "Net exposure cap |Σw| (the larger side is scaled down).",
            minimum=0.0,
            maximum=100.0,
            nullable=True,
        ),
        "max_weight": Key(
            "float",
            None,
            "Cap on any one symbol's |weight| (clipped, not redistributed).",
            minimum=0.001,
            maximum=100.0,
            nullable=True,
        ),
        "rebalance_every": Key(
            "int",
            1,
            "Trade to the target every N bars and let positions drift in between "
            "(match it to label.horizon to trade what the model predicts).",
            minimum=1,
        ),
        "rebalance": Key(
            "str",
            None,
            "Calendar rebalancing on the last bar of each period instead of "
            "rebalance_every: 'D', 'W-FRI' (weeks ending on a weekday MON..SUN), 'M' or 'Q'.",
            nullable=True,
            pattern=r"D|W-(MON|TUE|WED|THU|FRI|SAT|SUN)|M|Q",
            pattern_doc="'D', 'W-MON'..'W-SUN', 'M' or 'Q'",
        ),
        "cost_bps": Key(
            "float", 5.0, "Commission in basis points of traded notional (at the fill price).", minimum=0.0
        ),
        "slippage_bps": Key(
            "float",
            0.0,
            "Slippage in basis points: buys fill that much above, sells below the execution price.",
            minimum=0.0,
        ),
        "min_trade_cost": Key(
            "float", 0.0, "Minimum commission per trade, in currency (against capital × equity).", minimum=0.0
        ),
        "capital": Key(
            "float",
            1_000_000.0,
            "Starting capital in currency (only min_trade_cost needs it; returns are per unit).",
            minimum=1.0,
        ),
        "borrow_bps": Key(
            "float", 0.0, "Short borrow fee in basis points per year of the short notional.", minimum=0.0
        ),
        "benchmark": Key(
            "str",
            None,
            "Symbol for beta, alpha and information ratio (default: the equal-weight universe of scored symbols).",
            nullable=True,
        ),
        "periods_per_year": Key(
            "float",
            None,
            "Annualisation override (default: the bars per year observed in the data, stated in metrics.json).",
            minimum=1.0,
            nullable=True,
        ),
        "execution": Key(
            "str",
            "next_close",
            "Fill price of a decision made at the close of bar t.",
            choices=("next_open", "next_close"),
        ),
        "segment": Key("str", "test", "Which predictions are traded.", choices=("val", "test")),
    },
    # `qfactory finetune --run RUN --method ppo` (quant_cli.finetune): PPO on the backtest's own semantics.
    "finetune": {
        "method": Key(
            "str",
            "none",
            "none, or the method `qfactory finetune --method` applied (written into the fine-tuned run's "
            "recipe; train, walkforward and run refuse a recipe with a method, since they fit from labels only).",
            choices=("none", "ppo"),
        ),
        "updates": Key("int", 20, "PPO: rollouts, each followed by a policy update.", minimum=1, maximum=100_000),
        "steps_per_rollout": Key(
            "int",
            256,
            "PPO: bars of one rollout, a contiguous stretch of the training segment started flat at a random "
            "bar (the whole segment when it is shorter); every symbol trades in it.",
            minimum=2,
            maximum=10_000_000,
        ),
        "epochs": Key("int", 4, "PPO: passes over each rollout's samples.", minimum=1, maximum=1_000),
        "minibatch": Key("int", 256, "PPO: samples (symbol × bar) per optimiser step.", minimum=1, maximum=10_000_000),
        "clip": Key("float", 0.2, "PPO: clip range of the probability ratio.", minimum=0.001, maximum=1.0),
        "gamma": Key("float", 0.99, "PPO: discount of future rewards.", minimum=0.0, maximum=1.0),
        "lam": Key("float", 0.95, "PPO: GAE lambda (0: one-step TD, 1: Monte Carlo).", minimum=0.0, maximum=1.0),
        "entropy": Key("float", 0.001, "PPO: weight of the entropy bonus.", minimum=0.0, maximum=10.0),
        "learning_rate": Key("float", 1e-4, "PPO: AdamW learning rate.", minimum=1e-12, maximum=10.0),
        "grad_clip": Key("float", 0.5, "PPO: clip the global gradient norm to this (0: off).", minimum=0.0),
        "init_std": Key(
            "float",
            0.3,
            "PPO: starting std of the Gaussian the position's pre-tanh value is drawn from (learned after).",
            minimum=0.001,
            maximum=10.0,
        ),
        "reward": Key(
            "str",
            "pnl",
            "PPO reward per symbol and bar: pnl (its net return: position × next-bar return − costs − borrow, "
            "in units of the training returns' std) or sharpe (the differential Sharpe ratio of that stream, "
            "Moody & Saffell 1998).",
            choices=("pnl", "sharpe"),
        ),
        "sharpe_decay": Key(
            "float",
            0.05,
            'PPO, reward = "sharpe": rate of the moving moments of the differential Sharpe ratio.',
            minimum=0.0001,
            maximum=1.0,
        ),
        "risk_penalty": Key(
            "float",
            0.0,
            "PPO: weight of the squared net return subtracted from each reward (mean–variance; 0: off).",
            minimum=0.0,
            maximum=1_000.0,
        ),
        "target_kl": Key(
            "float",
            0.02,
            "PPO: stop an update's epochs once the approximate KL to the rollout's policy passes 1.5 × this (0: off).",
            minimum=0.0,
            maximum=10.0,
        ),
        "patience": Key(
            "int",
            5,
            "PPO: stop after this many updates without a better validation Sharpe of the deterministic "
            "policy (0: never); the best update's weights are kept (update 0: the supervised model).",
            minimum=0,
            maximum=100_000,
        ),
    },
    "walkforward": {
        "mode": Key(
            "str",
            "rolling",
            "rolling: every fold trains on the `train` window just before its test "
            "window; anchored: every fold trains from the first timestamp (the first "
            "fold on `train`).",
            choices=("rolling", "anchored"),
        ),
        "train": Key(
            "int|str",
            252,
            "Training window before each fold's embargo gap: bars (an integer) or a "
            "duration ('365d'); anchored: the first fold's window.",
            minimum=1,
            duration=True,
        ),
        "test": Key(
            "int|str", 63, "Test window each fold scores: bars or a duration ('90d').", minimum=1, duration=True
        ),
        "step": Key(
            "int|str",
            None,
            "How far each fold's test window moves on: bars or a duration, at least "
            "`test` so every timestamp is scored once (default: test).",
            minimum=1,
            nullable=True,
            duration=True,
        ),
        "validation": Key(
            "int|str",
            0,
            "Tail of each training window held out for early stopping, purged and "
            "embargoed like a split's validation segment: bars or a duration (0: "
            "none, the model fits a fixed number of rounds).",
            minimum=0,
            duration=True,
        ),
    },
    # `qfactory pretrain`: self-supervised pretraining of the recipe's sequence model's encoder, through the one
    # training loop (quant_cli.models.torch.pretrain); `train --init RUN` warm-starts from it.
    "pretrain": {
        "objective": Key(
            "str",
            "masked",
            "masked: patches of each window replaced (mask_value), the encoder's per-step states reconstruct "
            "their inputs, loss on the masked steps only; contrastive: TS2Vec-style, two overlapping random "
            "crops with timestamp masking and a hierarchical instance + temporal contrastive loss.",
            choices=("masked", "contrastive"),
        ),
        "epochs": Key("int", 10, "Passes over the pretraining windows.", minimum=1, maximum=100_000),
        "batch_size": Key("int", 256, "Windows per optimiser step.", minimum=2, maximum=10_000_000),
        "learning_rate": Key("float", 1e-3, "AdamW peak learning rate.", minimum=1e-12, maximum=10.0),
        "mask_ratio": Key(
            "float",
            0.4,
            "masked: share of each window's patches masked (at least one); contrastive: probability that a "
            "timestamp of a crop is masked.",
            minimum=0.0,
            maximum=0.95,
        ),
        "patch_len": Key(
            "int", 4, "masked: steps per masked patch (patches end at the window's last step).", minimum=1, maximum=4096
        ),
        "mask_value": Key(
            "str",
            "token",
            "masked: what masked steps hold: a learned mask vector (token) or zeros.",
            choices=("token", "zero"),
        ),
        "crop": Key(
            "float",
            0.5,
            "contrastive: smallest overlap of the two crops, as a share of the window.",
            minimum=0.05,
            maximum=1.0,
        ),
        "temperature": Key(
            "float", 1.0, "contrastive: logits are similarities divided by this (TS2Vec: 1).", minimum=1e-3
        ),
        "instance_weight": Key(
            "float",
            0.5,
            "contrastive: weight of the instance loss; the temporal loss gets 1 minus it (TS2Vec's alpha).",
            minimum=0.0,
            maximum=1.0,
        ),
        "segments": Key(
            "list[str]",
            ["train"],
            "Segments whose windows are pretrained on: train, or train and validation (recorded in the run); "
            "never test.",
            choices=("train", "validation"),
        ),
    },
    "tune": {
        "objective": Key(
            "str",
            "val.rank_ic",
            "What `qfactory tune` optimises, never on the test segment: val.<metric> "
            "(model fit on train, scored on val), cv.<metric> (purged CV over train "
            "+ val; needs split.method purged_kfold or cpcv) or backtest.<metric> "
            "(the backtest of the val scores).",
            choices=TUNE_OBJECTIVES,
        ),
        "direction": Key(
            "str",
            None,
            "maximize or minimize (default: minimize for val.rmse and val.mae, else maximize).",
            choices=("maximize", "minimize"),
            nullable=True,
        ),
        "trials": Key("int", 20, "Trials per `qfactory tune` call (--trials overrides).", minimum=1, maximum=100_000),
        "sampler": Key(
            "str",
            "tpe",
            "Optuna sampler: tpe (Tree-structured Parzen Estimator) or random; "
            "seeded from run.seed and the trial number.",
            choices=("tpe", "random"),
        ),
        "pruner": Key(
            "str",
            "median",
            "median: stop a trial whose intermediate val objective is worse than the "
            "median of completed trials at the same step (LightGBM and XGBoost "
            "rounds, torch epochs); none: never prune.",
            choices=("median", "none"),
        ),
        "startup_trials": Key(
            "int",
            5,
            "Completed trials before the sampler models the space and the pruner prunes (random search until then).",
            minimum=0,
            maximum=100_000,
        ),
        "report_every": Key(
            "int",
            25,
            "Report the val objective to the pruner every N boosting rounds / epochs.",
            minimum=1,
            maximum=1_000_000,
        ),
        "refit": Key(
            "bool",
            True,
            "Refit the best trial as a regular run scored once on test (train + "
            "backtest); false keeps the test segment untouched.",
        ),
        "space": Key(
            "table",
            {},
            "Search space: dotted recipe keys (model.name, model.params.*, train.*) "
            "to { int = [lo, hi] }, { float = [lo, hi], log = true } or { choice = [...] }.",
        ),
    },
    "serve": {
        "host": Key("str", "127.0.0.1", "Address the server binds to."),
        "port": Key("int", 8000, "Port the server listens on.", minimum=1, maximum=65535),
        "max_rows": Key(
            "int", 100_000, "Most bars (or feature rows) one request may carry; more is refused with 413.", minimum=1
        ),
        "max_body_mb": Key("float", 32.0, "Largest request body in MiB; larger is refused with 413.", minimum=0.001),
    },
}

TOP_LEVEL_KEYS = ("extends",)
