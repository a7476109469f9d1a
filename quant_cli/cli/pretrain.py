"""`qfactory pretrain`: self-supervised pretraining of a sequence model's encoder (a pretrain run)."""

from __future__ import annotations

from quant_cli.cli import console
from quant_cli.cli.common import (
    DeviceOpt,
    ModelOpt,
    Printed,
    RecipeOpt,
    SetOpt,
    Shared,
    StrictDeviceOpt,
    load_stage_recipe,
    stage_command,
)


@stage_command
def pretrain(
    recipe: RecipeOpt,
    set_: SetOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    strict_device: StrictDeviceOpt = False,
    *,
    shared: Shared,
) -> Printed:
    """Pretrain the recipe's sequence model's encoder without labels ([pretrain]: masked or contrastive).

    Reads the training segment only (add validation with pretrain.segments); prints the pretrain run,
    which `qfactory train --recipe R --init RUN` warm-starts from.

    Example: qfactory pretrain --recipe recipes/lstm.toml --set pretrain.objective=contrastive
    """
    from quant_cli.stages.pretrain import pretrain_new

    resolved = load_stage_recipe(recipe, set_, model, device, strict_device)
    result = pretrain_new(resolved, shared.data(resolved), shared.runs(resolved), console.REPORTER)
    return result.path, {"run_id": result.id, "pretrain": result.summary}
