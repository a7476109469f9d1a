"""Benchmark: peak memory and time outside the model fit of `split` and `train --run` (issue 9 §6).

    .venv/bin/python benchmarks/run_memory.py                     # 800 symbols x 3,400 daily bars
    .venv/bin/python benchmarks/run_memory.py --symbols 200 --bars 3400 --estimators 50

A synthetic daily panel (Qlib's benchmark size by default) is ingested into a temporary store,
then each stage runs in its own process, so its peak RSS (VmHWM from /proc/self/status) is its
own: `features` (the Alpha158 build, cold cache), `split` (features from the cache, labels,
split plan, fitted pipeline), `train --run` (the stored split and cached features; LightGBM).
Printed against the targets: peak RSS <= 4 GiB for split and train, and <= 30 s outside the
model fit for split + train. The fit itself is reported apart: it costs the same in any tool.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GIB = 1024**3
TARGET_RSS_GIB = 4.0
TARGET_OUTSIDE_FIT_S = 30.0


def main() -> int:
    args = _parse()
    if args.side:
        print(json.dumps(_run_side(args)))
        return 0
    with tempfile.TemporaryDirectory(prefix="qf-runmem-") as tmp:
        return _report(args, Path(tmp))


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=800)
    parser.add_argument("--bars", type=int, default=3400)
    parser.add_argument("--estimators", type=int, default=100, help="LightGBM rounds (the fit is timed apart)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--side", choices=("ingest", "features", "split", "train"), help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def _recipe(args: argparse.Namespace) -> object:
    from quant_cli.recipe import load_recipe

    return load_recipe(
        None,
        [
            'run.name="bench"',
            'data.dataset="bench"',
            'features.sets=["alpha158"]',
            f"model.params.n_estimators={args.estimators}",
            f"train.threads={args.threads}",
            "train.early_stopping=0",
        ],
    )


def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _run_side(args: argparse.Namespace) -> dict:
    from quant_cli import stages
    from quant_cli.data.store import write_store
    from quant_cli.data.synthetic import generate
    from quant_cli.features.store import feature_table

    data, runs = args.home / "data", args.home / "runs"
    started = time.perf_counter()
    out: dict = {}
    if args.side == "ingest":
        write_store(data, "bench", generate(symbols=args.symbols, bars=args.bars, seed=7), "synthetic")
    elif args.side == "features":
        out["rows"] = feature_table(_recipe(args), data).rows
    elif args.side == "split":
        out["run"] = str(stages.new_split_run(_recipe(args), data, runs).path)
    else:
        from quant_cli.runs.directory import resolve_run

        run = stages.train_existing(resolve_run("latest", runs), data).run
        out["fit_s"] = run.manifest()["stages"]["train"]["seconds_fit"]
    return {**out, "seconds": time.perf_counter() - started, "peak_rss": _peak_rss()}


def _side(args: argparse.Namespace, home: Path, side: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--side",
        side,
        "--home",
        str(home),
        "--symbols",
        str(args.symbols),
        "--bars",
        str(args.bars),
        "--estimators",
        str(args.estimators),
        "--threads",
        str(args.threads),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"{side} failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _report(args: argparse.Namespace, home: Path) -> int:
    print(
        f"panel: {args.symbols} symbols x {args.bars} bars = "
        f"{args.symbols * args.bars:,} rows, Alpha158, LightGBM {args.estimators} rounds"
    )
    results = {side: _side(args, home, side) for side in ("ingest", "features", "split", "train")}
    outside = results["split"]["seconds"] + results["train"]["seconds"] - results["train"]["fit_s"]
    for side, r in results.items():
        extra = f", of which fit {r['fit_s']:.1f} s" if "fit_s" in r else ""
        print(f"{side:>9}: {r['seconds']:7.1f} s{extra}, peak RSS {r['peak_rss'] / GIB:5.2f} GiB")
    ok = (
        all(results[s]["peak_rss"] / GIB <= TARGET_RSS_GIB for s in ("split", "train"))
        and outside <= TARGET_OUTSIDE_FIT_S
    )
    print(
        f"split + train outside the fit: {outside:.1f} s (target <= {TARGET_OUTSIDE_FIT_S:.0f} s); "
        f"peak RSS split {results['split']['peak_rss'] / GIB:.2f} / train {results['train']['peak_rss'] / GIB:.2f} GiB "
        f"(target <= {TARGET_RSS_GIB:.0f} GiB each) -> {'met' if ok else 'NOT met'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
