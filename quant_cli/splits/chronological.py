"""Chronological train/val/test split by timestamp across the whole panel, purged and embargoed.

Boundaries are timestamps shared by every symbol, so no symbol's future informs another's past.
- Purge: a row whose label interval [t, t1] reaches the next segment's first timestamp is excluded.
- Embargo: the first `embargo` timestamps from each boundary are excluded from the later segment,
  so serial correlation cannot carry the earlier segment's last labels into it (the one rule and
  default of quant_cli.splits.embargo: purging ends the earlier labels before the boundary, so
  the embargo counts from it).
Excluded rows are marked (`excluded` = "purged" / "embargoed" / "unlabelled"), not deleted: they
stay in the table because later sequence windows need them as past inputs, never as labels.
Preprocessing statistics are fit on the training segment only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl

from quant_cli.data.store import parse_time
from quant_cli.errors import DataError, RecipeError
from quant_cli.splits.embargo import ONE_US, default_embargo, embargo_end

SEGMENTS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitPlan:
    val_start: dt.datetime
    test_start: dt.datetime
    embargo: int | str  # bars, or a duration such as "5d"
    purge: bool

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "val_start": self.val_start.isoformat(), "test_start": self.test_start.isoformat()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SplitPlan:
        return cls(
            val_start=parse_time(data["val_start"], "split.val_start"),
            test_start=parse_time(data["test_start"], "split.test_start"),
            embargo=data["embargo"],
            purge=bool(data["purge"]),
        )


def plan_split(timestamps: pl.Series, cfg: dict[str, Any], horizon: int) -> SplitPlan:
    """Boundaries from fractions of the unique timestamps, or from explicit dates."""
    unique = timestamps.unique().sort()
    embargo = default_embargo(cfg["embargo"], horizon)
    if cfg["val_start"] or cfg["test_start"]:
        val_start, test_start = explicit_boundaries(cfg)
    else:
        val_start, test_start = _fraction_boundaries(unique, cfg["train"], cfg["val"])
    plan = SplitPlan(val_start, test_start, embargo, cfg["purge"])
    _check_nonempty(unique, plan)
    return plan


def explicit_boundaries(cfg: dict[str, Any]) -> tuple[dt.datetime, dt.datetime]:
    if not (cfg["val_start"] and cfg["test_start"]):
        raise RecipeError("split.val_start and split.test_start must be given together; set both or neither")
    val_start = parse_time(cfg["val_start"], "split.val_start")
    test_start = parse_time(cfg["test_start"], "split.test_start")
    if not val_start <= test_start:
        raise RecipeError(
            f"split.val_start ({val_start:%Y-%m-%d}) must not be after split.test_start ({test_start:%Y-%m-%d})"
        )
    return val_start, test_start


def _fraction_boundaries(unique: pl.Series, train: float, val: float) -> tuple[dt.datetime, dt.datetime]:
    if train + val >= 1.0:
        raise RecipeError(f"split.train + split.val must be below 1 so a test segment remains, got {train} + {val}")
    n = unique.len()
    val_index, test_index = int(round(n * train)), int(round(n * (train + val)))
    return unique[min(val_index, n - 1)], unique[min(test_index, n - 1)]


def _check_nonempty(unique: pl.Series, plan: SplitPlan) -> None:
    train_ts = unique.filter(unique < plan.val_start).len()
    test_ts = unique.filter(unique > embargo_until(unique, plan.test_start, plan.embargo)).len()
    if train_ts <= (plan.embargo if isinstance(plan.embargo, int) else 0) or test_ts == 0:
        raise DataError(
            f"split leaves {train_ts} training and {test_ts} test timestamps, too few for an embargo of "
            f"{plan.embargo!r} bars; use more data or adjust split.train / split.val / split.embargo"
        )


EXCLUDED = "excluded"  # null: the row trains / is scored; else why not


def mark_segments(frame: pl.DataFrame, plan: SplitPlan) -> pl.DataFrame:
    """Add `segment` and `excluded` (null, "unlabelled", "purged" or "embargoed") to every row; none is removed."""
    unique = frame["ts"].unique().sort()
    segment = (
        pl.when(pl.col("ts") < plan.val_start)
        .then(pl.lit("train"))
        .when(pl.col("ts") < plan.test_start)
        .then(pl.lit("val"))
        .otherwise(pl.lit("test"))
    )
    next_start = (
        pl.when(pl.col("segment") == "train")
        .then(pl.lit(plan.val_start))
        .when(pl.col("segment") == "val")
        .then(pl.lit(plan.test_start))
    )
    embargoed = pl.lit(False)
    for boundary in (plan.val_start, plan.test_start):
        embargoed = embargoed | (
            (pl.col("ts") >= boundary) & (pl.col("ts") <= embargo_until(unique, boundary, plan.embargo))
        )
    purged = pl.lit(plan.purge) & (pl.col("t1") >= next_start).fill_null(False)
    unlabelled = pl.col("label").is_null() if "label" in frame.columns else pl.lit(False)
    reason = (
        pl.when(unlabelled)
        .then(pl.lit("unlabelled"))
        .when(purged)
        .then(pl.lit("purged"))
        .when(embargoed)
        .then(pl.lit("embargoed"))
    )
    return frame.with_columns(segment.alias("segment")).with_columns(reason.cast(pl.String).alias(EXCLUDED))


def kept(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows of a marked frame that train or are scored."""
    return frame.filter(pl.col(EXCLUDED).is_null()).drop(EXCLUDED)


def drop_counts(marked: pl.DataFrame) -> dict[str, Any]:
    """Purged and embargoed rows per segment."""
    return {reason: _count_by_segment(marked.filter(pl.col(EXCLUDED) == reason)) for reason in ("purged", "embargoed")}


def assign_segments(frame: pl.DataFrame, plan: SplitPlan) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The kept rows with their `segment`, and the purge/embargo counts (mark_segments, filtered)."""
    marked = mark_segments(frame, plan)
    return kept(marked), drop_counts(marked)


def embargo_until(unique: pl.Series, boundary: dt.datetime, embargo: int | str) -> dt.datetime:
    """Last instant (inclusive) embargoed after `boundary`: the shared rule, with the earlier
    segment's information ending just before the boundary."""
    unique_us = unique.to_numpy().astype("datetime64[us]").astype(np.int64)
    after = boundary - ONE_US
    end_us = embargo_end(unique_us, _to_us(after), embargo)
    return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=end_us)


def _to_us(value: dt.datetime) -> int:
    return (value - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // ONE_US


def _count_by_segment(frame: pl.DataFrame) -> dict[str, int]:
    counts = dict(frame.group_by("segment").len().iter_rows())
    return {seg: int(counts.get(seg, 0)) for seg in SEGMENTS}


def segment_counts(frame: pl.DataFrame) -> dict[str, Any]:
    """Rows, symbols and time range per segment, plus rows per symbol per segment."""
    out: dict[str, Any] = {}
    for seg in SEGMENTS:
        part = frame.filter(pl.col("segment") == seg)
        out[seg] = {
            "rows": part.height,
            "symbols": part["symbol"].n_unique(),
            "start": part["ts"].min().isoformat() if part.height else None,
            "end": part["ts"].max().isoformat() if part.height else None,
            "rows_per_symbol": dict(part.group_by("symbol").len().sort("symbol").iter_rows()),
        }
    return out


def cv_folds(frame: pl.DataFrame, cfg: dict[str, Any], embargo: int | str) -> dict[str, Any] | None:
    """Folds over the development rows (train + val) for purged_kfold / cpcv, as row positions.

    Returns None for the chronological method. Positions index `development(frame)`.
    """
    from quant_cli.splits.purged import cpcv, purged_kfold

    if cfg["method"] == "chronological":
        return None
    dev = development(frame)
    ts, t1 = dev["ts"].to_numpy(), dev["t1"].to_numpy()
    if cfg["method"] == "purged_kfold":
        folds, paths = purged_kfold(ts, t1, cfg["folds"], embargo), None
    else:
        folds, paths = cpcv(ts, t1, cfg["groups"], cfg["test_groups"], embargo)
    return {"folds": folds, "paths": paths}


def development(frame: pl.DataFrame) -> pl.DataFrame:
    """Train and validation rows in (ts, symbol) order: what cross-validation folds index."""
    return frame.filter(pl.col("segment") != "test").sort("ts", "symbol")


def folds_summary(folds: dict[str, Any], dev: pl.DataFrame) -> dict[str, Any]:
    ts = dev["ts"]
    rows = []
    for fold in folds["folds"]:
        test_ts = ts.gather(fold.test)
        rows.append(
            {
                "fold": fold.index,
                "test_groups": list(fold.test_groups),
                "train_rows": len(fold.train),
                "test_rows": len(fold.test),
                "purged": fold.purged,
                "embargoed": fold.embargoed,
                "test_start": test_ts.min().isoformat(),
                "test_end": test_ts.max().isoformat(),
            }
        )
    paths = folds["paths"]
    return {"n_splits": len(rows), "n_paths": len(paths) if paths else 1, "paths": paths, "folds": rows}
