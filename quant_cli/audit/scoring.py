"""Look-ahead in scoring: the run's FittedPipeline and model score every bar of the run's data, then
the same bars with everything after a cutoff rewritten (audit/rewrite.py); every score at or before
the cutoff must be identical. Scoring goes through `LoadedBundle.score_bars` — the path batch predict,
bundles and the server use — so a feature, a fill, a scaler or a model window that reads past t shows
here as a moved score.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl

from quant_cli.audit.compare import compare_scores
from quant_cli.audit.rewrite import rewrite_after
from quant_cli.models.base import Model
from quant_cli.pipeline import lookback
from quant_cli.pipeline.fitted import FittedPipeline
from quant_cli.report import SILENT, Reporter
from quant_cli.serve.loaded import InputSpec, LoadedBundle


def choose_cutoffs(predictions: pl.DataFrame, count: int) -> list[dt.datetime]:
    """`count` timestamps spread evenly through the run's scored (val and test) timestamps."""
    stamps = predictions["ts"].unique().sort()
    if stamps.len() < 2:
        return []
    picks = sorted({min(stamps.len() - 2, (k * stamps.len()) // (count + 1)) for k in range(1, count + 1)})
    return [stamps[i] for i in picks]


def scorer(run_path: Path, pipeline: FittedPipeline, model: Model) -> LoadedBundle:
    """The run's pipeline and model as a bundle would load them, scoring every bar it can."""
    spec = InputSpec(
        required_bars=1, columns=[], window=lookback.model_window(model), timeframes=lookback.channel_timeframes(model)
    )
    return LoadedBundle(run_path, {"bundle_id": "audit"}, pipeline, model, spec)


def scoring_checks(
    loaded: LoadedBundle, bars: pl.DataFrame, cutoffs: list[dt.datetime], seed: int, reporter: Reporter = SILENT
) -> list[dict[str, Any]]:
    """One check per cutoff: rows compared, differing rows, the first of them."""
    original = loaded.score_bars(bars, every_bar=True)
    checks = []
    for i, cutoff in enumerate(
        reporter.track(cutoffs, "audit: re-scoring with the future rewritten", total=len(cutoffs))
    ):
        rewritten = loaded.score_bars(rewrite_after(bars, cutoff, seed + i), every_bar=True)
        before = pl.col("ts") <= cutoff
        result = compare_scores(original.filter(before), rewritten.filter(before))
        checks.append(
            {
                "name": f"scoring at cutoff {cutoff.isoformat()}",
                "cutoff": cutoff.isoformat(),
                "passed": result["differing"] == 0,
                **result,
            }
        )
    return checks
