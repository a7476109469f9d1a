"""Write and read times of the Delta bar store against the old hive-parquet store (not a test).

The reference is the store before issue 9: one `symbol=<S>/part-0.parquet` per symbol, written
into a staging folder, a SHA-256 over the file bytes, one rename. The Delta store's write
includes everything an ingest commit does (value hash per symbol, commit, per-version manifest).

    python benchmarks/store_delta.py [--symbols 800] [--bars 3400]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import polars as pl

from quant_cli.data import store
from quant_cli.data.synthetic import generate


def old_write(root: Path, bars: pl.DataFrame) -> None:
    staging = root / ".staging-bars"
    for (symbol,), part in bars.partition_by("symbol", as_dict=True, maintain_order=True).items():
        path = staging / f"symbol={quote(str(symbol), safe='')}" / "part-0.parquet"
        path.parent.mkdir(parents=True)
        part.sort("ts").write_parquet(path, statistics=True)
    digest = hashlib.sha256()
    for path in sorted(staging.rglob("*.parquet")):
        digest.update(str(path.relative_to(staging)).encode())
        digest.update(path.read_bytes())
    os.replace(staging, root / "bars")


def old_read(root: Path, symbols: list[str] | None = None) -> pl.DataFrame:
    bars = root / "bars"
    if symbols:
        files = [bars / f"symbol={quote(s, safe='')}" / "part-0.parquet" for s in symbols]
        return pl.scan_parquet(files, hive_partitioning=False).collect().sort("symbol", "ts")
    return pl.scan_parquet(bars / "*" / "*.parquet", hive_partitioning=False).collect().sort("symbol", "ts")


def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=800)
    parser.add_argument("--bars", type=int, default=3400)
    args = parser.parse_args()
    bars = generate(symbols=args.symbols, bars=args.bars)
    some = sorted(set(bars["symbol"]))[:: max(1, args.symbols // 50)][:50]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        counter = iter(range(1000))
        old_w = timed(lambda: old_write(tmp / f"old{next(counter)}", bars), repeat=1)
        new_w = timed(lambda: store.write_store(tmp / "delta", f"d{next(counter)}", bars, "synthetic"), repeat=1)
        old_root = next(tmp.glob("old*"))
        dataset = next(p.name for p in (tmp / "delta").iterdir())
        snap = store.pin(tmp / "delta", dataset)
        assert snap.load_bars().equals(old_read(old_root))
        rows = [
            ("write all", old_w, new_w),
            ("read all", timed(lambda: old_read(old_root)), timed(lambda: snap.load_bars())),
            (
                f"read {len(some)} symbols",
                timed(lambda: old_read(old_root, some)),
                timed(lambda: snap.load_bars(symbols=some)),
            ),
            ("pin latest", float("nan"), timed(lambda: store.pin(tmp / "delta", dataset))),
        ]
    print(f"{args.symbols} symbols x {args.bars} bars = {bars.height:,} rows (best of 3 reads, one write)")
    print(f"{'operation':<18}{'old store s':>12}{'delta s':>10}{'delta/old':>11}")
    for name, old, new in rows:
        print(f"{name:<18}{old:>12.3f}{new:>10.3f}{new / old:>11.2f}")


if __name__ == "__main__":
    main()
