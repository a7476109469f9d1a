"""Benchmark: the Alpha158 feature-store build with `--backend ray` vs `local`, side by side.

    .venv/bin/python benchmarks/ray_features.py                                # 800 symbols x 3,400 bars
    .venv/bin/python benchmarks/ray_features.py --symbols 100 --bars 1000 --jobs 2

One synthetic daily panel is ingested twice (two data homes, so neither side reads the other's
cache). `local` is the default build (`qfactory features`: symbol groups one after another in
this process, the next group read and the last part written on background threads); `ray` is
`qfactory features --backend ray --jobs N` (each group a Ray task on a private local Ray
instance of N CPUs). Ray's start-up is timed separately and excluded from the build time
(a cluster is started once, not per build). The two versions are checked to hold the same
tables, part for part, value for value (row hashes of the float bits too); the script exits 1 if
they do not. (Not the parquet bytes: polars' writer lays out large parts differently from one
write to the next, even between two local builds.)
On one machine `ray` can only win by using cores the local build leaves idle; its point is a
cluster, where it adds machines (README: "Scaling out with Ray").
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import polars as pl  # noqa: E402

from quant_cli.backend import open_backend  # noqa: E402
from quant_cli.data.store import write_store  # noqa: E402
from quant_cli.data.synthetic import generate  # noqa: E402
from quant_cli.features.store import feature_table  # noqa: E402
from quant_cli.recipe import load_recipe  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=800)
    parser.add_argument("--bars", type=int, default=3400)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="Ray CPUs (default: all cores).")
    parser.add_argument("--chunk-rows", type=int, default=None, help="Rows per symbol group (default: the store's).")
    args = parser.parse_args()
    recipe = load_recipe(None, ['data.dataset="bench"', 'features.sets=["alpha158"]'])
    with tempfile.TemporaryDirectory(prefix="qf-ray-bench-") as tmp:
        bars = generate(symbols=args.symbols, bars=args.bars, seed=7)
        homes = {side: Path(tmp) / side for side in ("local", "ray")}
        for home in homes.values():
            write_store(home, "bench", bars, "synthetic")
        del bars
        started = time.perf_counter()
        local = feature_table(recipe, homes["local"], args.chunk_rows)
        local_s = time.perf_counter() - started
        started = time.perf_counter()
        with open_backend("ray", args.jobs) as backend:
            ray_start_s = time.perf_counter() - started
            backend.check_shared({"data home": homes["ray"]})
            started = time.perf_counter()
            remote = feature_table(recipe, homes["ray"], args.chunk_rows, backend=backend)
            ray_s = time.perf_counter() - started
        same = same_tables(local.path, remote.path)
        groups = len(parts(local.path))
    print(
        f"Alpha158 feature-store build: {args.symbols} symbols x {args.bars} "
        f"bars, {local.rows:,} rows x {len(local.columns)} features, {groups} "
        "symbol group(s)"
    )
    print(f"{'backend':<8} {'seconds':>9} {'vs local':>9}")
    print(f"{'local':<8} {local_s:>9.2f} {1.0:>8.2f}x")
    print(
        f"{'ray':<8} {ray_s:>9.2f} {local_s / ray_s:>8.2f}x   ({args.jobs} CPUs; "
        f"Ray start-up {ray_start_s:.1f}s not included)"
    )
    print(f"identical tables (every part, value for value): {same}")
    return 0 if same else 1


def parts(folder: Path) -> list[Path]:
    return sorted((folder / "table").glob("part-*.parquet"))


def same_tables(left: Path, right: Path) -> bool:
    """Same part names, and each part the same frame: values equal and row hashes (of the bits) equal."""
    if [p.name for p in parts(left)] != [p.name for p in parts(right)]:
        return False
    for a, b in zip(parts(left), parts(right)):
        fa, fb = pl.read_parquet(a), pl.read_parquet(b)
        if not (fa.equals(fb) and fa.hash_rows(seed=0).equals(fb.hash_rows(seed=0))):
            return False
    return True


if __name__ == "__main__":
    sys.exit(main())
