"""Benchmark: the Alpha158 set (158 features) on a synthetic daily panel: the compiled kernels vs
the polars engine they replaced vs pandas, all in the same run on the same data.

    .venv/bin/python benchmarks/features_alpha158.py                 # 800 symbols x 3,400 bars
    .venv/bin/python benchmarks/features_alpha158.py --symbols 100 --bars 1000 --skip-store

The panel is the size of Qlib's published data-server benchmark. Each side runs in its own
process (so peak memory is its own) on the same bars read from one parquet file:
- `engine`: quant_cli.features.compute_features, in memory (the compiled kernels), timed after one
  call on 200 rows (numba's import and the load of its on-disk cache: ~2-4 s, counted by `cli`);
- `baseline`: the same call on the code of `--baseline` (default: the last commit before the
  kernels, whose engine ran polars expressions), unpacked with `git archive` into a temporary folder;
- `pandas`: benchmarks/pandas_alpha158.py, a straightforward groupby().rolling() reference;
- `cli` / `cli-baseline` (unless --skip-store): `qfactory features` end to end, a fresh process
  each (imports, numba's on-disk cache, chunked build, parquet parts, spec.json) on the same bars
  ingested as a dataset; each side first builds a tiny dataset untimed, so numba's one-off
  compilation (cached on disk once per machine) is not counted.
Before any time is compared, the engine's and pandas' tables are checked to hold the same
numbers (same nulls, values within 1e-5 relative); the script exits 1 if they do not. Not
tighter: on near-flat 5-bar windows (RSQR5, CORR5) both libraries' rolling variances lose about
1e-6 relative to cancellation against the price level, each in its own way.
Times are wall-clock seconds of the feature computation only (reading the input is excluded).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TOLERANCE = 1e-5
_CPU = [0.0]  # CPU seconds (all threads) of the timed part: steadier than wall time on a shared machine
BASELINE = "9610d2afb411eb2cdb2ab1f98b21179b9a70c34e"  # main before the compiled kernels (polars engine)


def main() -> int:
    args = _parse()
    if args.side:
        return _run_side(args)
    with tempfile.TemporaryDirectory(prefix="qf-bench-") as tmp:
        return _compare(args, Path(tmp))


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=800)
    parser.add_argument("--bars", type=int, default=3400)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-store", action="store_true", help="Skip the `qfactory features` end-to-end timings.")
    parser.add_argument("--baseline", default=BASELINE, help="git revision whose engine is the baseline.")
    parser.add_argument("--side", choices=("engine", "pandas"), help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


# --- one side, in its own process -------------------------------------------------------------


def _run_side(args: argparse.Namespace) -> int:
    seconds, rows, columns = {"engine": _engine, "pandas": _pandas}[args.side](args.input, args.output)
    print(
        json.dumps(
            {"seconds": seconds, "cpu_seconds": _CPU[0], "peak_mb": _peak_mb(), "rows": rows, "features": columns}
        )
    )
    return 0


def _peak_mb() -> float:
    """This process's peak resident memory, MiB.

    VmHWM belongs to the process's own address space; ru_maxrss is not used where VmHWM exists
    because Linux carries the parent's high-water mark into a child through fork + exec.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, bytes on macOS


def _selection():
    from quant_cli.features import REGISTRY

    return REGISTRY.resolve({"sets": ["alpha158"]}).features


def _engine(source: Path, output: Path) -> tuple[float, int, int]:
    from quant_cli.features import compute_features

    bars, features = pl.read_parquet(source), _selection()
    compute_features(bars.head(200), features)  # imports numba and loads its cached kernels (the CLI side counts it)
    started, cpu = time.perf_counter(), time.process_time()
    table = compute_features(bars, features)
    seconds, _CPU[0] = time.perf_counter() - started, time.process_time() - cpu
    table.write_parquet(output)
    return seconds, table.height, table.width - 2


def _pandas(source: Path, output: Path) -> tuple[float, int, int]:
    sys.path.insert(0, str(HERE))
    from pandas_alpha158 import alpha158

    frame = pl.read_parquet(source).to_pandas()
    started, cpu = time.perf_counter(), time.process_time()
    table = alpha158(frame)
    seconds, _CPU[0] = time.perf_counter() - started, time.process_time() - cpu
    pl.from_pandas(table).write_parquet(output)
    return seconds, len(table), table.shape[1] - 2


# --- the comparison ---------------------------------------------------------------------------


def _compare(args: argparse.Namespace, tmp: Path) -> int:
    from quant_cli.data.synthetic import generate

    bars_path = tmp / "bars.parquet"
    generate(symbols=args.symbols, bars=args.bars, seed=args.seed).write_parquet(bars_path)
    baseline = _unpack(args.baseline, tmp / "baseline")
    print(
        f"panel: {args.symbols} symbols x {args.bars} bars = {args.symbols * args.bars:,} rows, Alpha158 set; "
        f"baseline {args.baseline[:10]}",
        flush=True,
    )
    engine = _side("engine", bars_path, tmp / "engine.parquet", ROOT)
    before = _side("engine", bars_path, tmp / "baseline.parquet", baseline, label="baseline")
    pandas = _side("pandas", bars_path, tmp / "pandas.parquet", ROOT)
    worst = _agreement(tmp / "engine.parquet", tmp / "pandas.parquet")
    worst_baseline = _agreement(tmp / "engine.parquet", tmp / "baseline.parquet")
    cli = None if args.skip_store else _cli_sides(bars_path, tmp, baseline)
    _report(engine, before, pandas, cli, worst, worst_baseline)
    return 0 if max(worst[1], worst_baseline[1]) <= TOLERANCE else 1


def _unpack(revision: str, folder: Path) -> Path:
    """The package as it was at `revision` (git archive: the repository itself is not touched)."""
    folder.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "quant_cli"], check=True, capture_output=True
    )
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def _env(code: Path) -> dict[str, str]:
    import os  # noqa: PLC0415

    return {**os.environ, "PYTHONPATH": str(code)}


def _side(side: str, source: Path, output: Path, code: Path, label: str | None = None) -> dict:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--side",
        side,
        "--input",
        str(source),
        "--output",
        str(output),
    ]
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=_env(code))
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"  {label or side:<12} {result['seconds']:8.2f} s ({result['cpu_seconds']:6.2f} CPU-s)   "
        f"peak RSS {result['peak_mb']:7.0f} MiB   {result['features']} features",
        flush=True,
    )
    return result


def _cli_sides(bars_path: Path, tmp: Path, baseline: Path) -> dict[str, float]:
    """Seconds of `qfactory features` end to end (a fresh process), current code and baseline."""
    qfactory = str(Path(sys.executable).parent / "qfactory")
    data_dir = tmp / "data"
    tiny = tmp / "tiny.parquet"
    pl.read_parquet(bars_path).filter(pl.col("symbol").is_in(["S000", "S001"])).head(400).write_parquet(tiny)
    for source, dataset in ((bars_path, "bench"), (tiny, "tiny")):
        ingest = [
            qfactory,
            "ingest",
            "--source",
            str(source),
            "--dataset",
            dataset,
            "--data-dir",
            str(data_dir),
            "--quiet",
        ]
        subprocess.run(ingest, check=True, capture_output=True, text=True, env=_env(ROOT))
    recipe = tmp / "alpha158.toml"
    recipe.write_text('[data]\ndataset = "bench"\n[features]\nsets = ["alpha158"]\n', encoding="utf-8")
    times = {}
    for label, code in (("cli", ROOT), ("cli-baseline", baseline)):
        for dataset in ("tiny", "bench"):  # tiny first, untimed: numba's one-off compilation is cached on disk
            command = [
                qfactory,
                "features",
                "--recipe",
                str(recipe),
                "--set",
                f'data.dataset="{dataset}"',
                "--data-dir",
                str(data_dir),
                "--quiet",
            ]
            started = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, text=True, env=_env(code))
            times[label] = time.perf_counter() - started
        print(f"  {label:<12} {times[label]:8.2f} s   (qfactory features, end to end)", flush=True)
    return times


def _agreement(ours_path: Path, reference_path: Path) -> tuple[str, float]:
    """(feature, worst relative difference) over every value; a null-pattern mismatch counts as inf."""
    ours, ref = pl.read_parquet(ours_path), pl.read_parquet(reference_path)
    worst = ("", 0.0)
    for name in ours.columns[2:]:
        a, b = ours[name].to_numpy().astype(float), ref[name].to_numpy().astype(float)
        b = np.where(np.isfinite(b), b, np.nan)  # the engine turns inf into null; so does this check
        if not np.array_equal(np.isnan(a), np.isnan(b)):
            return name, float("inf")
        both = ~np.isnan(a)
        rel = np.abs(a[both] - b[both]) / np.maximum(1.0, np.abs(b[both]))
        if rel.size and rel.max() > worst[1]:
            worst = (name, float(rel.max()))
    return worst


def _report(
    engine: dict,
    before: dict,
    pandas: dict,
    cli: dict[str, float] | None,
    worst: tuple[str, float],
    worst_baseline: tuple[str, float],
) -> None:
    for other, (name, diff) in (("pandas", worst), ("baseline", worst_baseline)):
        verdict = "agree" if diff <= TOLERANCE else "DISAGREE"
        print(f"values: engine and {other} {verdict} (worst {name}: {diff:.2e} relative, tolerance {TOLERANCE:g})")
    for other, side in (("pandas", pandas), ("baseline engine", before)):
        print(
            f"speed-up engine vs {other}: {side['seconds'] / engine['seconds']:.1f}x wall, "
            f"{side['cpu_seconds'] / engine['cpu_seconds']:.1f}x CPU"
            + (" (target >= 20x)" if other == "pandas" else "")
        )
    if cli is not None:
        ratio = cli["cli-baseline"] / cli["cli"]
        print(f"speed-up qfactory features vs baseline, end to end: {ratio:.1f}x (target >= 3x)")
    print(f"peak memory engine / pandas: {engine['peak_mb'] / pandas['peak_mb']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
