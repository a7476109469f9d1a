"""The input of a sequence model: one contiguous per-symbol panel and the rows to train or score.

A `Panel` holds the preprocessed features of EVERY row of a run (purged, embargoed and unlabelled
rows included: they are past inputs, never labels), one float32 matrix with each symbol's rows
contiguous and in time order. `PanelRows` names the prediction rows: indices into the panel. The
input of row r is the window `values[r - seq_len + 1 : r + 1]`, which exists only when r has
seq_len - 1 rows of its own symbol before it (`position >= seq_len - 1`); windows are gathered per
batch (quant_cli.models.torch.windows), never materialised for the whole panel.

Tabular models read the same object through `PanelRows.matrix()`: the rows' own features, which
is what mixed ensembles hand their tabular members. Numpy and polars only: the model
registry imports this without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from quant_cli.errors import ModelError

KEYS = ["symbol", "ts"]


@dataclass
class Panel:
    values: np.ndarray  # (N, F + C) float32, C-contiguous; a symbol's rows contiguous, time-ordered
    symbols: np.ndarray  # (N,) symbol of each row
    ts: np.ndarray  # (N,) datetime64[us] of each row
    channels: tuple[str, ...] = ()  # names of the last C columns: raw-bar channels (quant_cli.features.bars)
    statics: dict[str, np.ndarray] = field(default_factory=dict)  # static text column → (N,) value per row (None: none)
    frequency: str | None = None  # the dataset's bar frequency ('1d', '5m'; None: unknown), for known-future fields
    position: np.ndarray = field(init=False)  # (N,) rows of the same symbol before this one

    def __post_init__(self) -> None:
        self.values = np.ascontiguousarray(self.values, dtype=np.float32)
        self.symbols = np.asarray(self.symbols).astype(str)
        self.ts = np.asarray(self.ts)
        n = len(self.values)
        if len(self.symbols) != n or len(self.ts) != n or self.values.ndim != 2:
            raise ModelError(
                f"panel: values {self.values.shape}, symbols {len(self.symbols)} and ts "
                f"{len(self.ts)} must describe the same rows"
            )
        first = np.r_[True, self.symbols[1:] != self.symbols[:-1]] if n else np.zeros(0, bool)
        if first.sum() != len(np.unique(self.symbols[first])):  # a symbol starting two blocks is split
            raise ModelError("panel: each symbol's rows must be contiguous (sort the rows by symbol, ts)")
        if n and (np.diff(self.ts)[~first[1:]] <= np.timedelta64(0)).any():
            raise ModelError("panel: timestamps must increase within each symbol (sort the rows by symbol, ts)")
        start = np.maximum.accumulate(np.where(first, np.arange(n), 0)) if n else np.zeros(0, np.int64)
        self.position = np.arange(n) - start

    def __len__(self) -> int:
        return len(self.values)

    @property
    def n_features(self) -> int:
        """Feature-table columns (the first F); raw-bar channels follow them."""
        return self.values.shape[1] - len(self.channels)

    def columns(self, inputs: str) -> np.ndarray:
        """(N, k) the columns a model reads: "features", "bars" (the channels) or "both"."""
        if inputs == "features":
            return self.values[:, : self.n_features] if self.channels else self.values
        return self.values[:, self.n_features :] if inputs == "bars" else self.values


@dataclass
class PanelRows:
    """Prediction rows of a panel (what a sequence model's fit/predict take as X)."""

    panel: Panel
    rows: np.ndarray  # (n,) int64 indices into the panel

    def __post_init__(self) -> None:
        self.rows = np.asarray(self.rows, dtype=np.int64).reshape(-1)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx) -> PanelRows:
        return PanelRows(self.panel, self.rows[idx])

    @property
    def symbols(self) -> np.ndarray:
        return self.panel.symbols[self.rows]

    @property
    def ts(self) -> np.ndarray:
        return self.panel.ts[self.rows]

    def matrix(self) -> np.ndarray:
        """(n, F) the rows' own features: the tabular view of the same rows."""
        return self.panel.values[self.rows, : self.panel.n_features]

    def full_window(self, seq_len: int) -> np.ndarray:
        """(n,) bool: the row has seq_len rows of its own symbol ending at it (warm-up rows do not)."""
        return self.panel.position[self.rows] >= seq_len - 1


def as_panel_rows(X, symbols: np.ndarray | None, ts: np.ndarray | None = None) -> PanelRows:
    """A plain (n, F) matrix as a panel of its own rows: each symbol's rows (in the order given, or
    by ts when given) are its whole history. Tests and tabular callers use it; runs pass a Panel
    built from every row of the split (quant_cli.stages.fitting)."""
    if isinstance(X, PanelRows):
        return X
    X = np.asarray(X, dtype=np.float32)
    n = len(X)
    given = symbols is not None
    symbols = np.asarray(symbols).astype(str) if given else np.zeros(n, dtype=str)
    if ts is None or not given:  # the given order is the time order (no symbols: one series)
        order = np.argsort(symbols, kind="stable")
        panel = Panel(X[order], symbols[order], np.arange(n).astype("datetime64[us]"))
    else:
        times = np.asarray(ts)
        order = np.lexsort((times, symbols))
        panel = Panel(X[order], symbols[order], times[order])
    rows = np.empty(n, dtype=np.int64)
    rows[order] = np.arange(n)
    return PanelRows(panel, rows)


def make_panel(
    rows: pl.DataFrame, values: np.ndarray, channels: pl.DataFrame | None = None, frequency: str | None = None
) -> Panel:
    """The panel of `rows` (symbol, ts; sorted by symbol, ts) holding their model inputs `values`,
    with the raw-bar `channels` joined on as the last columns (0 where a bar has none) and the text
    columns of `channels` (static covariates, quant_cli.models.covariates) as `statics`. Training
    (quant_cli.stages.fitting.build_panel) and serving (quant_cli.serve.panel) both build their panels here."""
    names: tuple[str, ...] = ()
    statics: dict[str, np.ndarray] = {}
    if channels is not None:
        joined = rows.select(KEYS).join(channels, on=KEYS, how="left", maintain_order="left")
        text = [c for c in channels.columns if c not in KEYS and channels.schema[c] == pl.String]
        statics = {c: joined[c].to_numpy() for c in text}
        names = tuple(c for c in channels.columns if c not in KEYS and c not in text)
        if names:
            values = np.hstack([values, joined.select(names).fill_null(0.0).to_numpy().astype(np.float32)])
    return Panel(values, rows["symbol"].to_numpy(), rows["ts"].to_numpy(), names, statics, frequency)
