"""Warm start from self-supervised pretraining vs training from scratch (issue 20 §2; not a test).

For each seed, on one synthetic dataset and one chronological split: `qfactory pretrain` (training
segment only), then `qfactory train --init` from it, and `qfactory train` from scratch with the same
recipe, seed and training budget ([train] epochs, early stopping on validation). Prints mean ± std over
the seeds of validation IC, test IC and the best epoch (the epoch early stopping kept), side by side.
The pretraining epochs are extra compute the warm start had; the training budget is the same.

    python benchmarks/pretraining.py [--model lstm] [--objective masked] [--seeds 3] [--symbols 20]
        [--bars 600] [--epochs 10] [--pretrain-epochs 10]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from quant_cli.data.store import write_store
from quant_cli.data.synthetic import generate
from quant_cli.recipe import load_recipe
from quant_cli.stages import train_new
from quant_cli.stages.pretrain import pretrain_new

RECIPE = """
[run]
name = "bench"
seed = {seed}
[data]
dataset = "bench"
[features]
sets = ["core"]
[model]
name = "{model}"
[model.params]
seq_len = 16
[train]
threads = {threads}
epochs = {epochs}
batch_size = 256
patience = 3
[pretrain]
objective = "{objective}"
epochs = {pretrain_epochs}
batch_size = 256
"""


def one_seed(args: argparse.Namespace, seed: int, home: Path) -> dict[str, dict[str, float]]:
    text = RECIPE.format(
        seed=seed,
        **{k: getattr(args, k) for k in ("model", "threads", "epochs", "objective")},
        pretrain_epochs=args.pretrain_epochs,
    )
    path = home / f"seed{seed}.toml"
    path.write_text(text)
    recipe = load_recipe(path)
    data, runs = home / "data", home / "runs"
    pretrained = pretrain_new(recipe, data, runs)
    out = {}
    for arm, init in (("warm start", pretrained.path), ("scratch", None)):
        metrics = train_new(recipe, data, runs, init=init).metrics
        out[arm] = {
            "val IC": metrics["val"]["ic"],
            "test IC": metrics["test"]["ic"],
            "best epoch": metrics["train"]["best_epoch"],
        }
    print(f"seed {seed}: " + "; ".join(f"{arm} {_row(v)}" for arm, v in out.items()), flush=True)
    return out


def _row(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" if k != "best epoch" else f"{k} {v}" for k, v in values.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lstm")
    parser.add_argument("--objective", default="masked", choices=("masked", "contrastive"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--bars", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--pretrain-epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        write_store(home / "data", "bench", generate(symbols=args.symbols, bars=args.bars, seed=11), "synthetic")
        results = [one_seed(args, seed, home) for seed in range(1, args.seeds + 1)]
    print(
        f"\n{args.model}, {args.objective} pretraining ({args.pretrain_epochs} epochs, training segment only), "
        f"{args.symbols} symbols x {args.bars} bars, {args.epochs} training epochs, {args.seeds} seeds"
    )
    print(f"{'':<12}{'warm start':>22}{'scratch':>22}")
    for metric in ("val IC", "test IC", "best epoch"):
        cells = []
        for arm in ("warm start", "scratch"):
            values = np.array([r[arm][metric] for r in results], dtype=float)
            digits = 2 if metric == "best epoch" else 4
            spread = values.std(ddof=1) if len(values) > 1 else 0.0
            cells.append(f"{values.mean():.{digits}f} ± {spread:.{digits}f}")
        print(f"{metric:<12}{cells[0]:>22}{cells[1]:>22}")


if __name__ == "__main__":
    main()
