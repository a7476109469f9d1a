"""`qfactory runs ls` over thousands of runs against reading every file of every run (not a test).

One real run (ingest → split → train → backtest of the quickstart recipe, scaled by --symbols and
--bars) is the template; it is copied --runs times with its own run id, creation time and a
random test-segment Sharpe ratio (so the trial ledger has work to do). Then, each timed
--repeat times (median), with a warm page cache for both:

  runs ls     quant_cli.runs.listing.list_runs: manifest.json + metrics.json of each run
  reference   open and read every file of every run (what a listing that loads runs would pay)

then the same two with this benchmark's files evicted from the page cache before each try (the
first listing of the day, or a runs home on network storage), and once the real command line,
`qfactory runs ls --json`, in a fresh process (imports included).

    python benchmarks/runs_ls.py [--runs 3000] [--symbols 20] [--bars 1500] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from quant_cli import stages
from quant_cli.recipe import load_recipe
from quant_cli.runs.listing import list_runs

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "quickstart.toml"


def template_run(root: Path, symbols: int, bars: int) -> Path:
    recipe = load_recipe(
        RECIPE, [f"data.synthetic.symbols={symbols}", f"data.synthetic.bars={bars}", "train.threads=1"]
    )
    return stages.run_all(recipe, root / "data", root / "template").path


def fake_runs(template: Path, runs_dir: Path, n: int) -> None:
    """n copies of the template, each with its own id, creation time and Sharpe ratio."""
    rng = random.Random(0)
    manifest = json.loads((template / "manifest.json").read_text())
    metrics = json.loads((template / "metrics.json").read_text())
    for i in range(n):
        run_id = f"quickstart-20260101T{i // 3600:02d}{i // 60 % 60:02d}{i % 60:02d}-{i:04x}"
        folder = runs_dir / run_id
        shutil.copytree(template, folder)
        (folder / "manifest.json").write_text(
            json.dumps({**manifest, "run_id": run_id, "created": f"2026-01-01T00:00:00.{i:06d}+00:00"})
        )
        backtest = {
            **metrics.get("backtest", {}),
            "sharpe": rng.gauss(0.0, 1.0),
            "segment": "test",
            "skew": 0.0,
            "kurtosis": 3.0,
        }
        (folder / "metrics.json").write_text(json.dumps({**metrics, "backtest": backtest}))


def read_everything(runs_dir: Path) -> int:
    total = 0
    for folder, _, files in os.walk(runs_dir):
        for name in files:
            with open(os.path.join(folder, name), "rb") as fh:
                total += len(fh.read())
    return total


def evict(runs_dir: Path) -> None:
    """Drop this benchmark's files (only those) from the page cache: the first `ls` of the day."""
    for folder, _, files in os.walk(runs_dir):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def timed(fn, repeat: int, cold_dir: Path | None = None) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        if cold_dir is not None:
            evict(cold_dir)
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--bars", type=int, default=1500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qf-runs-ls-") as tmp:
        root = Path(tmp)
        template = template_run(root, args.symbols, args.bars)
        runs_dir = root / "runs"
        started = time.perf_counter()
        fake_runs(template, runs_dir, args.runs)
        print(
            f"{args.runs} runs of {sum(p.stat().st_size for p in template.rglob('*') if p.is_file()):,} bytes "
            f"({len(list(template.rglob('*')))} entries) each, made in {time.perf_counter() - started:.1f} s"
        )
        read_everything(runs_dir)  # warm the page cache for both sides
        ls_s, rows = timed(lambda: list_runs(runs_dir), args.repeat)
        ref_s, size = timed(lambda: read_everything(runs_dir), args.repeat)
        assert len(rows) == args.runs and rows[0]["n_trials"] == args.runs
        print(f"runs ls (list_runs, with the ledger)  {ls_s:8.3f} s")
        print(f"read every file of every run          {ref_s:8.3f} s   ({size / 1e6:,.0f} MB)")
        print(f"ratio reference / runs ls             {ref_s / ls_s:8.1f}x   (warm page cache)")
        if hasattr(os, "posix_fadvise"):
            cold_ls, _ = timed(lambda: list_runs(runs_dir), args.repeat, runs_dir)
            cold_ref, _ = timed(lambda: read_everything(runs_dir), args.repeat, runs_dir)
            print(
                f"cold cache: runs ls {cold_ls:.3f} s, read every file {cold_ref:.3f} s, "
                f"ratio {cold_ref / cold_ls:.1f}x"
            )
        started = time.perf_counter()
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                "from quant_cli.cli import app; app()",
                "runs",
                "ls",
                "--json",
                "--runs-dir",
                str(runs_dir),
            ],
            capture_output=True,
            check=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        )
        print(
            "`qfactory runs ls --json` in a fresh process: "
            f"{time.perf_counter() - started:.2f} s for {len(json.loads(out.stdout))} runs"
        )


if __name__ == "__main__":
    main()
