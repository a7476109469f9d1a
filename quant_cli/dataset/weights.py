"""Sample weights from label concurrency (AFML ch. 4) and optional time decay.

Overlapping labels share information: a bar covered by c labels of the same symbol gives each
of them 1/c of its "uniqueness". A label's weight is its average uniqueness over the bars it spans.
Time decay multiplies weights by a line rising from `time_decay` (oldest) to 1 (newest) along
cumulative uniqueness, as in AFML's getTimeDecay. Weights are normalised to mean 1.
"""

from __future__ import annotations

import numpy as np
import polars as pl


def _positions(rows: pl.DataFrame, calendar: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, int]:
    """Start and end positions of each row's [ts, t1] on the symbol-by-symbol bar calendar.

    The end is the symbol's last bar at or before t1: a cross-sectional label's t1 is the latest
    end among all symbols at its timestamp and need not be a bar of this symbol.
    """
    grid = calendar.select(pl.col("symbol").cast(pl.String), "ts").sort("symbol", "ts").with_row_index("pos")
    keyed = rows.select(pl.col("symbol").cast(pl.String), "ts", "t1").with_row_index("_row")
    start = keyed.join(grid, on=["symbol", "ts"], how="left").sort("_row")["pos"]
    ends = keyed.sort("symbol", "t1").join_asof(
        grid.rename({"ts": "t1"}),
        on="t1",
        by="symbol",
        strategy="backward",
        check_sortedness=False,
    )  # sorted by (symbol, t1): each symbol group is sorted by time, which is what the join needs
    end = ends.sort("_row")["pos"]
    if start.null_count() or end.null_count():
        raise ValueError("every label's ts must be a bar of its symbol's calendar, and t1 at or after its first bar")
    return start.to_numpy().astype(np.int64), end.to_numpy().astype(np.int64), grid.height


def average_uniqueness(rows: pl.DataFrame, calendar: pl.DataFrame) -> np.ndarray:
    """Average uniqueness of each row's label, in rows' order; 1.0 when no label overlaps another."""
    start, end, n = _positions(rows, calendar)
    diff = np.zeros(n + 1)
    np.add.at(diff, start, 1.0)
    np.add.at(diff, end + 1, -1.0)
    concurrency = np.cumsum(diff)[:n]
    inverse = np.divide(1.0, concurrency, out=np.zeros(n), where=concurrency > 0)
    prefix = np.concatenate([[0.0], np.cumsum(inverse)])
    return (prefix[end + 1] - prefix[start]) / (end - start + 1)


def time_decay(ts: np.ndarray, uniqueness: np.ndarray, oldest: float) -> np.ndarray:
    """Linear decay along cumulative uniqueness in time order; the newest row weighs 1."""
    if oldest >= 1.0:
        return np.ones(len(ts))
    order = np.argsort(ts, kind="stable")
    cumulative = np.empty(len(ts))
    cumulative[order] = np.cumsum(uniqueness[order])
    slope = (1.0 - oldest) / cumulative[order[-1]]
    return np.clip(oldest + slope * cumulative, 0.0, None)


def sample_weights(rows: pl.DataFrame, calendar: pl.DataFrame, kind: str, oldest: float) -> np.ndarray | None:
    """Weights for `rows` (symbol, ts, t1), or None when neither uniqueness nor decay is asked for."""
    if kind == "none" and oldest >= 1.0 or rows.height == 0:
        return None
    uniqueness = average_uniqueness(rows, calendar) if kind == "uniqueness" else np.ones(rows.height)
    weights = uniqueness * time_decay(rows["ts"].to_numpy(), uniqueness, oldest)
    mean = weights.mean()
    return weights / mean if mean > 0 else np.ones(rows.height)
