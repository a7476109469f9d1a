"""Benchmark: wall time of `qfactory run --recipe recipes/<model>.toml` for each sequence-model recipe, against
the 3-minute budget of issue 19 §5 (on a 2-core CPU).

    .venv/bin/python benchmarks/recipe_times.py                      # every recipe of a sequence model
    .venv/bin/python benchmarks/recipe_times.py --recipes nhits,patchtst

Each recipe runs end to end (ingest of its built-in synthetic data, features, split, train, backtest) as the
real CLI in its own process, in an empty temporary home (data and runs), on CPU. Each process's user + system
CPU seconds are shown beside the wall time: on a busy machine the wall time grows, the CPU time much less.
Over budget is flagged; a recipe over `--timeout` seconds is stopped and reported so.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
BUDGET_S = 180.0
QFACTORY = [sys.executable, "-c", "from quant_cli.cli import app; app()"]


def sequence_recipes() -> list[str]:
    """Names of the recipes in recipes/ whose model reads feature windows."""
    from quant_cli.models.registry import model_class

    names = []
    for path in sorted(RECIPES.glob("*.toml")):
        model = tomllib.loads(path.read_text()).get("model", {}).get("name")
        if model and path.stem == model and getattr(model_class(model), "sequence", False):
            names.append(path.stem)
    return names


def time_recipe(name: str, timeout: float) -> tuple[float, float, int | None]:
    """(wall seconds, CPU seconds of the child, exit code or None when stopped at the timeout)."""
    with tempfile.TemporaryDirectory(prefix=f"qf-recipe-{name}-") as home:
        command = [*QFACTORY, "run", "--recipe", str(RECIPES / f"{name}.toml"), "--quiet", "--device", "cpu"]
        command += ["--data-dir", f"{home}/data", "--runs-dir", f"{home}/runs"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        try:
            code: int | None = subprocess.run(command, env=env, capture_output=True, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            code = None
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return wall, cpu, code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", help="comma-separated recipe names (default: every sequence-model recipe)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="stop a recipe after this many seconds")
    args = parser.parse_args()
    names = args.recipes.split(",") if args.recipes else sequence_recipes()
    print(f"{os.cpu_count()} CPU(s); load average 1 min at the start: {os.getloadavg()[0]:.1f}")
    print(f"| recipe | wall s | CPU s | budget {BUDGET_S:.0f} s | load 1 min |")
    print("|---|---|---|---|---|")
    over = 0
    for name in names:
        wall, cpu, code = time_recipe(name, args.timeout)
        verdict = (
            "within"
            if code == 0 and wall <= BUDGET_S
            else "OVER"
            if code == 0
            else (f"stopped after {args.timeout:.0f} s" if code is None else f"FAILED (exit {code})")
        )
        over += verdict != "within"
        print(f"| {name} | {wall:.0f} | {cpu:.0f} | {verdict} | {os.getloadavg()[0]:.1f} |", flush=True)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
