"""Walk-forward folds over the panel's calendar: rolling or anchored training windows, each
followed by an embargo gap and a test window, test windows tiling time forward.

Fold k, on the unique timestamps of the labelled rows (`calendar`):
- test window: starts at position p_k (bars) or instant t_0 + k·step (durations, so weekends do
  not make the windows drift), and spans `test` bars or the duration [t_k, t_k + test);
- boundary: the instant the fold's training information must end. It sits `embargo` before the
  test start, so that the split stage's one rule (quant_cli.splits.embargo: the later segment
  loses its first `embargo` bars after the boundary) embargoes exactly the gap between training
  and test — the test window itself stays whole and the stitched out-of-sample series has no holes;
- training window: `train` bars (or the duration) before the boundary (rolling), or everything
  from the first timestamp (anchored); the optional validation tail is its last `validation`;
- purge: by label end time, as the split stage does — each fold is marked by
  `splits.chronological.mark_segments` with the plan (val_start, boundary, embargo, purge), so a
  training row whose label reaches the validation tail or the boundary is dropped, and a
  validation row whose label reaches the boundary too.
The first fold is the first whose training window fits in the data.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from quant_cli.data.frequency import parse_duration
from quant_cli.errors import DataError, RecipeError
from quant_cli.splits.chronological import SplitPlan
from quant_cli.splits.embargo import Embargo

Window = int | str  # bars, or a duration such as '90d'
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_EXAMPLE = "'90d' or '12h' (or an integer number of bars)"


@dataclass(frozen=True)
class WalkFold:
    """One fold's instants (UTC datetimes). Training rows have window_start <= ts < boundary
    (the validation tail: val_start <= ts < boundary), train_end being the last timestamp before
    the boundary; scored rows test_start <= ts <= test_end."""

    index: int
    window_start: dt.datetime
    val_start: dt.datetime | None
    boundary: dt.datetime
    train_end: dt.datetime
    test_start: dt.datetime
    test_end: dt.datetime

    def plan(self, embargo: Embargo, purge: bool) -> SplitPlan:
        """The split stage's plan for this fold: train | validation tail | boundary → test."""
        return SplitPlan(
            val_start=self.val_start or self.boundary, test_start=self.boundary, embargo=embargo, purge=purge
        )

    def rows(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The rows of `frame` inside the fold: training window, gap and test window."""
        return frame.filter((pl.col("ts") >= self.window_start) & (pl.col("ts") <= self.test_end))


def _us(value: dt.timedelta) -> int:
    return value // dt.timedelta(microseconds=1)


def _instant(us: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=int(us))


def _span(value: Window, key: str) -> int:
    """A duration in µs (bars are handled by position, not here)."""
    return _us(parse_duration(value, key, _EXAMPLE))


def _back(calendar: np.ndarray, instant: int, amount: Window, key: str) -> int | None:
    """The instant `amount` before `instant`: that many calendar bars before it, or the duration;
    None when the calendar does not reach that far back."""
    if isinstance(amount, str):
        start = instant - _span(amount, key)
        return start if start >= calendar[0] else None
    pos = int(np.searchsorted(calendar, instant, side="left")) - amount
    return int(calendar[pos]) if pos >= 0 else None


def _boundary(calendar: np.ndarray, test_pos: int, embargo: Embargo) -> int | None:
    """Where training must end so that the embargo after it ends just before the test start."""
    if isinstance(embargo, str):
        return int(calendar[test_pos]) - _span(embargo, "split.embargo")
    return _back(calendar, int(calendar[test_pos]), embargo, "split.embargo")


def _test_starts(calendar: np.ndarray, first: int, cfg: dict[str, Any]) -> list[tuple[int, int]]:
    """(first, one-past-last) calendar positions of every test window from position `first` on."""
    step = cfg["step"] if cfg["step"] is not None else cfg["test"]
    out, k, n = [], 0, len(calendar)
    while True:
        if isinstance(step, str):
            nominal = int(calendar[first]) + k * _span(step, "walkforward.step")
            pos = int(np.searchsorted(calendar, nominal, side="left"))
        else:
            nominal, pos = None, first + k * step
        if pos >= n:
            return out
        start = nominal if nominal is not None else int(calendar[pos])
        if isinstance(cfg["test"], str):
            end = int(np.searchsorted(calendar, start + _span(cfg["test"], "walkforward.test"), side="left"))
        else:
            end = min(pos + cfg["test"], n)
        if end > pos and (not out or pos >= out[-1][1]):
            out.append((pos, end))
        elif out and pos < out[-1][1]:
            raise RecipeError(
                f"walkforward.step ({step!r}) is shorter than walkforward.test ({cfg['test']!r}) on this data, "
                "so test windows overlap; make step at least as long as test"
            )
        k += 1


def _window(
    calendar: np.ndarray, test_pos: int, cfg: dict[str, Any], embargo: Embargo
) -> tuple[int, int, int | None] | None:
    """(window start, boundary, validation start) of a fold testing from `test_pos`, or None if
    its training window (the first fold's, for anchored) does not fit in the data."""
    boundary = _boundary(calendar, test_pos, embargo)
    if boundary is None or boundary <= calendar[0]:
        return None
    start = _back(calendar, boundary, cfg["train"], "walkforward.train")
    if start is None:
        return None
    val_start = _back(calendar, boundary, cfg["validation"], "walkforward.validation") if cfg["validation"] else None
    if val_start is not None and val_start <= start:
        raise RecipeError(
            f"walkforward.validation ({cfg['validation']!r}) leaves nothing of walkforward.train "
            f"({cfg['train']!r}) to fit on; make the validation tail shorter than the training window"
        )
    return start, boundary, val_start


def build_folds(timestamps: np.ndarray, cfg: dict[str, Any], embargo: Embargo) -> list[WalkFold]:
    """Folds over the sorted unique `timestamps` (datetime64) of the labelled rows; see the module doc."""
    calendar = np.unique(np.asarray(timestamps).astype("datetime64[us]").astype(np.int64))
    first = next((p for p in range(len(calendar)) if _window(calendar, p, cfg, embargo) is not None), None)
    if first is None:
        raise DataError(
            f"walk-forward: {len(calendar)} labelled timestamps are too few for a training window of {cfg['train']!r} "
            f"plus an embargo of {embargo!r} before a test window; use more data or a "
            "shorter walkforward.train / split.embargo"
        )
    folds = []
    for index, (pos, end) in enumerate(_test_starts(calendar, first, cfg)):
        start, boundary, val_start = _window(calendar, pos, cfg, embargo)  # type: ignore[misc]  # fits: pos >= first
        if cfg["mode"] == "anchored":
            start = int(calendar[0])
        last_train = calendar[int(np.searchsorted(calendar, boundary, side="left")) - 1]
        folds.append(
            WalkFold(
                index,
                _instant(start),
                None if val_start is None else _instant(val_start),
                _instant(boundary),
                _instant(last_train),
                _instant(calendar[pos]),
                _instant(calendar[end - 1]),
            )
        )
    return folds
