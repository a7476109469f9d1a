"""`qfactory profile`: training-step throughput and peak memory of a torch model at several context lengths."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from quant_cli.cli import console
from quant_cli.cli.common import (
    DebugOpt,
    DeviceOpt,
    JsonOpt,
    QuietOpt,
    SetOpt,
    StrictDeviceOpt,
    cli_errors,
)
from quant_cli.errors import RecipeError
from quant_cli.models.device import resolve_device


def profile(
    model: Annotated[
        str,
        typer.Option("--model", "-m", help="A torch model: mlp, lstm, gru, tcn or transformer.", show_default=False),
    ],
    seq_len: Annotated[
        list[str] | None,
        typer.Option(
            "--seq-len",
            "-L",
            help="Context lengths, comma-separated or repeated (default 32,64,128,256).",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Windows per step.")] = 256,
    features: Annotated[int, typer.Option("--features", min=1, help="Feature columns per step (random inputs).")] = 32,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Timed steps per length (after one warm-up step).")] = 5,
    precision: Annotated[str, typer.Option("--precision", help="auto, fp32, bf16 or fp16, as train.precision.")] = (
        "auto"
    ),
    set_: SetOpt = None,
    device: DeviceOpt = None,
    strict_device: StrictDeviceOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Forward+backward samples/s and peak memory of a torch model at several context lengths.

    Peak memory is the device's max allocated on CUDA, the process's peak RSS on CPU. Architecture
    settings come as --set model.params.KEY=VALUE (e.g. --set model.params.d_model=64).

    Example: qfactory profile --model transformer --seq-len 64,128,256 --batch-size 256 --device cuda
    """
    with cli_errors(quiet, debug):
        from quant_cli.models.torch import profile as costs
        from quant_cli.models.torch.precision import PRECISIONS

        if precision not in PRECISIONS:
            raise RecipeError(f"--precision {precision!r} is not a precision; allowed: {', '.join(PRECISIONS)}")
        params = _params(set_ or [])
        used = resolve_device(device or "auto", strict_device, console.REPORTER)
        rows = costs.profile(
            model, costs.lengths(seq_len), batch_size, used, features, params, steps, precision=precision
        )
    if json_out:
        typer.echo(json.dumps({"model": model, "device": used, "rows": costs.as_json(rows)}))
    else:
        console.info(f"{model} on {used}: {features} features, {steps} timed steps per length")
        typer.echo(costs.table(rows))


def _params(sets: list[str]) -> dict:
    """model.params.KEY=VALUE overrides (TOML values), the only keys profile takes."""
    import tomllib

    params = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("model.params.") or key.count(".") != 2:
            raise RecipeError(
                f"--set {item!r}: profile takes only model.params.KEY=VALUE, e.g. --set model.params.hidden=128"
            )
        try:
            params[key.split(".")[2]] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            raise RecipeError(f"--set {item!r}: {value!r} is not a TOML value (strings need quotes)") from None
    return params
