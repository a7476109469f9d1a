"""Build, verify and load bundles (DESIGN.md §7).

A bundle is a self-contained folder (optionally also one .tar.gz):

    model/              the model in its native format (Model.save; model.json names the family)
    pipeline.json       the FittedPipeline: features in order, options, preprocessing state, encoding,
                        and the measured warm-up per feature (pipeline/lookback.py)
    input_schema.json   JSON schema of a /predict request + the bars, columns and symbols it needs
    output_schema.json  JSON schema of the response
    example/input.json  a request made of the run's own bars; example/expected.json its scores
    lookback.json       the measurement: bars per feature, convergence, the history it used
    versions.json       qfactory, python and library versions
    source.json         source run id, dataset version, features fingerprint; recipe.toml, resolved
    metrics.json        the run's metrics summary
    manifest.json       schema version, bundle id, SHA-256 of every other file (written last)

Loading reads every file once and verifies its hash (serve/contents.py), validates the documents
(serve/documents.py), loads the model from those same bytes and scores the bundle's own example.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import sys
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from quant_cli import __version__
from quant_cli.errors import BundleError, QFactoryError, clip_huge_values
from quant_cli.io import (
    read_json,
    read_run_json,
    read_run_parquet,
    storage_errors,
    write_json_atomic,
    write_text_atomic,
)
from quant_cli.models.base import Model
from quant_cli.models.registry import load_model
from quant_cli.pipeline import lookback
from quant_cli.pipeline.fitted import FittedPipeline
from quant_cli.report import SILENT, Reporter
from quant_cli.runs.directory import Run, library_versions
from quant_cli.serve import contents, documents
from quant_cli.serve import manifest as mf
from quant_cli.serve.loaded import InputSpec, LoadedBundle, bars_from_records, max_relative_difference, records
from quant_cli.serve.schemas import Bar, input_schema, output_schema

EXAMPLE_SYMBOLS = 2  # symbols in the example request, besides the ones every request needs
EXAMPLE_TOLERANCE = 1e-6
MEASURE_SYMBOLS = 8
_METRIC_BLOCKS = ("val", "test", "train", "cv", "backtest", "walkforward")


# ---- build -------------------------------------------------------------------------------------------


def build(
    run: Run, bars: pl.DataFrame, folder: Path, trust_pickle: bool = False, reporter: Reporter = SILENT
) -> dict[str, Any]:
    """Write the bundle of `run` into the empty `folder`; `bars`: the run's raw bars (every symbol, the
    benchmark included) from the dataset version it was split on. Returns the manifest."""
    pipeline = FittedPipeline.from_json(read_run_json(run.path, "split/pipeline.json"))
    _check_servable(pipeline, bars.columns)
    mf.check_pickle(run.path / "model", mf.files_of(run.path / "model"), trust_pickle)
    model = load_model(run.path / "model")
    measured = pipeline.measure_lookback(_measurement_bars(pipeline, bars), reporter)
    if measured.unconverged:
        reporter.warn(
            f"bundle: {len(measured.unconverged)} feature(s) (e.g. "
            f"{measured.unconverged[0]}) did not converge within the "
            f"{measured.history} bars of history; requests must carry all {measured.history} bars"
        )
    model.save(folder / "model")
    write_json_atomic(folder / "pipeline.json", pipeline.to_json())
    spec, channels = _input_spec(run, pipeline, bars, model, reporter)
    write_json_atomic(folder / "lookback.json", {**measured.to_json(), **_window_json(spec, channels)})
    loaded = LoadedBundle(folder, {"bundle_id": "building"}, pipeline, model, spec)
    write_json_atomic(folder / "input_schema.json", input_schema(spec))
    write_json_atomic(folder / "output_schema.json", output_schema(loaded.output_columns))
    _write_example(folder, loaded, bars)
    _write_provenance(folder, run)
    reporter.info(
        f"bundle: {len(pipeline.features)} features, {spec.required_bars} bars per symbol"
        + (f", required symbols {spec.required_symbols[:5]}" if spec.required_symbols else "")
    )
    return mf.write_manifest(
        folder,
        {
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "source_run": run.id,
            "model": model.name,
            "task": model.task,
            "qfactory_version": __version__,
        },
    )


def _check_servable(pipeline: FittedPipeline, columns: list[str]) -> None:
    """A request carries the bar columns of the server's Bar model only: a feature reading any other
    column (a factor expression over alternative data, `$sentiment`) cannot be served, so the run is
    refused here rather than written as a bundle that no loader accepts."""
    servable = set(Bar.model_fields) - {"symbol", "ts"}
    odd = [c for c in lookback.input_columns(pipeline, columns) if c not in servable]
    if odd:
        reader = next(f.name for f in pipeline.specs if odd[0] in f.inputs)
        raise BundleError(
            f"bundle: feature {reader!r} reads column {odd[0]!r}, which a scoring request cannot carry (bars have "
            f"{', '.join(sorted(servable - {'sector'}))}); drop the feature from the recipe to bundle the model"
        )


def _measurement_bars(pipeline: FittedPipeline, bars: pl.DataFrame) -> pl.DataFrame:
    """Bars to measure the lookback on: every symbol when features cross symbols, else the
    MEASURE_SYMBOLS longest histories (plus the benchmark) — the convergence of a per-symbol
    feature is a property of its definition and the data's frequency, not of the universe size."""
    if lookback.cross_sectional(pipeline):
        return bars
    counts = bars.group_by(pl.col("symbol").cast(pl.String)).len().sort(["len", "symbol"], descending=[True, False])
    keep = {
        *counts["symbol"].head(MEASURE_SYMBOLS).to_list(),
        *([b] if (b := lookback.benchmark_symbol(pipeline)) else []),
        *lookback.reference_symbols(pipeline),
    }
    return bars.filter(pl.col("symbol").cast(pl.String).is_in(sorted(keep)))


def _input_spec(
    run: Run, pipeline: FittedPipeline, bars: pl.DataFrame, model: Any, reporter: Reporter = SILENT
) -> tuple[InputSpec, lookback.Lookback | None]:
    """What a request must carry, and the raw-bar channels' measured lookback (None when the model
    reads no bars): a panel model's window adds seq_len - 1 bars (pipeline/lookback.py)."""
    columns = lookback.input_columns(pipeline, bars.columns)
    timeframes = lookback.channel_timeframes(model)
    channels = None
    if timeframes is not None:  # the channels read the bars themselves
        columns += [c for c in ("open", "high", "low", "close", "volume") if c in bars.columns and c not in columns]
        channels = lookback.measure_channels(pipeline, _measurement_bars(pipeline, bars), timeframes, reporter)
    if pipeline.adjustment.mode != "none" and "adj_close" in bars.columns:
        columns.append("adj_close")  # serving adjusts prices exactly as training did
    required, why = [], []
    if (benchmark := lookback.benchmark_symbol(pipeline)) is not None:
        required.append(benchmark)
        why.append(f"benchmark of the bench_* features: {benchmark}")
    if refs := lookback.reference_symbols(pipeline):
        required += [s for s in refs if s not in required]
        source = pipeline.references.dataset
        why.append(
            f"reference symbols of the ref_* features{f' (dataset {source!r}, not scored)' if source else ''}: "
            + ", ".join(refs)
        )
    if cross := lookback.cross_sectional(pipeline):
        universe = read_run_parquet(run.path, "split/rows.parquet")["symbol"].cast(pl.String).unique().sort().to_list()
        required += [s for s in universe if s not in required]
        why.append(
            f"cross-sectional features such as {cross[0]} compare all {len(universe)} symbols the model was trained on"
        )
    return InputSpec(
        lookback.request_bars(pipeline.required_bars, model, channels),
        columns,
        required,
        "; ".join(why),
        lookback.extra_keys(pipeline),
        lookback.model_window(model),
        timeframes,
    ), channels


def _window_json(spec: InputSpec, channels: lookback.Lookback | None) -> dict[str, Any]:
    """lookback.json's account of a panel model's window (nothing for tabular models)."""
    if spec.window == 1 and channels is None:
        return {}
    return {
        "request_bars": spec.required_bars,
        "window": spec.window,
        "channels": None if channels is None else channels.to_json(),
    }


def _write_example(folder: Path, loaded: LoadedBundle, bars: pl.DataFrame) -> None:
    """A request made of the run's last bars, and the scores this bundle gives it."""
    spec = loaded.spec
    symbols = bars["symbol"].cast(pl.String).unique().sort().to_list()
    chosen = list(
        dict.fromkeys(
            [*spec.required_symbols, *[s for s in symbols if s not in spec.required_symbols][:EXAMPLE_SYMBOLS]]
        )
    )
    example = lookback.tail_bars(bars.filter(pl.col("symbol").cast(pl.String).is_in(chosen)), spec.required_bars)
    example = example.select(pl.col("symbol").cast(pl.String), "ts", *spec.columns, *spec.keys)
    (folder / "example").mkdir()
    write_json_atomic(folder / "example" / "input.json", {"bars": records(example)})
    request = bars_from_records(read_json(folder / "example" / "input.json")["bars"], "example/input.json")
    write_json_atomic(folder / "example" / "expected.json", {"predictions": records(loaded.score_bars(request))})


def _write_provenance(folder: Path, run: Run) -> None:
    manifest = run.manifest()
    write_json_atomic(
        folder / "versions.json",
        {"qfactory": __version__, "python": sys.version.split()[0], "libraries": library_versions()},
    )
    write_json_atomic(
        folder / "source.json",
        {
            "source_run": run.id,
            "run_path": str(run.path),
            "dataset": manifest.get("dataset"),
            "fingerprints": manifest.get("fingerprints"),
            "git_commit": manifest.get("git_commit"),
            "run_created": manifest.get("created"),
        },
    )
    write_text_atomic(folder / "recipe.toml", (run.path / "recipe.toml").read_text(encoding="utf-8"))
    metrics = read_run_json(run.path, "metrics.json") if (run.path / "metrics.json").is_file() else {}
    write_json_atomic(folder / "metrics.json", {k: v for k, v in metrics.items() if k in _METRIC_BLOCKS})


def write_archive(folder: Path, target: Path) -> Path:
    """`folder` as one .tar.gz (entries under the folder's name), written atomically."""
    partial = target.with_name(f".{target.name}.partial")
    try:
        with storage_errors(target, own_name=False), tarfile.open(partial, "w:gz") as tar:  # a full disk: one line
            tar.add(folder, arcname=folder.name)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)  # a failed archive leaves nothing behind
    return target


# ---- load and verify --------------------------------------------------------------------------------


def load(path: Path | str, trust_pickle: bool = False, trust_plugins: bool = False) -> LoadedBundle:
    """Read the bundle once and verify every hash (serve/contents.py), then load the pipeline, the
    spec and the model from those same bytes and score the bundle's own example; any failure is
    one BundleError line. What `serve`, `/reload`, `predict` and `bundle verify` all load. Pickled models
    and factor plugins run code when loaded: refused unless `trust_pickle` / `trust_plugins`."""
    return _load(contents.read(Path(path), trust_pickle), trust_plugins)[0]


def verify(path: Path | str, trust_pickle: bool = False, trust_plugins: bool = False) -> dict[str, Any]:
    """`qfactory bundle verify`: the hashes, the documents, then the example request against its expected scores."""
    loaded, files, worst = _load(contents.read(Path(path), trust_pickle), trust_plugins)
    return {
        "bundle_id": loaded.bundle_id,
        "files": files,
        "example_rows": loaded.example[1].height,
        "max_relative_difference": worst,
    }


def _load(verified: contents.Contents, trust_plugins: bool = False) -> tuple[LoadedBundle, int, float]:
    """The loaded bundle, how many files it has, and its example's largest relative score difference."""
    pipeline = documents.pipeline_of(verified, trust_plugins)
    spec = documents.spec_of(verified, pipeline)
    loaded = LoadedBundle(Path(verified.label), verified.manifest, pipeline, load_model_from(verified), spec)
    loaded.example = _example(verified)
    return loaded, len(verified.files), _check_example(loaded)


def load_model_from(verified: contents.Contents) -> Model:
    """The model of the verified bytes: written into a private folder (mode 0700, ours alone), loaded,
    and the folder removed, so no file another process can swap is ever read. LightGBM writes its
    '[Fatal]' line to the process's stderr before it raises: held back, the error is one line."""
    files = verified.under("model")
    if "model.json" not in files:
        raise BundleError(f"bundle {verified.label}: model/model.json is not in {mf.MANIFEST}; {contents.REBUILD}")
    folder = Path(tempfile.mkdtemp(prefix="qfactory-bundle-"))
    try:
        for name, data in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        with native_stderr_held():
            return load_model(folder)
    except Exception as exc:  # noqa: BLE001 - any library's refusal of a damaged model file is one line
        kind = contents.plain(str(verified.manifest.get("model", "model")), 40)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = reason.replace(f"{folder}/", "model/").replace(str(folder), "model")  # not our private folder's name
        raise BundleError(
            clip_huge_values(
                f"bundle {verified.label}: model/ cannot be loaded as a {kind} model "
                f"({type(exc).__name__}: {reason}); {contents.REBUILD}"
            )
        ) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


_STDERR = threading.Lock()
_NATIVE_FATAL = (b"[LightGBM] [Fatal]",)


@contextlib.contextmanager
def native_stderr_held() -> Iterator[None]:
    """File descriptor 2 into a temporary file for the duration; afterwards every line written
    there is passed on except native libraries' fatal lines (their errors are raised as exceptions)."""
    with _STDERR, tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            kept = [line for line in sink.read().splitlines(keepends=True) if not line.startswith(_NATIVE_FATAL)]
            if kept:
                os.write(2, b"".join(kept))


def _example(verified: contents.Contents) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The example request (validated like any request) and its expected scores."""
    try:
        request = bars_from_records(verified.json("example/input.json")["bars"], "example/input.json")
        expected = pl.DataFrame(verified.json("example/expected.json")["predictions"])
    except BundleError:
        raise
    except (QFactoryError, KeyError, TypeError, ValueError, pl.exceptions.PolarsError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else ""
        raise BundleError(
            clip_huge_values(
                f"bundle {verified.label}: the example (example/*.json) is not what "
                f"this qfactory writes ({type(exc).__name__}: {reason}); "
                f"{contents.REBUILD}"
            )
        ) from None
    return request, expected


def _check_example(loaded: LoadedBundle) -> float:
    """Score the bundle's own example: a model whose shape disagrees with the pipeline (another
    feature count, other classes) fails here, not on a client's request; the scores must match
    example/expected.json to EXAMPLE_TOLERANCE. Returns the largest relative difference."""
    request, expected = loaded.example
    try:
        got = loaded.score_bars(request)
    except Exception as exc:  # noqa: BLE001 - whatever the model or engine raises, the bundle is refused
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise BundleError(
            clip_huge_values(
                f"bundle {loaded.path}: its model cannot score the bundle's own example "
                f"({type(exc).__name__}: {reason}); {contents.REBUILD}"
            )
        ) from None
    columns = [c for c in loaded.output_columns if c not in ("symbol", "ts")]
    symbols = expected.get_column("symbol", default=pl.Series([])).to_list()
    if got.height != expected.height or got["symbol"].to_list() != symbols or not set(columns) <= set(expected.columns):
        raise BundleError(
            f"bundle {loaded.path}: the example scores {got.height} rows, expected.json has "
            f"{expected.height}; rebuild the bundle"
        )
    worst = max(max_relative_difference(got[c].to_numpy(), expected[c].to_numpy()) for c in columns)
    if not worst <= EXAMPLE_TOLERANCE:
        raise BundleError(
            f"bundle {loaded.path}: the example's scores differ from example/expected.json "
            f"by {worst:.3g} relative (allowed {EXAMPLE_TOLERANCE:g}); the libraries differ from the "
            "bundle's versions.json — check them"
        )
    return worst


def describe(manifest: dict[str, Any]) -> str:
    return json.dumps({k: manifest[k] for k in ("bundle_id", "source_run", "model") if k in manifest})
