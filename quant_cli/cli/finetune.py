"""`qfactory finetune`: a trained sequence-model run fine-tuned into a trading policy (a new run)."""

from __future__ import annotations

from typing import Annotated

import typer

from quant_cli.cli import console
from quant_cli.cli.common import Printed, SetOpt, Shared, stage_command

RunToFinetuneOpt = Annotated[
    str, typer.Option("--run", help="Trained run to start from: a path, run id or 'latest'.", show_default=False)
]
MethodOpt = Annotated[str, typer.Option("--method", help="Fine-tuning method: ppo.", show_default=False)]


@stage_command
def finetune(run: RunToFinetuneOpt, method: MethodOpt, set_: SetOpt = None, *, shared: Shared) -> Printed:
    """Fine-tune a trained torch sequence model into a trading policy with PPO, as a new run.

    The policy trades the training segment with the backtest's semantics (next-bar fills, costs,
    borrow, limits) and stops early on the validation Sharpe; the new run's scores are positions
    in [-1, 1] that backtest, bundle, predict and serve take like any run's. Settings: [finetune]
    (`qfactory recipe defaults`); --set takes finetune.* and the [backtest] costs and limits.

    Example: qfactory finetune --run latest --method ppo --set finetune.updates=50
    """
    from quant_cli.finetune.stage import finetune_existing

    source = shared.run(run)
    recipe = source.recipe()
    result = finetune_existing(source, method, shared.data(recipe), shared.runs(recipe), set_ or [], console.REPORTER)
    return result.path, {"run_id": result.id, "metrics": result.metrics}
