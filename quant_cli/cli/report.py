"""`qfactory report`: regenerate a run's report.html from its backtest files."""

from __future__ import annotations

from quant_cli import stages
from quant_cli.cli.common import DebugOpt, JsonOpt, QuietOpt, RunOpt, RunsDirOpt, cli_errors, emit
from quant_cli.runs.directory import resolve_run, runs_home


def report(
    run: RunOpt,
    runs_dir: RunsDirOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Regenerate the HTML tear sheet (backtest/report.html, walkforward/backtest/report.html) of a run; works offline.

    Prints the path of each report.html written, one per line (with --json: `path` is the first).

    Example: qfactory report --run latest

    Example: xdg-open "$(qfactory report --run latest | head -1)"
    """
    with cli_errors(quiet, debug):
        result = stages.report_existing(resolve_run(run, runs_home(runs_dir)))
        payload = {"run_id": result.id, "run": str(result.path), "reports": [str(p) for p in result.reports]}
    emit(result.reports[0] if json_out else "\n".join(str(p) for p in result.reports), json_out, payload)
