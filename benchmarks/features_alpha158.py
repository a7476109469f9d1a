"""Benchmark: the Alpha158 set (158 features) on a synthetic daily panel, qfactory vs pandas.

    .venv/bin/python benchmarks/features_alpha158.py                 # 800 symbols x 3,400 bars
    .venv/bin/python benchmarks/features_alpha158.py --symbols 100 --bars 1000 --skip-store

The panel is the size of Qlib's published data-server benchmark. Each side runs in its own
process (so peak memory is its own) on the same bars read from one parquet file:
- `engine`: quant_cli.features.compute_features, in memory;
- `store`:  the feature-store build behind `qfactory features` (chunked by symbol group, parquet
  parts written, null shares counted) on the same bars ingested as a dataset;
- `pandas`: benchmarks/pandas_alpha158.py, a straightforward groupby().rolling() reference.
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
TOLERANCE = 1e-5


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
    parser.add_argument("--skip-store", action="store_true", help="Skip the feature-store build timing.")
    parser.add_argument("--side", choices=("engine", "store", "pandas"), help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


# --- one side, in its own process -------------------------------------------------------------

def _run_side(args: argparse.Namespace) -> int:
    seconds, rows, columns = {"engine": _engine, "store": _store, "pandas": _pandas}[args.side](args.input, args.output)
    print(json.dumps({"seconds": seconds, "peak_mb": _peak_mb(), "rows": rows, "features": columns}))
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
    started = time.perf_counter()
    table = compute_features(bars, features)
    seconds = time.perf_counter() - started
    table.write_parquet(output)
    return seconds, table.height, table.width - 2


def _store(data_dir: Path, _output: Path) -> tuple[float, int, int]:
    from quant_cli.features.store import feature_table
    from quant_cli.recipe import load_recipe

    recipe = load_recipe(None, ['data.dataset="bench"', 'features.sets=["alpha158"]'])
    started = time.perf_counter()
    table = feature_table(recipe, data_dir)
    return time.perf_counter() - started, table.rows, len(table.columns)


def _pandas(source: Path, output: Path) -> tuple[float, int, int]:
    sys.path.insert(0, str(HERE))
    from pandas_alpha158 import alpha158

    frame = pl.read_parquet(source).to_pandas()
    started = time.perf_counter()
    table = alpha158(frame)
    seconds = time.perf_counter() - started
    pl.from_pandas(table).write_parquet(output)
    return seconds, len(table), table.shape[1] - 2


# --- the comparison ---------------------------------------------------------------------------

def _compare(args: argparse.Namespace, tmp: Path) -> int:
    from quant_cli.data.synthetic import generate

    bars_path = tmp / "bars.parquet"
    generate(symbols=args.symbols, bars=args.bars, seed=args.seed).write_parquet(bars_path)
    print(f"panel: {args.symbols} symbols x {args.bars} bars = {args.symbols * args.bars:,} rows, Alpha158 set", flush=True)
    engine = _side("engine", bars_path, tmp / "engine.parquet")
    pandas = _side("pandas", bars_path, tmp / "pandas.parquet")
    worst = _agreement(tmp / "engine.parquet", tmp / "pandas.parquet")
    store = None if args.skip_store else _store_side(bars_path, tmp)
    _report(engine, store, pandas, worst)
    return 0 if worst[1] <= TOLERANCE else 1


def _side(side: str, source: Path, output: Path) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--input", str(source), "--output", str(output)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {side:<7} {result['seconds']:8.2f} s   peak RSS {result['peak_mb']:7.0f} MiB   {result['features']} features", flush=True)
    return result


def _store_side(bars_path: Path, tmp: Path) -> dict:
    data_dir = tmp / "data"
    ingest = [str(Path(sys.executable).parent / "qfactory"), "ingest", "--source", str(bars_path), "--dataset", "bench",
              "--data-dir", str(data_dir), "--quiet"]
    subprocess.run(ingest, check=True, capture_output=True, text=True)
    return _side("store", data_dir, tmp / "unused")


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


def _report(engine: dict, store: dict | None, pandas: dict, worst: tuple[str, float]) -> None:
    verdict = "agree" if worst[1] <= TOLERANCE else "DISAGREE"
    print(f"values: engine and pandas {verdict} (worst {worst[0]}: {worst[1]:.2e} relative, tolerance {TOLERANCE:g})")
    print(f"speed-up engine vs pandas: {pandas['seconds'] / engine['seconds']:.1f}x")
    if store is not None:
        print(f"speed-up store build vs pandas: {pandas['seconds'] / store['seconds']:.1f}x")
    print(f"peak memory engine / pandas: {engine['peak_mb'] / pandas['peak_mb']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
