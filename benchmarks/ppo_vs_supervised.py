"""A supervised sequence model and its PPO fine-tune on the same split, side by side (not a test).

One recipe (synthetic panel with a planted drift, an lstm, a chronological split) is trained as
`qfactory train` trains it; `qfactory finetune --method ppo` fine-tunes that run; both are
backtested on the same test segment with the same costs:

  supervised   the recipe's [backtest] strategy on the forecasts (long_short by default)
  ppo          the policy's positions traded as given (strategy "position", what it was trained on)

and printed: Sharpe, deflated Sharpe (both runs are the trials on the dataset: N = 2, from
runs/ledger.py), mean turnover, gross and net exposure, beta, and the validation Sharpe that
picked the kept PPO update (update 0 is the supervised model as a policy, tanh of its forecast).
Small by default so it runs in minutes on a CPU; whatever the sign of the numbers, they are
what this split gives.

    python benchmarks/ppo_vs_supervised.py [--symbols 8] [--bars 800] [--updates 20] [--epochs 5]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from quant_cli import stages
from quant_cli.finetune.stage import finetune_existing
from quant_cli.io import read_json
from quant_cli.recipe import load_recipe
from quant_cli.runs.ledger import deflated_now, ledger

RECIPE = """
[run]
name = "ppo-bench"
seed = {seed}
[data]
dataset = "ppo-bench"
source = "synthetic"
[data.synthetic]
symbols = {symbols}
bars = {bars}
signal = 0.3
[features]
sets = ["core"]
[label]
horizon = 1
[model]
name = "lstm"
[model.params]
seq_len = 16
hidden = 16
[train]
epochs = {epochs}
batch_size = 128
threads = 2
[backtest]
cost_bps = 5.0
[finetune]
updates = {updates}
steps_per_rollout = 256
minibatch = 512
patience = 0
"""
COLUMNS = ("sharpe", "deflated_sharpe", "mean_turnover", "exposure", "net_exposure", "beta", "annual_return")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=8)
    parser.add_argument("--bars", type=int, default=800)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "r.toml").write_text(RECIPE.format(**vars(args)))
        data, runs = root / "data", root / "runs"
        supervised = stages.train_new(load_recipe(root / "r.toml"), data, runs).run
        tuned = finetune_existing(supervised, "ppo", data, runs).run
        rows = {}
        for label, run in (("supervised", supervised), ("ppo", tuned)):
            rows[label] = dict(stages.backtest_existing(run, data).backtest)
        trials = ledger(runs)  # this temporary home holds the two runs only
        deflated = deflated_now(trials)
        for label, run in (("supervised", supervised), ("ppo", tuned)):
            rows[label]["deflated_sharpe"] = deflated[(run.id, "backtest")]["deflated_sharpe"]
        block = read_json(tuned.path / "metrics.json")["finetune"]
        print(
            f"synthetic {args.symbols} symbols x {args.bars} bars, lstm {args.epochs} epochs, "
            f"ppo {args.updates} updates"
        )
        print(f"test segment, {rows['ppo']['periods']} periods; deflated over {len(trials)} trials")
        print(f"{'':<12}" + "".join(f"{c:>16}" for c in COLUMNS))
        for label, row in rows.items():
            print(f"{label:<12}" + "".join(f"{_fmt(row.get(c)):>16}" for c in COLUMNS))
        print(
            f"ppo kept update {block['best_update']} of {block['updates_run']}: val sharpe "
            f"{_fmt(block['val']['sharpe'])} (update 0, the supervised model as positions: "
            f"{_fmt(block['supervised_val_sharpe'])})"
        )


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"


if __name__ == "__main__":
    main()
