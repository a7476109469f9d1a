"""xsection (cross-sectional) against a per-symbol gru on the same split of a synthetic panel (not a test).

Both models read the same features, label, split and [train] loop (those of recipes/xsection.toml), with
the same window length and width; only the architecture differs: gru scores each symbol's window alone,
xsection lets the window encodings of every symbol at one timestamp attend to each other. For each model
and seed it trains one run (the synthetic panel's own seed is pinned, so every run sees the same data and
split) and prints the test IC, rank IC and val IC as mean ± std over the seeds.

    python benchmarks/xsection_vs_gru.py [--symbols 20] [--bars 600] [--signal 0.2] [--epochs 3] [--seeds 1 2 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import tomli_w

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from quant_cli import stages
from quant_cli.recipe import load_recipe

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "xsection.toml"
PER_SYMBOL = {"name": "gru", "keep": ("seq_len", "hidden", "dropout", "embedding_dim")}  # params gru shares


def recipe_text(model: str, seed: int, args: argparse.Namespace) -> str:
    """recipes/xsection.toml with the benchmark's panel, seed, epochs and (for gru) the shared params only."""
    recipe = tomllib.loads(RECIPE.read_text())
    recipe["run"].update(name=f"bench-{model}", seed=seed)
    recipe["data"]["dataset"] = f"xsbench-{args.symbols}x{args.bars}"
    recipe["data"]["dataset"] += f"-s{args.signal:g}"
    recipe["data"]["synthetic"].update(symbols=args.symbols, bars=args.bars, seed=args.data_seed, signal=args.signal)
    recipe["train"].update(epochs=args.epochs, threads=args.threads)
    recipe.pop("backtest")
    recipe["model"]["name"] = model
    if model == PER_SYMBOL["name"]:
        recipe["model"]["params"] = {k: v for k, v in recipe["model"]["params"].items() if k in PER_SYMBOL["keep"]}
    return tomli_w.dumps(recipe)


def one_run(model: str, seed: int, args: argparse.Namespace, work: Path) -> dict[str, float]:
    path = work / f"{model}-{seed}.toml"
    path.write_text(recipe_text(model, seed, args))
    run = stages.train_new(load_recipe(path), args.data_dir, work / "runs").run
    test, val = (json.loads((run.path / "metrics.json").read_text())[part] for part in ("test", "val"))
    return {"test_ic": test["ic"], "test_rank_ic": test["rank_ic"], "val_ic": val["ic"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--bars", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--data-seed", type=int, default=42)
    parser.add_argument("--signal", type=float, default=0.2, help="planted drift strength (data.synthetic.signal)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=["xsection", "gru"])
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "xsbench-data")
    parser.add_argument("--runs-dir", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    print(
        f"synthetic panel {args.symbols} symbols x {args.bars} bars (seed {args.data_seed}, signal {args.signal:g}), "
        f"{args.epochs} epochs"
    )
    print(f"{'model':10} {'test IC':>18} {'test rank IC':>18} {'val IC':>18}  per seed (test IC)")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.runs_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for model in args.models:
            runs = [one_run(model, seed, args, work) for seed in args.seeds]
            cells = [_mean_std([r[key] for r in runs]) for key in ("test_ic", "test_rank_ic", "val_ic")]
            seeds = ", ".join(f"{r['test_ic']:.5f}" for r in runs)
            print(f"{model:10} {cells[0]:>18} {cells[1]:>18} {cells[2]:>18}  {seeds}", flush=True)


def _mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


if __name__ == "__main__":
    main()
