"""The dense (ts × symbol) grid the engine works on, and the long ↔ dense conversions.

Rows are the scored (or weighted) timestamps, columns the symbols that ever have a score. Every
matrix the engine builds lives on this one grid, so a symbol without a score on a row is an
explicit 0 weight (closed and costed), never a forward-filled old weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from quant_cli.dataset.labels import execution_price


@dataclass(frozen=True)
class Grid:
    ts: pl.Series  # sorted unique timestamps (T)
    symbols: pl.Series  # sorted unique symbols (N)

    @classmethod
    def of(cls, frame: pl.DataFrame) -> "Grid":
        return cls(frame["ts"].unique().sort(), frame["symbol"].cast(pl.String).unique().sort())

    @property
    def shape(self) -> tuple[int, int]:
        return self.ts.len(), self.symbols.len()

    def dense(self, frame: pl.DataFrame, column: str) -> np.ndarray:
        """(T, N) float matrix of `column`; NaN where the frame has no row (rows off the grid are dropped)."""
        out = np.full(self.shape, np.nan)
        rows, cols, keep = self._positions(frame)
        flat = rows * self.shape[1] + cols
        values = frame[column].cast(pl.Float64).fill_null(np.nan).to_numpy()
        if not keep.all():
            flat, values = flat[keep], values[keep]
        np.put(out, flat, values)  # flat indices: much cheaper than 2-D fancy indexing
        return out

    def _positions(self, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row and column of each frame row on the grid (hash lookups, no string sort), and whether it is on it."""
        ts = self.ts.to_numpy()
        t_in = frame["ts"].to_numpy()
        rows = np.clip(np.searchsorted(ts, t_in), 0, max(len(ts) - 1, 0))
        on_row = ts[rows] == t_in if len(ts) else np.zeros(len(t_in), bool)
        codes = (
            frame["symbol"]
            .cast(pl.String)
            .replace_strict(
                self.symbols, pl.int_range(self.symbols.len(), eager=True), default=-1, return_dtype=pl.Int64
            )
            .to_numpy()
        )
        return rows, np.maximum(codes, 0), on_row & (codes >= 0)

    def long(self, columns: dict[str, np.ndarray], keep: np.ndarray | None = None) -> pl.DataFrame:
        """symbol, ts and each (T, N) matrix as a column, for the cells where `keep` is True."""
        T, N = self.shape
        flat = np.arange(T * N) if keep is None else np.flatnonzero(keep)
        rows, cols = np.divmod(flat, N) if N else (flat, flat)
        data = {"symbol": self.symbols.to_numpy()[cols], "ts": self.ts.gather(rows)}
        data.update({name: np.take(matrix, flat) for name, matrix in columns.items()})
        return pl.DataFrame(data).with_columns(pl.col("symbol").cast(pl.String))


def period_returns(bars: pl.DataFrame, execution: str) -> pl.DataFrame:
    """symbol, ts, ret: the one-bar return earned by a position decided at the close of ts
    (filled at the next bar's execution price, held to the one after)."""
    price = execution_price(bars, execution)
    ret = price.shift(-2).over("symbol") / price.shift(-1).over("symbol") - 1.0
    return bars.sort("symbol", "ts").select("symbol", "ts", ret.alias("ret")).drop_nulls("ret")


def close_returns(bars: pl.DataFrame) -> pl.DataFrame:
    """symbol, ts, ret: close-to-close return ending at ts, known at the close of ts (for causal volatility)."""
    ret = pl.col("close") / pl.col("close").shift(1).over("symbol") - 1.0
    return bars.sort("symbol", "ts").select("symbol", "ts", ret.alias("ret")).drop_nulls("ret")


def trailing_std(x: np.ndarray, window: int) -> np.ndarray:
    """Sample std (ddof 1) of the last `window` finite values of each column up to and including row t
    (NaN until `window` values were seen). Vectorised with cumulative sums; uses no later row."""
    finite = np.isfinite(x)
    v = np.where(finite, x, 0.0)

    def rolled(a: np.ndarray) -> np.ndarray:
        c = np.cumsum(np.vstack([np.zeros((1, a.shape[1])), a]), axis=0)
        return c[window:] - c[:-window] if a.shape[0] >= window else np.zeros((0, a.shape[1]))

    out = np.full(x.shape, np.nan)
    if x.shape[0] < window:
        return out
    n, s, s2 = rolled(finite.astype(float)), rolled(v), rolled(v * v)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (s2 - s * s / n) / (n - 1)
    out[window - 1 :] = np.where(n == window, np.sqrt(np.maximum(var, 0.0)), np.nan)
    return out
