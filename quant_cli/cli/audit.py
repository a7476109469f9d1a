"""`qfactory audit`: check a trained run for look-ahead (scoring and training) and for luck."""

from __future__ import annotations

from typing import Annotated

import typer

from quant_cli.audit import LOOKAHEAD_FAILED, audit_run
from quant_cli.audit.luck import DEFAULT_PERMUTATIONS
from quant_cli.cli import console
from quant_cli.cli.common import DataDirOpt, DebugOpt, JsonOpt, QuietOpt, RunOpt, RunsDirOpt, Shared, cli_errors, emit

PermutationsOpt = Annotated[
    int,
    typer.Option(
        "--permutations",
        "-n",
        min=0,
        help="Refits on shuffled labels for the permutation test "
        "(0 skips it; fewer than the default is noted in the report).",
    ),
]


def audit(
    run: RunOpt,
    permutations: PermutationsOpt = DEFAULT_PERMUTATIONS,
    data_dir: DataDirOpt = None,
    runs_dir: RunsDirOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Audit a trained run: look-ahead in scoring and training, and a permutation test; writes audit/audit.json.

    Exit 0 when every look-ahead check passes, 3 when one fails (one line naming the first), 2 for bad input.

    Example: qfactory audit --run latest --permutations 20
    """
    shared = Shared(data_dir, runs_dir, json_out)
    with cli_errors(quiet, debug, json_out):
        target = shared.run(run)
        result = audit_run(target, shared.data(target.recipe()), permutations, console.REPORTER)
    payload = {
        "run_id": result.run.id,
        "audit_json": str(result.path),
        "audit": result.report,
        **({} if result.passed else {"error": result.failure, "kind": "LookAhead", "exit_code": LOOKAHEAD_FAILED}),
    }
    emit(result.run.path, json_out, payload)  # the run directory, as every run command prints
    if not result.passed:
        console.err.print(f"error: {result.failure}", markup=False, soft_wrap=True)
        raise typer.Exit(LOOKAHEAD_FAILED)
