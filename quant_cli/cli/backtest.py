"""`qfactory backtest`: trade a run's predictions with next-bar execution and costs."""

from __future__ import annotations

from quant_cli import stages
from quant_cli.cli import console
from quant_cli.cli.common import DataDirOpt, DebugOpt, JsonOpt, QuietOpt, RunOpt, RunsDirOpt, cli_errors, emit
from quant_cli.io import read_json
from quant_cli.runs.directory import data_home, resolve_run, runs_home


def backtest(
    run: RunOpt,
    data_dir: DataDirOpt = None,
    runs_dir: RunsDirOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Backtest a trained run's test-segment scores; writes backtest/ and adds backtest.* to metrics.json.

    Example: qfactory backtest --run latest
    """
    with cli_errors(quiet, debug):
        existing = resolve_run(run, runs_home(runs_dir))
        stages.backtest_existing(existing, data_home(data_dir, existing.recipe()), console.REPORTER)
        payload = {"run_id": existing.id, "backtest": read_json(existing.path / "metrics.json")["backtest"]}
    emit(existing.path, json_out, payload)
