"""The bundle stage: a trained run's verified inference bundle (quant_cli.serve.bundle)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from quant_cli.data import store
from quant_cli.dataset.table import load_bars
from quant_cli.errors import RunError
from quant_cli.features.references import References
from quant_cli.features.store import reference_snapshot
from quant_cli.io import read_json, read_run_json, staged_dir
from quant_cli.recipe import Recipe
from quant_cli.report import SILENT, Reporter
from quant_cli.runs.directory import Run, stage_outputs
from quant_cli.stages.common import pinned_for
from quant_cli.stages.results import BundleResult


def bundle_existing(
    run: Run,
    data_dir: Path,
    out: Path | None = None,
    archive: bool = False,
    trust_pickle: bool = False,
    reporter: Reporter = SILENT,
) -> BundleResult:
    """`qfactory bundle --run RUN`: the run's verified inference bundle (serve/bundle.py), by default
    as the run's `bundle` stage (`<run>/bundle/`, plus `bundle.tar.gz` with `archive`), else at `out`."""
    from quant_cli.serve import bundle as bundles

    run.require_stage("train", f"train it first with `qfactory train --run {run.id}`")
    if out is None and run.has_stage("bundle"):  # before the bars are read
        raise RunError(
            f"run {run.id} already has a bundle (runs are never overwritten); to build another, "
            f"pass --out DIR: `qfactory bundle --run {run.id} --out DIR`"
        )
    recipe = run.recipe()
    bars = _bundle_bars(recipe, pinned_for(run, recipe, data_dir), run)
    if out is not None:
        if out.exists():
            raise RunError(f"--out {out} already exists; bundles are never overwritten — pass a new folder")
        with staged_dir(out) as folder:
            bundle_id = bundles.build(run, bars, folder, trust_pickle, reporter)["bundle_id"]
        written = bundles.write_archive(out, out.with_name(f"{out.name}.tar.gz")) if archive else out
        return BundleResult(run, written, bundle_id)
    run.begin_stage("bundle", reporter)  # a killed bundle's leftovers never block
    with run.stage("bundle") as info:
        with stage_outputs(run, "bundle") as folder:
            info["bundle_id"] = bundles.build(run, bars, folder, trust_pickle, reporter)["bundle_id"]
        if archive:
            bundles.write_archive(run.path / "bundle", run.path / "bundle.tar.gz")
    return BundleResult(run, run.path / ("bundle.tar.gz" if archive else "bundle"), info["bundle_id"])


def _bundle_bars(recipe: Recipe, snapshot: store.Snapshot, run: Run) -> pl.DataFrame:
    """The run's raw bars, with the benchmark's and the references' even when data.symbols leaves them
    out (references of another dataset from the version the run's features were built on)."""
    bars = load_bars(recipe, snapshot)
    present = set(bars["symbol"].cast(pl.String).unique().to_list())
    benchmark = recipe["features"].get("benchmark")
    refs = References.from_section(recipe["features"].get("references"), snapshot.dataset)
    wanted = [s for s in ([benchmark] if benchmark else []) if s not in present]
    wanted += [s for s in (refs.symbols if refs and not refs.external else []) if s not in present]
    extras = [snapshot.load_bars(symbols=wanted, end=recipe["data"]["end"])] if wanted else []
    if refs is not None and refs.external:
        pinned = reference_snapshot(recipe, snapshot.data_dir, snapshot, _reference_version(run))
        extras.append(pinned.load_bars(symbols=refs.symbols, end=recipe["data"]["end"]))
    return pl.concat([bars, *extras], how="diagonal_relaxed") if extras else bars


def _reference_version(run: Run) -> int | None:
    """The reference dataset's version the run's feature version was built on (spec.json), if recorded."""
    try:
        path = Path(read_run_json(run.path, "split/features.json")["path"]) / "spec.json"
        return int(read_json(path)["references"]["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # the feature version was deleted: the latest reference version
