"""Fake run directories for the `qfactory runs` tests: the manifest.json, metrics.json and
recipe.toml a real run writes, made in microseconds so hundreds of runs cost nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def fake_run(
    root: Path,
    run_id: str,
    created: str,
    *,
    dataset: str = "d",
    model: str = "lightgbm",
    stages: tuple[str, ...] = ("split", "train", "backtest"),
    backtest: dict[str, Any] | None = None,
    test_ic: float = 0.02,
    recipe: str | None = None,
    **manifest: Any,
) -> Path:
    """A run folder; `backtest` is the metrics.json backtest block (omitted when None)."""
    folder = root / run_id
    folder.mkdir(parents=True)
    entries = {
        s: {"status": "done", "seconds": 1.5, "finished": created, **({"model": model} if s == "train" else {})}
        for s in stages
    }
    body = {
        "run_id": run_id,
        "created": created,
        "seed": 42,
        "device": "cpu",
        "qfactory_version": "0.1.0",
        "dataset": {"name": dataset, "version": 0, "content_hash": "x"},
        "stages": entries,
        **manifest,
    }
    (folder / "manifest.json").write_text(json.dumps(body))
    metrics: dict[str, Any] = {
        "val": {"ic": 0.03, "rank_ic": 0.031},
        "test": {"ic": test_ic, "rank_ic": test_ic},
        "train": {"model": model},
    }
    if backtest is not None:
        metrics["backtest"] = backtest
    if "train" in stages:  # a split-only run has no metrics.json
        (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "recipe.toml").write_text(
        recipe or f'[run]\nname = "r"\n[data]\ndataset = "{dataset}"\n[model]\nname = "{model}"\n'
    )
    return folder


def trial(sharpe: float, periods: int | None = 252, **extra: Any) -> dict[str, Any]:
    """A test-segment backtest block: annualised Sharpe over `periods` daily returns."""
    block = {"sharpe": sharpe, "segment": "test", "periods_per_year": 252.0, "skew": 0.0, "kurtosis": 3.0, **extra}
    if periods is not None:
        block["periods"] = periods
    return block


def stamp(i: int) -> str:
    """A creation time; larger i is newer."""
    return f"2026-01-01T00:00:00.{i:06d}+00:00"


def ls_json(runner: Any, *args: str) -> list[dict[str, Any]]:
    """`qfactory runs ls --json ARGS` through the CLI runner: the listed rows (exit 0 asserted)."""
    from quant_cli.cli import app

    result = runner.invoke(app, ["runs", "ls", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)
