"""The one embargo rule and the one default, shared by every split (chronological, purged k-fold, CPCV, stacking).

Rule. Where an earlier block of rows meets a later one, the later block loses its rows with
`after < ts <= embargo_end(calendar, after, embargo)`, where `after` is the instant the earlier
block's information ends:
- purged k-fold / CPCV: the test block's last label end (AFML's PurgedKFold): training rows whose
  labels overlap the block are purged, the `embargo` bars after it are embargoed;
- chronological: purging already ends every earlier label before the boundary, so the earlier
  block's information ends just before it (`after` = boundary - 1 µs) and the embargo is the
  first `embargo` bars of the later segment.
`embargo` counts bars of the panel's calendar (unique timestamps of all symbols) strictly after
`after`, or is a duration such as '5d' measured from `after`.

Default. `split.embargo` unset means the label horizon in bars (`default_embargo`): the recipe's
`label.horizon` where a recipe is known; inside a model that only sees (ts, t1) (stacking), the
horizon measured from them (`label_horizon`).
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from quant_cli.data.frequency import parse_duration

Embargo = int | str
EMBARGO_EXAMPLE = "'5d' or '12h' (or an integer number of bars)"
ONE_US = dt.timedelta(microseconds=1)


def default_embargo(configured: Embargo | None, horizon: int) -> Embargo:
    """`split.embargo` as configured, else the label horizon in bars."""
    return horizon if configured is None else configured


def embargo_end(unique_us: np.ndarray, after: int, embargo: Embargo) -> int:
    """Inclusive upper bound (µs) of the embargo that follows instant `after` (µs); see the module rule."""
    if isinstance(embargo, str):
        return int(after + parse_duration(embargo, "split.embargo", EMBARGO_EXAMPLE) // ONE_US)
    first_after = int(np.searchsorted(unique_us, after, side="right"))  # first timestamp > after
    if embargo <= 0 or first_after >= len(unique_us):
        return int(after)
    return int(unique_us[min(first_after + embargo - 1, len(unique_us) - 1)])


def label_horizon(ts_us: np.ndarray, t1_us: np.ndarray) -> int:
    """Median number of calendar timestamps a label spans, (ts, t1]: the default embargo when only
    (ts, t1) are known."""
    unique = np.unique(ts_us)
    spans = np.searchsorted(unique, t1_us, side="right") - np.searchsorted(unique, ts_us, side="right")
    return int(np.median(spans)) if len(spans) else 0
