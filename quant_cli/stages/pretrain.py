"""`qfactory pretrain --recipe R`: self-supervised pretraining of the recipe's sequence model's encoder.

A pretrain run is a run directory like any other (its manifest's `kind` is "pretrain"): the split
stage builds features, labels and the FittedPipeline fit on the training rows exactly as `train`
does, then the pretrain stage trains the network's encoder (quant_cli.models.torch.pretrain) on the
windows ending at the rows of the segments in `[pretrain] segments` — the training segment by
default, validation too when asked (recorded in the manifest), never test — global over all
symbols, through the one training loop. A window ends at its row and reaches back only, so no
pretraining input lies after the last segment used. Labels are never read.

Output: pretrain/encoder.pt (the encoder's tensors), pretrain/pretrain.json (model, parameters, inputs,
objective), pretrain/history.json (the loop's per-epoch loss and telemetry) and split/ (the pipeline).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quant_cli.dataset.table import KEYS, Prepared, load_bars
from quant_cli.errors import RecipeError
from quant_cli.features.bars import bar_channels
from quant_cli.io import write_bytes_atomic, write_json_atomic
from quant_cli.models.base import Model
from quant_cli.models.registry import torch_models
from quant_cli.recipe import Recipe
from quant_cli.report import SILENT, Reporter
from quant_cli.runs.directory import Run, create_run, stage_outputs
from quant_cli.stages.common import check_recipe, device_of, make_model, pin_checked
from quant_cli.stages.fitting import build_panel
from quant_cli.stages.results import StageResult, as_written
from quant_cli.stages.split import split_stage

SEGMENTS = {"train": "train", "validation": "val"}  # [pretrain] segments → the split's segment names


@dataclass(frozen=True)
class PretrainResult(StageResult):
    summary: dict[str, Any]  # model, objective, windows, final loss


def supported_models() -> list[str]:
    from quant_cli.models.torch.pretrain import supports

    return sorted(name for name, cls in torch_models().items() if supports(getattr(cls, "network", None)))


def check_pretrain(recipe: Recipe, model: Model) -> None:
    """Cheap checks before any run exists: a model with an encoder, and the training segment used."""
    names = supported_models()
    if model.name not in names:
        raise RecipeError(
            f"pretrain: model '{model.name}' has no per-step encoder to pretrain; use one of {', '.join(names)}"
        )
    segments = recipe["pretrain"]["segments"]
    if "train" not in segments:
        raise RecipeError(f"pretrain.segments {segments}: must include 'train' (add \"train\"; never test)")


def pretrain_new(recipe: Recipe, data_dir: Path, runs_dir: Path, reporter: Reporter = SILENT) -> StageResult:
    """A new pretrain run: the split, then the pretrained encoder."""
    check_recipe(recipe, reporter)
    device = device_of(recipe, reporter)
    model = make_model(recipe, device, reporter)
    check_pretrain(recipe, model)
    snapshot = pin_checked(recipe, data_dir, reporter)
    with create_run(runs_dir, recipe) as run:
        segments = sorted(set(recipe["pretrain"]["segments"]), key=list(SEGMENTS).index)
        objective = recipe["pretrain"]["objective"]
        run.update_manifest(kind="pretrain", pretrain={"segments": segments, "objective": objective})
        prepared = split_stage(run, recipe, snapshot, reporter).prepared
        channels = None
        if model.needs_bars():
            bars = prepared.pipeline.adjustment.apply(load_bars(recipe, snapshot))
            channels = bar_channels(bars, recipe["features"]["timeframes"])
        summary = pretrain_stage(run, recipe, model, prepared, segments, channels, reporter)
    return PretrainResult(run, summary)


def _windows(prepared: Prepared, segments: list[str], channels: pl.DataFrame | None, seq_len: int, inputs: str):
    """(panel columns the model reads (N, F), int64 ends of every full window at a row of `segments`)."""
    panel, index = build_panel(prepared, channels)
    keys = pl.concat([prepared.segment(SEGMENTS[s]).select(KEYS) for s in segments])
    rows = keys.join(index, on=KEYS, how="inner")["_panel_row"].to_numpy().astype(np.int64)
    rows = np.sort(rows[panel.position[rows] >= seq_len - 1])  # rows with a full window of their own symbol
    return panel, panel.columns(inputs), rows


def pretrain_stage(
    run: Run,
    recipe: Recipe,
    model: Model,
    prepared: Prepared,
    segments: list[str],
    channels: pl.DataFrame | None,
    reporter: Reporter,
) -> dict[str, Any]:
    import io

    import torch

    from quant_cli.models.torch import loop
    from quant_cli.models.torch import pretrain as objectives
    from quant_cli.models.torch.config import LoopConfig
    from quant_cli.models.torch.warmstart import ENCODER_FILE, FOLDER, META_FILE, input_record
    from quant_cli.models.torch.windows import Samples

    cfg = recipe["pretrain"]
    seq_len, inputs = model.params["seq_len"], model.params["inputs"]
    with run.stage("pretrain") as info:
        panel, values, ends = _windows(prepared, segments, channels, seq_len, inputs)
        if len(ends) < 2:
            raise RecipeError(
                f"pretrain: {len(ends)} window(s) of {seq_len} rows in segments {segments}; "
                "use a shorter model.params.seq_len or more data"
            )
        device, seed = model.device, recipe["run"]["seed"]
        data = Samples(loop.to_device(values, device, torch.float32), torch.as_tensor(ends, device=device), seq_len)
        settings = LoopConfig.from_section(recipe["train"])
        settings = replace(
            settings, epochs=cfg["epochs"], batch_size=cfg["batch_size"], learning_rate=cfg["learning_rate"], patience=0
        )
        net_config = model.config(
            n_inputs=values.shape[1], n_outputs=1, symbol_kind="none", n_symbols=0, **model.params, **model.fixed
        )
        pre = objectives.PretrainConfig.from_section(cfg)
        with loop.reproducible(seed, device, recipe["train"]["threads"]):
            backbone = model.network(net_config)
            names = objectives.encoder_names(backbone, values.shape[1], seq_len)
            net = objectives.objective(backbone, pre, values.shape[1], seq_len).to(device)
            result = loop.train(
                net,
                data,
                None,
                settings,
                objectives.mean_loss,
                device=device,
                seed=seed,
                reporter=reporter,
                name=f"pretrain {model.name}",
            )
        state = backbone.state_dict()
        with stage_outputs(run, FOLDER) as folder:
            buffer = io.BytesIO()
            torch.save({name: state[name].detach().cpu() for name in names}, buffer)
            write_bytes_atomic(folder / ENCODER_FILE, buffer.getvalue())
            write_json_atomic(folder / "history.json", {"model": model.name, "epochs": result.history})
            used = list(panel.channels) if inputs != "features" else []
            meta = {
                "model": model.name,
                "params": model.params,
                "config": asdict(net_config),
                "pretrain": dict(cfg),
                "segments": segments,
                "windows": len(ends),
                "tensors": {name: list(state[name].shape) for name in names},
                "inputs": input_record(prepared.features, prepared.pipeline.to_json(), inputs, used),
                "train": settings.to_json(),
            }
            write_json_atomic(folder / META_FILE, meta)
        last = result.history[-1]["train_loss"] if result.history else float("nan")
        info.update(model=model.name, objective=cfg["objective"], windows=len(ends), loss=last, device=device)
    reporter.info(
        f"pretrain: {model.name} ({cfg['objective']}) on {len(ends):,} windows of {', '.join(segments)}; "
        f"{len(names)} encoder tensors, final loss {last:.5f}"
    )
    return as_written({"model": model.name, "objective": cfg["objective"], "windows": len(ends), "loss": last})
