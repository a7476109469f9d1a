"""What each stage function returns: the run it wrote and the numbers the command prints, exactly as
the stage wrote them into the run's files (`as_written`: NaN as null), so `--json` prints the same
object as reading metrics.json would, without reading it back."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quant_cli.dataset.table import Prepared
from quant_cli.io import to_json_finite
from quant_cli.runs.directory import Run


def as_written(obj: Any) -> Any:
    """`obj` as a JSON file written by io.write_json_atomic reads back (NaN/inf as None, other values as text)."""
    return json.loads(to_json_finite(obj))


@dataclass(frozen=True)
class StageResult:
    run: Run

    @property
    def path(self) -> Path:
        """The run directory: what every stage command prints on stdout."""
        return self.run.path

    @property
    def id(self) -> str:
        return self.run.id


@dataclass(frozen=True)
class SplitResult(StageResult):
    boundaries: dict[str, Any]  # split/boundaries.json
    cv: dict[str, Any] | None  # n_splits, n_paths of purged k-fold / CPCV folds; None when chronological
    prepared: Prepared = field(repr=False, compare=False)  # the split in memory, for the stages that continue


@dataclass(frozen=True)
class TrainResult(StageResult):
    metrics: dict[str, Any]  # the run's metrics.json: val/test (and cv, train; backtest after `run`)


@dataclass(frozen=True)
class BacktestResult(StageResult):
    backtest: dict[str, Any]  # metrics.json's backtest block


@dataclass(frozen=True)
class ReportResult(StageResult):
    reports: list[Path]  # the report.html files written


@dataclass(frozen=True)
class BundleResult(StageResult):
    bundle: Path  # the bundle folder, or its .tar.gz with --archive
    bundle_id: str


@dataclass(frozen=True)
class WalkforwardResult(StageResult):
    walkforward: dict[str, Any]  # metrics.json's walkforward block
