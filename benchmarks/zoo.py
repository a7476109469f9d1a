"""Benchmark: every sequence model of the zoo and LightGBM on one split, like Qlib's benchmark table (issue 19 §5).

    .venv/bin/python benchmarks/zoo.py                        # synthetic panel, every sequence model, 3 seeds
    .venv/bin/python benchmarks/zoo.py --quick --models lightgbm,nhits   # a smoke run (1 seed, 1 epoch, tiny panel)
    .venv/bin/python benchmarks/zoo.py --dataset mydata --home ./data   # a dataset already in a data home

One split for all: a synthetic panel with a planted signal (quant_cli.data.synthetic: a slow AR(1) drift
that past returns reveal) is ingested into a temporary data home (or `--dataset NAME` is read from
`--home DIR`), the `core` features are built and split chronologically (60% train, 20% val, 20% test) once,
with a forward_return label of horizon 5 whose rows also carry the path targets of the path models.
Each model then trains in a FRESH worker process (multiprocessing spawn) that loads that stored split and
fits, for each seed, a model built from the model's own recipe (recipes/<model>.toml: its [model] and
[train] sections; the model's defaults where there is none) with `--epochs` over the recipe's epochs, on
CPU with `--threads` threads; the worker's peak RSS (VmHWM) is its own.

Columns: parameters (trainable weights; '-' for LightGBM); train samples/s (training windows x epochs run /
fit seconds, validation included; LightGBM: training rows / fit seconds); inference samples/s (val + test
rows scored / seconds to build their inputs and score them); peak RSS of the worker; val IC, test IC and test
rank IC (cross-sectional, mean ± std over seeds); test Sharpe after 5 bps costs (long-short quintiles,
rebalanced every 5 bars, the recipes' [backtest]), mean ± std over seeds.

Memory: what each worker's fits and scoring add to its RSS (its peak RSS, reset with /proc/self/clear_refs
once the stored split is loaded, minus its RSS then) is compared with the bound 2.5 x the float32 feature
matrix (every row of the split x features x 4 bytes) + model and optimizer state (weights, gradients and
AdamW's two moments: 16 bytes per parameter), and flagged when over. On a small panel the fixed costs of
the first batches dwarf the matrix; the bound is meant for panels where the matrix dominates (raise
--symbols/--bars, and cap the fitted rows with --max-rows to keep the time down).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
MIB = 2**20
HORIZON = 5
BYTES_PER_PARAM = 16  # float32 weights, gradients and AdamW's two moments
COMMON = [  # the one split every model shares
    'features.sets=["core"]',
    'label.kind="forward_return"',
    f"label.horizon={HORIZON}",
    'split.method="chronological"',
    "split.train=0.6",
    "split.val=0.2",
    'preprocess.scaler="zscore"',
    'preprocess.fill="zero"',
    "backtest.rebalance_every=5",
    'backtest.strategy="long_short"',
    "backtest.quantile=0.2",
    "backtest.cost_bps=5.0",
    'backtest.execution="next_close"',
]


def main() -> int:
    args = _parse()
    with tempfile.TemporaryDirectory(prefix="qf-zoo-") as tmp:
        return _benchmark(args, Path(tmp))


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated model names (default: every sequence model and lightgbm)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per model (default 3)")
    parser.add_argument("--epochs", type=int, default=3, help="most epochs of a torch model (its recipe's if fewer)")
    parser.add_argument("--symbols", type=int, default=30, help="synthetic symbols")
    parser.add_argument("--bars", type=int, default=500, help="synthetic bars per symbol (business days)")
    parser.add_argument(
        "--signal", type=float, default=0.2, help="strength of the planted drift (synthetic; its default)"
    )
    parser.add_argument("--dataset", help="benchmark on this dataset of --home instead of the synthetic panel")
    parser.add_argument("--home", type=Path, help="data home holding --dataset (default $QFACTORY_DATA_DIR or ./data)")
    parser.add_argument("--threads", type=int, default=2, help="threads of each fit")
    parser.add_argument(
        "--max-rows",
        type=int,
        default=0,
        help="fit and score at most this many rows of each segment, drawn at random (0: all); the panel still "
        "holds every row, so a large panel's memory is measured without its full training time",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 1 epoch, 8 symbols x 300 bars")
    parser.add_argument("--json", type=Path, help="also write every per-seed number to this JSON file")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.epochs, args.symbols, args.bars = 1, 1, 8, 300
    return args


def _models(names: str | None) -> list[str]:
    from quant_cli.models.registry import all_models, torch_models

    known = all_models()
    chosen = names.split(",") if names else [*sorted(n for n, c in torch_models().items() if c.sequence), "lightgbm"]
    unknown = [n for n in chosen if n not in known]
    if unknown:
        raise SystemExit(f"error: --models: unknown model(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return chosen


# ---- the parent: one split, one worker per model, the tables ------------------------------------------------


def _benchmark(args: argparse.Namespace, tmp: Path) -> int:
    from quant_cli.models.registry import model_class

    names = _models(args.models)
    data_dir, dataset = _data(args, tmp)
    split_model = next((n for n in names if model_class(n).output == "path"), names[0])
    run_dir = _split(data_dir, tmp / "runs", dataset, split_model)
    print(_setting(args, dataset, run_dir, data_dir), flush=True)
    load_before = os.getloadavg()
    results = {}
    failed = {}
    for name in names:
        started = time.perf_counter()
        try:
            results[name] = _in_worker(name, args, run_dir, data_dir)
        except Exception as exc:  # one model's failure is reported, the others still run
            failed[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        print(f"# {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    _score(results, run_dir, data_dir)
    print(_table(results))
    print()
    print(_memory_table(results))
    for name, error in failed.items():
        print(f"FAILED {name}: {error}")
    print(f"\nload average 1 min: {load_before[0]:.1f} at the first fit, {os.getloadavg()[0]:.1f} at the end")
    if args.json:
        args.json.write_text(json.dumps({"models": _as_json(results), "failed": failed}, indent=1))
    return 1 if failed else 0


def _data(args: argparse.Namespace, tmp: Path) -> tuple[Path, str]:
    if args.dataset:
        home = args.home or Path(os.environ.get("QFACTORY_DATA_DIR", "data"))
        return home.resolve(), args.dataset
    from quant_cli.data.store import write_store
    from quant_cli.data.synthetic import generate

    write_store(tmp / "data", "zoo", generate(args.symbols, args.bars, seed=0, signal=args.signal), "synthetic")
    return tmp / "data", "zoo"


def _split(data_dir: Path, runs_dir: Path, dataset: str, model: str) -> Path:
    """The one stored split (with path targets when any model forecasts a path)."""
    from quant_cli import stages
    from quant_cli.recipe import load_recipe

    recipe = load_recipe(None, [f'data.dataset="{dataset}"', 'run.name="zoo"', f'model.name="{model}"', *COMMON])
    run, _ = stages.split_new(recipe, data_dir, runs_dir)
    return run.path


def _setting(args: argparse.Namespace, dataset: str, run_dir: Path, data_dir: Path) -> str:
    import polars as pl

    rows = pl.read_parquet(run_dir / "split" / "rows.parquet")
    counts = {seg: rows.filter(pl.col("segment") == seg).height for seg in ("train", "val", "test")}
    source = (
        f"dataset {dataset!r} of {data_dir}"
        if args.dataset
        else (f"synthetic panel {args.symbols} symbols x {args.bars} daily bars (signal {args.signal})")
    )
    return (
        f"zoo benchmark: {source}; core features, forward_return h={HORIZON}; rows train {counts['train']:,}, "
        f"val {counts['val']:,}, test {counts['test']:,}; {args.seeds} seed(s), at most {args.epochs} epoch(s), "
        f"{args.threads} thread(s), {os.cpu_count()} CPU(s)"
    )


def _in_worker(name: str, args: argparse.Namespace, run_dir: Path, data_dir: Path) -> dict[str, Any]:
    """The model's fits in a fresh process (its peak RSS is its own)."""
    work = (name, list(range(args.seeds)), args.epochs, args.threads, args.max_rows, run_dir, data_dir)
    # an executor, not a Pool: a worker killed (say, out of memory) raises BrokenProcessPool instead of hanging
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_worker, *work).result()


def _score(results: dict[str, dict[str, Any]], run_dir: Path, data_dir: Path) -> None:
    """IC, rank IC and the test Sharpe of each fit's predictions (in the parent: not in the workers' RSS)."""
    import polars as pl

    from quant_cli.backtest.engine import run_backtest
    from quant_cli.backtest.metrics import prediction_metrics
    from quant_cli.backtest.outputs import resolve_periods_per_year
    from quant_cli.dataset.table import load_bars, load_split
    from quant_cli.runs.directory import Run
    from quant_cli.stages.common import pinned_for

    run = Run(run_dir)
    recipe = run.recipe()
    snapshot = pinned_for(run, recipe, data_dir)
    pipeline = load_split(run_dir / "split", recipe, snapshot).pipeline
    bars = pipeline.adjustment.apply(load_bars(recipe, snapshot))
    ppy, _ = resolve_periods_per_year(recipe["backtest"], bars, recipe["data"]["frequency"])
    for result in results.values():
        for fit in result["fits"]:
            predictions = fit.pop("predictions")
            val, test = (predictions.filter(pl.col("segment") == s) for s in ("val", "test"))
            fit["val_ic"] = prediction_metrics(val).get("ic", math.nan)
            scores = prediction_metrics(test)
            fit["test_ic"], fit["test_rank_ic"] = scores.get("ic", math.nan), scores.get("rank_ic", math.nan)
            fit["sharpe"] = run_backtest(test, bars, recipe["backtest"], ppy).summary.get("sharpe", math.nan)


# ---- the worker: load the split, fit each seed, score val and test --------------------------------------------


def _vm(key: str) -> int:
    """VmRSS / VmHWM of this process, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024
    return 0


def _worker(
    name: str, seeds: list[int], epochs: int, threads: int, max_rows: int, run_dir: Path, data_dir: Path
) -> dict[str, Any]:
    import lightgbm  # noqa: F401  (imported before the baseline, like torch: library code is not the model's memory)
    import torch  # noqa: F401

    from quant_cli.dataset.table import load_split
    from quant_cli.models.registry import torch_models
    from quant_cli.runs.directory import Run
    from quant_cli.stages import fitting
    from quant_cli.stages.common import new_model, pinned_for

    torch_models()  # imports every architecture
    imported = _vm("VmRSS")
    run = Run(run_dir)
    split_recipe = run.recipe()
    prepared = load_split(run_dir / "split", split_recipe, pinned_for(run, split_recipe, data_dir))
    parts = {seg: _at_most(prepared.segment(seg), max_rows) for seg in ("train", "val", "test")}
    loaded_peak = _vm("VmHWM")
    # The fits' own peak: VmHWM is reset here (clear_refs 5), after the split's rows are in memory, as they are
    # in the train stage before any model work; the bound is about what fitting and scoring add.
    Path("/proc/self/clear_refs").write_text("5")
    baseline = _vm("VmRSS")
    fits = []
    for seed in seeds:
        recipe = _model_recipe(name, seed, epochs, threads)
        model = new_model(recipe)
        inputs = fitting.model_inputs(model, prepared, {seg: parts[seg] for seg in ("train", "val")})
        train_rows = inputs["train"][0].height
        seconds = fitting.fit_model(model, prepared, inputs, recipe["train"]["early_stopping"])
        del inputs  # as the train stage does: the training inputs go before the scoring ones are built
        started = time.perf_counter()
        scoring = fitting.model_inputs(model, prepared, {seg: parts[seg] for seg in ("val", "test")})
        predictions = fitting.predict_segments(model, scoring, ("val", "test"))
        infer_seconds = time.perf_counter() - started
        net = getattr(model, "net_", None)
        samples = getattr(model, "samples_", train_rows) * getattr(model, "epochs_run_", 1)
        fits.append(
            {
                "seed": seed,
                "parameters": sum(p.numel() for p in net.parameters()) if net is not None else None,
                "epochs": getattr(model, "epochs_run_", None),
                "train_per_s": samples / seconds,
                "infer_per_s": predictions.height / infer_seconds,
                "predictions": predictions.select("symbol", "ts", "segment", "score", "label"),
            }
        )
    fits_peak = _vm("VmHWM")
    return {
        "fits": fits,
        "imported_rss": imported,
        "baseline_rss": baseline,
        "fits_peak_rss": fits_peak,
        "peak_rss": max(loaded_peak, fits_peak),
        "matrix_bytes": prepared.rows.height * len(prepared.features) * 4,
    }


def _at_most(part, rows: int):
    """`rows` rows of a segment drawn at random, in their order (all of them when rows is 0)."""
    import numpy as np

    if not rows or part.height <= rows:
        return part
    return part[np.sort(np.random.default_rng(0).choice(part.height, rows, replace=False))]


def _model_recipe(name: str, seed: int, epochs: int, threads: int):
    """The model's recipe (its [model] and [train] from recipes/<name>.toml when there is one) with the seed,
    at most `epochs` epochs, the threads and the CPU."""
    from quant_cli.recipe import load_recipe

    own = RECIPES / f"{name}.toml"
    shipped = tomllib.loads(own.read_text()) if own.is_file() else {}
    model, train = shipped.get("model", {}), shipped.get("train", {})
    sets = [f'model.name="{name}"', f"run.seed={seed}", f"train.threads={threads}", 'train.device="cpu"']
    sets += [f"model.{k}={json.dumps(v)}" for k, v in model.items() if k in ("task", "symbol_encoding")]
    sets += [f"model.params.{k}={json.dumps(v)}" for k, v in model.get("params", {}).items()]
    sets += [f"train.{k}={json.dumps(v)}" for k, v in train.items() if k not in ("threads", "device")]
    sets.append(f"train.epochs={min(epochs, train.get('epochs', epochs))}")
    return load_recipe(None, sets)


# ---- the tables ---------------------------------------------------------------------------------------------


def _spread(values: list[float], digits: int = 4) -> str:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return "nan"
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return f"{statistics.fmean(finite):.{digits}f} ± {std:.{digits}f}"


def _table(results: dict[str, dict[str, Any]]) -> str:
    header = [
        "model",
        "params",
        "train/s",
        "infer/s",
        "peak RSS MiB",
        "val IC",
        "test IC",
        "test rank IC",
        "test Sharpe",
    ]
    rows = []
    for name, result in results.items():
        fits = result["fits"]
        params = fits[0]["parameters"]
        rows.append(
            [
                name,
                f"{params:,}" if params is not None else "-",
                f"{statistics.fmean(f['train_per_s'] for f in fits):,.0f}",
                f"{statistics.fmean(f['infer_per_s'] for f in fits):,.0f}",
                f"{result['peak_rss'] / MIB:,.0f}",
                _spread([f["val_ic"] for f in fits]),
                _spread([f["test_ic"] for f in fits]),
                _spread([f["test_rank_ic"] for f in fits]),
                _spread([f["sharpe"] for f in fits], 2),
            ]
        )
    return _markdown(header, rows)


def _memory_table(results: dict[str, dict[str, Any]]) -> str:
    header = ["model", "peak RSS MiB", "split loaded MiB", "added by the fits MiB", "bound MiB", "within"]
    rows = []
    for name, result in results.items():
        params = result["fits"][0]["parameters"] or 0
        bound = 2.5 * result["matrix_bytes"] + BYTES_PER_PARAM * params
        grown = result["fits_peak_rss"] - result["baseline_rss"]
        within = "yes" if grown <= bound else "NO: over the bound"
        loaded = result["baseline_rss"] - result["imported_rss"]
        cells = [result["peak_rss"], loaded, grown, bound]
        rows.append([name, *(f"{value / MIB:,.1f}" for value in cells), within])
    matrix = next(iter(results.values()))["matrix_bytes"] if results else 0
    note = (
        f"bound = 2.5 x float32 feature matrix ({matrix / MIB:,.2f} MiB) + {BYTES_PER_PARAM} bytes per parameter "
        "(weights, gradients, AdamW moments); 'split loaded' = RSS after loading the stored split - RSS after the "
        "imports; 'added by the fits' = peak RSS of the fits and scoring (VmHWM reset after the split is loaded) - "
        "RSS at that point"
    )
    return _markdown(header, rows) + "\n" + note


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def _as_json(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {name: {**result, "fits": [dict(f) for f in result["fits"]]} for name, result in results.items()}


if __name__ == "__main__":
    sys.exit(main())
