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
    """Pretrain the encoder on the segments' windows and write pretrain/; returns the summary."""
    from quant_cli.models.torch.warmstart import input_record

    cfg = recipe["pretrain"]
    seq_len, inputs = model.params["seq_len"], model.params["inputs"]
    with run.stage("pretrain") as info:
        panel, values, ends = _windows(prepared, segments, channels, seq_len, inputs)
        if len(ends) < 2:
            raise RecipeError(
                f"pretrain: {len(ends)} window(s) of {seq_len} rows in segments {segments}; "
                "use a shorter model.params.seq_len or more data"
            )
        fitted = _fit_encoder(recipe, model, values, ends, reporter)
        used = list(panel.channels) if inputs != "features" else []
        meta = {
            "model": model.name,
            "params": model.params,
            "config": fitted["config"],
            "pretrain": dict(cfg),
            "segments": segments,
            "windows": len(ends),
            "tensors": {name: list(t.shape) for name, t in fitted["encoder"].items()},
            "inputs": input_record(prepared.features, prepared.pipeline.to_json(), inputs, used),
            "train": fitted["settings"],
        }
        _write_outputs(run, model.name, fitted["encoder"], fitted["history"], meta)
        last = fitted["history"][-1]["train_loss"] if fitted["history"] else float("nan")
        info.update(model=model.name, objective=cfg["objective"], windows=len(ends), loss=last, device=model.device)
    reporter.info(
        f"pretrain: {model.name} ({cfg['objective']}) on {len(ends):,} windows of {', '.join(segments)}; "
        f"{len(fitted['encoder'])} encoder tensors, final loss {last:.5f}"
    )
    return as_written({"model": model.name, "objective": cfg["objective"], "windows": len(ends), "loss": last})


def _fit_encoder(recipe: Recipe, model: Model, values: np.ndarray, ends: np.ndarray, reporter: Reporter) -> dict:
    """The objective around a new network of the recipe's model, trained by the one loop: the
    encoder's tensors (CPU), the loop's history, the network config and the loop settings used."""
    import torch

    from quant_cli.models.torch import loop
    from quant_cli.models.torch import pretrain as objectives
    from quant_cli.models.torch.config import LoopConfig
    from quant_cli.models.torch.windows import Samples

    cfg, seq_len = recipe["pretrain"], model.params["seq_len"]
    device, seed = model.device, recipe["run"]["seed"]
    where = loop.panel_device(values.nbytes, device)  # as a supervised fit places its panel
    data = Samples(loop.to_device(values, where, torch.float32), torch.as_tensor(ends, device=where), seq_len)
    settings = replace(
        LoopConfig.from_section(recipe["train"]),
        epochs=cfg["epochs"],
        batch_size=cfg["batch_size"],
        learning_rate=cfg["learning_rate"],
        patience=0,
    )
    config = model.config(
        n_inputs=values.shape[1], n_outputs=1, symbol_kind="none", n_symbols=0, **model.params, **model.fixed
    )
    with loop.reproducible(seed, device, recipe["train"]["threads"]):
        backbone = model.network(config)
        names = objectives.encoder_names(backbone, values.shape[1], seq_len)
        net = objectives.objective(backbone, objectives.PretrainConfig.from_section(cfg), values.shape[1], seq_len)
        result = loop.train(
            net.to(device),
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
    return {
        "encoder": {name: state[name].detach().cpu() for name in names},
        "history": result.history,
        "config": asdict(config),
        "settings": settings.to_json(),
    }


def _write_outputs(run: Run, name: str, encoder: dict, history: list, meta: dict[str, Any]) -> None:
    import io

    import torch

    from quant_cli.models.torch.warmstart import ENCODER_FILE, FOLDER, META_FILE

    with stage_outputs(run, FOLDER) as folder:
        buffer = io.BytesIO()  # serialised in memory, written by qfactory (a full disk names the file)
        torch.save(encoder, buffer)
        write_bytes_atomic(folder / ENCODER_FILE, buffer.getvalue())
        write_json_atomic(folder / "history.json", {"model": name, "epochs": history})
        write_json_atomic(folder / META_FILE, meta)
