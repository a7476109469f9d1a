"""The data-parallel group around a training command: `--nproc N`, `[train] nproc`, torchrun.

Torch is imported only when a group is started, so other commands stay fast.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from quant_cli.cli import console
from quant_cli.errors import RecipeError
from quant_cli.models.device import resolve_device
from quant_cli.models.torch.topology import check_nproc, torchrun_rank
from quant_cli.recipe import Recipe
from quant_cli.report import Reporter


def _torch_names() -> list[str]:
    from quant_cli.models.registry import torch_models

    return list(torch_models())


def _cuda_count() -> int:
    from quant_cli.models.device import _cuda_count as count

    return count()


@contextmanager
def group(
    recipe: Recipe, nproc: int | None, backend: str, reporter: Reporter, json_out: bool = False
) -> Iterator[None]:
    """Run the block as rank 0 of a data-parallel group when the recipe (or `nproc`) asks for one."""
    nproc = recipe["train"]["nproc"] if nproc is None else nproc
    if (torchrun_rank() or 0) > 0:
        raise RecipeError(
            f"this is torchrun rank {torchrun_rank()}: under torchrun every rank runs `qfactory train` "
            "(rank 0 writes the run, the others train with it)"
        )
    if nproc <= 1 and torchrun_rank() is None:
        yield
        return
    name = recipe["model"]["name"]
    if name not in (torch_names := _torch_names()):
        raise RecipeError(
            f"train.nproc {nproc} trains torch models in parallel ({', '.join(torch_names)}); "
            f"model {name!r} is not one — drop --nproc or set train.nproc = 1"
        )
    from quant_cli.models.registry import model_class

    if model_class(name).cross_section:  # its batches are whole timestamps: a rank's share would split one
        raise RecipeError(
            f"train.nproc {nproc}: model {name!r} attends across the symbols of each timestamp, which a "
            "data-parallel share of a batch would split; drop --nproc or set train.nproc = 1"
        )
    device = resolve_device(recipe["train"]["device"], recipe["train"]["strict_device"], reporter)
    check_nproc(nproc, device, _cuda_count() if device.startswith("cuda") else 0)
    from quant_cli.models.torch import launch

    kind = "cuda" if device.startswith("cuda") else "cpu"
    with launch.data_parallel(nproc, kind, backend, on_dead_rank=_dead_rank(json_out)):
        yield


def _dead_rank(json_out: bool):
    """A dead rank ends the command at once with one line (exit 1): the main thread may be blocked
    in a collective, so this runs on the watchdog thread and exits the process itself."""

    def die(message: str) -> None:
        console.err.print(f"error: {message}", markup=False, soft_wrap=True)
        if json_out:
            print(json.dumps({"error": message, "kind": "RankFailed", "exit_code": 1}), flush=True)
        os._exit(1)

    return die


def worker_device(recipe_path: Path | None, device: str | None) -> str:
    """The device kind of a torchrun rank other than 0: its --device, else its recipe's train.device."""
    requested = device
    if requested is None and recipe_path is not None:
        from quant_cli.recipe import load_recipe

        requested = load_recipe(recipe_path)["train"]["device"]
    resolved = resolve_device(requested or "auto")
    return "cuda" if resolved.startswith("cuda") else "cpu"


def serve_torchrun(device_kind: str) -> None:
    from quant_cli.models.torch import launch

    launch.serve_torchrun(device_kind)
