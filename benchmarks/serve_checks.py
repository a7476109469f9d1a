"""Benchmark: what the per-request serving checks of issue 21 §4 cost beside scoring, same run.

    PYTHONPATH=. .venv/bin/python benchmarks/serve_checks.py                 # builds a small bundle
    PYTHONPATH=. .venv/bin/python benchmarks/serve_checks.py --bundle B --repeat 2000

A request to `/predict` is now also checked for its bars' spacing (LoadedBundle.check_spacing:
each symbol's median spacing against the training bars', numpy on the sorted request) and, for a
cross-sectional bundle, for symbols outside the universe (a set comparison in check_bars). Printed:
microseconds per call (process CPU time and wall time) of check_spacing and of the whole
score_bars on the bundle's own example, and their ratio. Without --bundle, a LightGBM bundle on the
core features (4 symbols x 600 daily bars, as the tests make) is built in a temporary folder.
Also printed: the time `load` takes (hashes, documents, model, the example scored), per call.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def _timed(work, repeat: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per call, after one warm-up call."""
    work()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(repeat):
        work()
    return (time.process_time() - cpu) / repeat * 1e6, (time.perf_counter() - wall) / repeat * 1e6


def _built(root: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from serving import train

    from quant_cli import stages

    trained = train(root)
    return stages.bundle_existing(trained.run, trained.data_dir).bundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="a bundle folder or .tar.gz (default: build a small one)")
    parser.add_argument("--repeat", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from quant_cli.serve.bundle import load

    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle or _built(Path(tmp))
        loaded = load(bundle)
        request = loaded.example[0]
        ordered = request.sort("symbol", "ts")
        spacing = _timed(lambda: loaded.check_spacing(ordered), args.repeat)
        scoring = _timed(lambda: loaded.score_bars(request), max(10, args.repeat // 50))
        loading = _timed(lambda: load(bundle), 5)
    out = {
        "rows": request.height,
        "check_spacing_us": spacing,
        "score_bars_us": scoring,
        "load_us": loading,
        "check_share_cpu": spacing[0] / scoring[0],
    }
    if args.json:
        print(json.dumps(out))
        return
    print(f"example: {request.height} bars")
    for name, (cpu, wall) in (("check_spacing", spacing), ("score_bars", scoring), ("load", loading)):
        print(f"{name:>14}: {cpu:12,.0f} µs CPU {wall:12,.0f} µs wall per call")
    print(f"check_spacing / score_bars (CPU): {out['check_share_cpu']:.2%}")


if __name__ == "__main__":
    main()
