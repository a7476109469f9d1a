"""`qfactory train --init PRETRAIN_RUN`: warm-start a torch sequence model from a pretrain run.

A pretrain run holds `pretrain/encoder.pt` (the encoder's tensors, named as in the network's state
dict) and `pretrain/pretrain.json` (the model, its parameters, the features and bar channels it read,
the preprocessing). A train run may start from it when it trains the same model on the same inputs
— the same feature columns in the same order, the same preprocessing and price adjustment, the same
model.params.inputs and bar channels — else one line names the mismatch. Every tensor of the new
network with the name and shape of a pretrained one is loaded; a name present in both with another
shape is an architecture mismatch and is refused, naming the tensor and the parameters that differ.
The head and any tensor the encoder lacks start from their usual initialisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quant_cli.errors import ModelError, RunError
from quant_cli.io import read_run_json

FOLDER = "pretrain"  # a pretrain run's outputs (the stage's folder)
ENCODER_FILE = "encoder.pt"
META_FILE = "pretrain.json"
KIND = "pretrain"  # the manifest's `kind` of a pretrain run


@dataclass
class Pretrained:
    run_id: str
    folder: Path  # the run's pretrain/ folder
    meta: dict[str, Any]
    experiment: str = ""  # the pretrain run's experiment fingerprint (recipe, less names and places)

    @property
    def model(self) -> str:
        return self.meta["model"]


def open_pretrained(run_path: Path) -> Pretrained:
    """The pretrain run at `run_path`, or a RunError naming why it cannot initialise a model."""
    manifest = read_run_json(run_path, "manifest.json")
    run_id = run_path.name
    if manifest.get("kind") != KIND:
        raise RunError(
            f"--init {run_id}: not a pretrain run (made by `qfactory train`, not `qfactory pretrain`); "
            "pass a run made by `qfactory pretrain --recipe R`"
        )
    stage = manifest.get("stages", {}).get(KIND, {})
    if stage.get("status") != "done" or not (run_path / FOLDER / ENCODER_FILE).is_file():
        raise RunError(f"--init {run_id}: its pretraining never finished; run `qfactory pretrain --recipe R` again")
    experiment = str(manifest.get("fingerprints", {}).get("experiment", run_id))
    return Pretrained(run_id, run_path / FOLDER, read_run_json(run_path, f"{FOLDER}/{META_FILE}"), experiment)


def check_model(pre: Pretrained, model_name: str) -> None:
    if pre.model != model_name:
        raise ModelError(
            f"--init {pre.run_id}: pretrained model '{pre.model}' but the recipe trains '{model_name}'; "
            f"set model.name = \"{pre.model}\" or pretrain a '{model_name}'"
        )


def input_record(features: list[str], pipeline: dict[str, Any], inputs: str, channels: list[str]) -> dict[str, Any]:
    """What a model's inputs are made of (pretrain.json stores it; train --init compares it)."""
    return {
        "features": list(features),
        "preprocess": pipeline.get("preprocess"),
        "adjustment": pipeline.get("adjustment"),
        "inputs": inputs,
        "channels": list(channels),
    }


def check_inputs(pre: Pretrained, here: dict[str, Any]) -> None:
    """Refuse a train run whose model inputs differ from the pretrain run's, naming the first difference."""
    there = pre.meta["inputs"]
    for key in ("features", "channels"):
        if there[key] != here[key]:
            diff = next(
                (f"'{a}' vs '{b}'" for a, b in zip(there[key], here[key]) if a != b),
                f"{len(there[key])} vs {len(here[key])} columns",
            )
            raise ModelError(
                f"--init {pre.run_id}: pretrained on other {key} ({diff}, pretrain run vs this run); "
                "use the pretrain run's [features] section"
            )
    for key, section in (("preprocess", "[preprocess]"), ("adjustment", "data.adjust"), ("inputs", "model.params")):
        if there[key] != here[key]:
            raise ModelError(
                f"--init {pre.run_id}: pretrained with {key} {there[key]} but this run has {here[key]}; "
                f"use the pretrain run's {section}"
            )


def load_into(net, pre: Pretrained, params: dict[str, Any]) -> list[str]:
    """Copy every pretrained tensor whose name the network has into it; returns their names."""
    import torch

    tensors = torch.load(pre.folder / ENCODER_FILE, map_location="cpu", weights_only=True)
    own = net.state_dict()
    for name, tensor in tensors.items():
        if name in own and own[name].shape != tensor.shape:
            differ = {k: (v, params.get(k)) for k, v in pre.meta["params"].items() if params.get(k) != v}
            said = ", ".join(f"{k} {a} vs {b}" for k, (a, b) in differ.items()) or "none"
            raise ModelError(
                f"--init {pre.run_id}: tensor '{name}' is {tuple(tensor.shape)} in the pretrain run but "
                f"{tuple(own[name].shape)} here (model.params differ: {said}); use the pretrain run's model.params"
            )
    loaded = [name for name in tensors if name in own]
    with torch.no_grad():
        for name in loaded:
            own[name].copy_(tensors[name])
    return loaded
