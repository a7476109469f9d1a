"""The GPU path, measured (issue 22); run through benchmarks/gpu_check.sh on a machine with one CUDA GPU.

For recipes/lstm.toml and recipes/transformer.toml (the quickstart panel, 20 symbols x 1,500 bars),
each through the real CLI with `--device cuda --strict-device` and `--set train.epochs=E`:

    fp32            precision = "fp32", compile off
    auto            precision = "auto" (bf16 where the GPU has it, else fp16 + GradScaler), compile off
    auto+compile    precision = "auto", compile on
    cpu             --device cpu, train.epochs=1 (the smaller slice: one epoch; samples/s is per sample)

samples/s is the median epoch throughput (training + validation scoring) over epochs 2..E (epoch 1
carries warm-up and compilation), or epoch 1 when only one ran; "x cpu" divides by the cpu row.
peak MiB is torch.cuda.max_memory_allocated during the fit (metrics.json train.peak_cuda_memory_mb).
For the `auto` run (the recipe as shipped): the run is bundled, `qfactory bundle verify` checks it,
and `qfactory predict --all` scores the dataset with the bundle on CPU; the table gives the Pearson
correlation of those CPU scores with the GPU run's test scores (predictions.parquet, scored on the
GPU in fp32) and the largest absolute difference. Pass: correlation >= 0.999.

Exits 0 with one line when no CUDA device is visible (nothing to measure), 1 when a check fails.
`--device cpu --modes fp32,auto --shrink` runs every step on a CPU (small panel) to check the script itself.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ("lstm", "transformer")
MODES = {"fp32": ['train.precision="fp32"'], "auto": [], "auto+compile": ["train.compile=true"]}
MIN_CORR = 0.999


def cli(*args: str, home: Path) -> dict:
    """One qfactory command with --json; its JSON object (exits on failure with the command's line)."""
    command = [
        sys.executable,
        "-c",
        "from quant_cli.cli import app; app()",
        *args,
        "--json",
        "-q",
        "--data-dir",
        str(home / "data"),
    ]
    if args[0] in ("train", "bundle") and "verify" not in args:
        command += ["--runs-dir", str(home / "runs")]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"}, check=False)
    if done.returncode != 0:
        sys.exit(
            f"gpu_check: `qfactory {' '.join(args)}` failed (exit {done.returncode}): {done.stderr.strip()[-400:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def throughput(run: Path) -> float:
    epochs = json.loads((run / "model" / "history.json").read_text())["epochs"]
    rates = [e["samples_per_s"] for e in epochs[1:]] or [e["samples_per_s"] for e in epochs]
    return statistics.median(rates)


def parity(run: Path, home: Path, dataset: str) -> tuple[float, float, str]:
    """(corr of CPU bundle scores with the GPU run's test scores, max |diff|, bundle verify result)."""
    import polars as pl

    bundle = Path(cli("bundle", "--run", str(run), home=home)["path"])
    verify = subprocess.run(
        [sys.executable, "-c", "from quant_cli.cli import app; app()", "bundle", "verify", str(bundle)],
        capture_output=True,
        text=True,
        check=False,
    )
    scores = home / f"{run.name}-cpu.parquet"
    cli("predict", "--bundle", str(bundle), "--source", dataset, "--out", str(scores), "--all", home=home)
    gpu = pl.read_parquet(run / "predictions.parquet").filter(pl.col("segment") == "test")
    gpu = gpu.select("symbol", "ts", "score")
    both = gpu.join(pl.read_parquet(scores).select("symbol", "ts", pl.col("score").alias("cpu")), on=["symbol", "ts"])
    if both.height == 0:
        sys.exit(f"gpu_check: the CPU bundle scores share no (symbol, ts) with the test scores of {run}")
    corr = both.select(pl.corr("score", "cpu")).item()
    diff = both.select((pl.col("score") - pl.col("cpu")).abs().max()).item()
    return corr, diff, "ok" if verify.returncode == 0 else f"FAILED: {verify.stderr.strip()[:80]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per GPU run (default 3)")
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated recipe names under recipes/")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated GPU runs: fp32, auto, auto+compile")
    parser.add_argument("--device", default="cuda", help="cuda (the check), or cpu to dry-run the script")
    parser.add_argument("--shrink", action="store_true", help="3 symbols x 700 bars instead of the recipes' panel")
    args = parser.parse_args()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        build = torch.version.cuda or "none"
        print(
            f"gpu_check: no CUDA device visible (torch {torch.__version__}, CUDA build {build}); "
            "nothing to measure — run it on a machine with a GPU"
        )
        return 0
    card = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"{args.device} (dry run)"
    shrink = ["data.synthetic.symbols=3", "data.synthetic.bars=700"] if args.shrink else []
    device = ["--device", args.device, *(["--strict-device"] if args.device.startswith("cuda") else [])]
    started, rows, failed = time.perf_counter(), [], False
    with tempfile.TemporaryDirectory(prefix="qfactory-gpu-check-") as tmp:
        home = Path(tmp)
        for name in args.recipes.split(","):
            recipe = str(ROOT / "recipes" / f"{name}.toml")
            cli("ingest", "--recipe", recipe, *[x for s in shrink for x in ("--set", s)], home=home)
            epochs = [f"train.epochs={args.epochs}", "train.patience=0", *shrink]
            cpu_sets = [x for s in ["train.epochs=1", *shrink] for x in ("--set", s)]
            cpu_run = Path(cli("train", "--recipe", recipe, "--device", "cpu", *cpu_sets, home=home)["path"])
            cpu_rate = throughput(cpu_run)
            rows.append((name, "cpu", "fp32", cpu_rate, 1.0, None, None, None, "-"))
            for mode in args.modes.split(","):
                flags = [x for s in [*epochs, *MODES[mode]] for x in ("--set", s)]
                out = cli("train", "--recipe", recipe, *device, *flags, home=home)
                run, train = Path(out["path"]), out["metrics"]["train"]
                rate = throughput(run)
                corr = diff = None
                verified = "-"
                if mode == "auto":
                    corr, diff, verified = parity(run, home, "quickstart")
                    failed |= corr < MIN_CORR or verified != "ok"
                rows.append(
                    (
                        name,
                        mode,
                        train.get("precision", "?"),
                        rate,
                        rate / cpu_rate,
                        train.get("peak_cuda_memory_mb"),
                        corr,
                        diff,
                        verified,
                    )
                )
    print_table(card, rows, time.perf_counter() - started)
    return 1 if failed else 0


def print_table(card: str, rows: list[tuple], seconds: float) -> None:
    header = ("recipe", "run", "precision", "samples/s", "x cpu", "peak MiB", "corr cpu", "max |diff|", "bundle")
    body = [
        (
            r[0],
            r[1],
            r[2],
            f"{r[3]:,.0f}",
            f"{r[4]:.1f}",
            "-" if r[5] is None else f"{r[5]:,.0f}",
            "-" if r[6] is None else f"{r[6]:.6f}",
            "-" if r[7] is None else f"{r[7]:.2e}",
            r[8],
        )
        for r in rows
    ]
    widths = [max(len(c) for c in col) for col in zip(header, *body)]
    print(f"gpu_check on {card} ({seconds:.0f} s); pass: corr cpu >= {MIN_CORR} and bundle ok")
    for line in (header, *body):
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
