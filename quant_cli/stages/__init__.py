"""Stage orchestration over run directories: ingest → split → train → backtest → bundle, and `run`.

Each public function here is what one CLI command calls, and it returns a result object
(stages/results.py) holding what the command prints: the CLI never reads run files back. A new
run is staged and appears only if every requested stage succeeds; continuing a run (`--run`) adds
its outputs atomically.

One module per stage: split, train (with cross-validation), backtest (and report), bundle, run
(every stage, for cron); common holds what they share (the recipe's model and device, the pinned
dataset version, the cheap checks); fitting and crossval are the one path by which every stage
fits and scores a model. Walk-forward (quant_cli.walkforward) and tuning (quant_cli.tune) are
built on these.
"""

from quant_cli.stages.backtest import backtest_existing, backtest_weights, report_existing
from quant_cli.stages.bundle import bundle_existing
from quant_cli.stages.common import new_model
from quant_cli.stages.results import BacktestResult, BundleResult, ReportResult, SplitResult, TrainResult
from quant_cli.stages.run import run_all
from quant_cli.stages.split import load_run_split, new_split_run, split_new
from quant_cli.stages.train import CHECKPOINTS, fit_model, train_existing, train_new

__all__ = [
    "CHECKPOINTS",
    "BacktestResult",
    "BundleResult",
    "ReportResult",
    "SplitResult",
    "TrainResult",
    "backtest_existing",
    "backtest_weights",
    "bundle_existing",
    "fit_model",
    "load_run_split",
    "new_model",
    "new_split_run",
    "report_existing",
    "run_all",
    "split_new",
    "train_existing",
    "train_new",
]
