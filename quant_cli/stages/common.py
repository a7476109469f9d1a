"""What every stage shares: the recipe's model, device and embargo, the dataset version a command
pins, and the cheap checks that must fail before a run directory or any heavy work exists.

Data. Every command pins one dataset version when it starts (`data.store.pin` → Snapshot) and
reads bars only through it (labels, the feature build, the backtest); the run manifest records
`dataset: {name, version, content_hash}` and the price adjustment, and continuing a run pins
that version again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quant_cli.backtest import strategies
from quant_cli.backtest.engine import with_defaults
from quant_cli.data import store
from quant_cli.dataset.table import check_task, dataset_name
from quant_cli.errors import RecipeError, RunError
from quant_cli.models.base import Model
from quant_cli.models.device import resolve_device
from quant_cli.models.registry import check_capabilities, create_model
from quant_cli.recipe import Recipe
from quant_cli.report import SILENT, Reporter
from quant_cli.runs.directory import Run
from quant_cli.splits.chronological import explicit_boundaries
from quant_cli.splits.embargo import default_embargo


def embargo_of(recipe: Recipe) -> int | str:
    return default_embargo(recipe["split"]["embargo"], recipe["label"]["horizon"])


def dataset_record(snapshot: store.Snapshot) -> dict[str, Any]:
    return {"name": snapshot.dataset, "version": snapshot.version, "content_hash": snapshot.content_hash}


def make_model(recipe: Recipe, device: str = "cpu", reporter: Reporter = SILENT) -> Model:
    """Constructing validates the model name and parameters, so call it before any heavy work."""
    cfg = recipe["model"]
    return create_model(
        cfg["name"],
        cfg["task"],
        cfg["params"],
        recipe["run"]["seed"],
        recipe["train"]["threads"],
        device=device,
        symbol_encoding=cfg["symbol_encoding"],
        unseen_symbols=cfg["unseen_symbols"],
        reporter=reporter,
        train=recipe["train"],
        static_columns=cfg.get("static_columns"),
        known_future=cfg.get("known_future"),
    )


def device_of(recipe: Recipe, reporter: Reporter) -> str:
    """Resolved once per run: a missing GPU warns once (or fails with strict_device)."""
    return resolve_device(recipe["train"]["device"], recipe["train"]["strict_device"], reporter)


def new_model(recipe: Recipe, reporter: Reporter = SILENT) -> Model:
    """A new, unfitted model of the recipe on its resolved device."""
    return make_model(recipe, device_of(recipe, reporter), reporter)


def check_recipe(recipe: Recipe, reporter: Reporter, model: bool = True) -> None:
    """Cheap recipe checks that must fail before a run directory or any heavy work exists."""
    dataset_name(recipe)
    check_task(recipe)
    if model:
        _check_not_finetuned(recipe)
        check_capabilities(recipe, "recipe")  # the CLI checked it at load already; library callers too
        _check_sequence_split(recipe, make_model(recipe, device_of(recipe, reporter), reporter))


def _check_not_finetuned(recipe: Recipe) -> None:
    """A fine-tuned run's recipe (finetune.method set by `qfactory finetune`) describes a policy that
    training from labels, a walk-forward's per-fold refits and `run` cannot reproduce: refuse it
    rather than silently fit the supervised model it started from."""
    method = recipe.get("finetune", {}).get("method", "none")
    if method != "none":
        raise RecipeError(
            f"finetune.method = {method!r}: this recipe is a fine-tuned run's, and train, walkforward and run fit "
            "from labels only (there is no per-fold fine-tuning); set finetune.method = 'none' to fit the "
            "supervised model, then `qfactory finetune --run RUN --method ppo` (compare them with "
            "benchmarks/ppo_vs_supervised.py)"
        )


def _check_sequence_split(recipe: Recipe, model: Model) -> None:
    """Cross-validation refits the preprocessing per fold on the fold's rows alone, but a window
    reads the whole panel, preprocessed once: a sequence model is validated chronologically."""
    if model.uses_panel() and recipe["split"]["method"] != "chronological":
        raise RecipeError(
            f"split.method {recipe['split']['method']!r} is not supported with sequence model '{model.name}' "
            "(windows read every past row, which per-fold preprocessing cannot "
            'provide); use split.method = "chronological"'
        )


def check_universe(recipe: Recipe, snapshot: store.Snapshot) -> None:
    """Refuse, before any fit, a [backtest] strategy that cannot trade the symbols the recipe
    selects (one symbol and long_short, ...); the backtest checks its scored cross-section again."""
    symbols = sorted(set(recipe["data"]["symbols"] or snapshot.manifest.get("symbols") or []))
    if symbols:
        strategies.check_universe(with_defaults(recipe["backtest"]), len(symbols), symbols)


def pin_dataset(recipe: Recipe, data_dir: Path, reporter: Reporter = SILENT) -> store.Snapshot:
    """The one dataset version a command reads, pinned when it starts; a dataset not in the store yet
    is first ingested from the recipe's data.source when it names one (a recipe is its own first command)."""
    from quant_cli.data.ingest import ingest_missing

    ingest_missing(recipe, data_dir, reporter)
    return store.pin(data_dir, dataset_name(recipe))


def pin_checked(recipe: Recipe, data_dir: Path, reporter: Reporter = SILENT) -> store.Snapshot:
    """Pin the dataset, then check the split dates against the pinned manifest (before any feature build)."""
    snapshot = pin_dataset(recipe, data_dir, reporter)
    _check_split_dates(recipe, snapshot.manifest)
    _check_static_columns(recipe, snapshot.manifest)
    return snapshot


def _check_static_columns(recipe: Recipe, manifest: dict[str, Any]) -> None:
    """model.static_columns are text columns of the pinned dataset (from its manifest: before any run exists)."""
    schema = manifest.get("schema") or {}
    text = [c for c, kind in schema.items() if c != "symbol" and kind.lower() in ("string", "str", "utf8")]
    for column in recipe["model"].get("static_columns") or []:
        if column not in text:
            raise RecipeError(
                f"model.static_columns names {column!r}, which is not a text column of dataset "
                f"{manifest.get('dataset', dataset_name(recipe))!r} (its text columns: {text or 'none'}); "
                "ingest bars with that column or remove it from model.static_columns"
            )


def _check_split_dates(recipe: Recipe, manifest: dict[str, Any]) -> None:
    """Explicit split dates inside the data the recipe selects, from the pinned manifest alone."""
    cfg, data = recipe["split"], recipe["data"]
    if not (cfg["val_start"] or cfg["test_start"]) or not manifest.get("start"):
        return
    val_start, test_start = explicit_boundaries(cfg)
    first = max(b for b in (store.parse_time(manifest["start"], "start"), _bound(data["start"], "data.start")) if b)
    last = min(b for b in (store.parse_time(manifest["end"], "end"), _bound(data["end"], "data.end")) if b)
    for key, value in (("split.val_start", val_start), ("split.test_start", test_start)):
        if not first < value <= last:
            raise RecipeError(
                f"{key} {value:%Y-%m-%d} is outside the data: dataset "
                f"{manifest['dataset']!r} (with data.start/data.end) "
                f"spans {first:%Y-%m-%d} to {last:%Y-%m-%d}; pick a date inside that range"
            )


def _bound(value: Any, name: str) -> Any:
    return store.parse_time(value, name) if value else None


def pinned_for(run: Run, recipe: Recipe, data_dir: Path) -> store.Snapshot:
    """The version a run was split on; a store that cannot time travel must still hold the same content."""
    recorded = run.manifest().get("dataset") or {}
    snapshot = store.pin(data_dir, dataset_name(recipe), recorded.get("version"))
    if recorded.get("content_hash") and snapshot.content_hash != recorded["content_hash"]:
        raise RunError(
            f"run {run.id} was split on dataset {snapshot.dataset!r} version "
            f"{recorded.get('version')} (content {recorded['content_hash'][:12]}), "
            f"which the store no longer holds (now {snapshot.content_hash[:12]}); "
            "start a new run with `qfactory train --recipe R`"
        )
    return snapshot
