"""Split and dividend adjustment of bars: the one function features, labels and backtests share.

`split_dividend` scales open, high, low and close by adj_close / close and volume by its inverse,
so a 2:1 split is no -50% return and a dividend no spurious drop. The factor is a property of
each bar, so adjusted bars are what the data vendor's adjusted series says, bar by bar.

A symbol whose adj_close is missing on any bar (a source file without "Adj Close") keeps its raw
prices as a whole — mixing adjusted and raw bars inside one series would create the very jumps
adjustment removes — and is named in one notice. The adjustment (mode and raw-price symbols) is
part of the FittedPipeline, so serving applies it exactly as training did.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from quant_cli.report import SILENT, Reporter

MODES = ("none", "split_dividend")
ADJ_CLOSE = "adj_close"
_PRICES = ("open", "high", "low", "close")


@dataclass(frozen=True)
class Adjustment:
    mode: str = "none"
    raw_symbols: tuple[str, ...] = field(default=())  # symbols left on raw prices (adj_close missing)

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "raw_symbols": list(self.raw_symbols)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Adjustment:
        return cls(data["mode"], tuple(data.get("raw_symbols", ())))

    def apply(self, bars: pl.DataFrame) -> pl.DataFrame:
        """Adjusted bars (same columns and order); a no-op for mode 'none' or data without adj_close."""
        if self.mode == "none" or ADJ_CLOSE not in bars.columns or "close" not in bars.columns:
            return bars
        symbol = pl.col("symbol").cast(pl.String)
        usable = pl.col(ADJ_CLOSE).is_not_null().all().over("symbol") & ~symbol.is_in(list(self.raw_symbols))
        factor = pl.when(usable).then(pl.col(ADJ_CLOSE) / pl.col("close")).otherwise(1.0)
        scaled = [(pl.col(c) * factor).alias(c) for c in _PRICES if c in bars.columns]
        if "volume" in bars.columns:
            scaled.append((pl.col("volume") / factor).alias("volume"))
        return bars.with_columns(scaled)


def default_mode(configured: str | None, schema: dict[str, str]) -> str:
    """`data.adjust` as set, else split_dividend when the dataset has adj_close."""
    if configured is not None:
        return configured
    return "split_dividend" if ADJ_CLOSE in schema else "none"


def resolve(configured: str | None, bars: pl.DataFrame, reporter: Reporter = SILENT) -> Adjustment:
    """The adjustment for these bars; symbols without a full adj_close fall back to raw prices (one notice)."""
    mode = default_mode(configured, dict(bars.schema))
    if mode != "none" and ADJ_CLOSE not in bars.columns:  # only an explicit request gets here
        reporter.notice(
            f"data.adjust = {mode!r}, but the dataset has no adj_close column: every symbol uses raw prices "
            "(the run manifest records adjust mode 'none'); ingest a source with "
            'adj_close, or set data.adjust = "none"'
        )
    if mode == "none" or ADJ_CLOSE not in bars.columns:
        return Adjustment("none")
    missing = bars.group_by("symbol").agg(pl.col(ADJ_CLOSE).is_null().any().alias("gap")).filter("gap")
    raw = tuple(sorted(missing["symbol"].cast(pl.String).to_list()))
    if raw:
        shown = ", ".join(raw[:10]) + (f" and {len(raw) - 10} more" if len(raw) > 10 else "")
        reporter.notice(
            f"data.adjust = 'split_dividend': {len(raw)} symbol(s) have no adj_close "
            f"on some bars and use raw prices: {shown}"
        )
    return Adjustment(mode, raw)


class AdjustedSnapshot:
    """A pinned dataset seen through an adjustment: same API as `data.store.Snapshot`.

    The feature store reads bars through it, so features are built on adjusted prices; its
    content hash folds in the adjustment (unchanged for 'none'), so a feature version built on
    adjusted bars never answers for raw ones.
    """

    def __init__(self, snapshot: Any, adjustment: Adjustment) -> None:
        self.snapshot, self.adjustment = snapshot, adjustment
        self.data_dir, self.dataset, self.version = snapshot.data_dir, snapshot.dataset, snapshot.version
        self.manifest = {**snapshot.manifest, "content_hash": self._hash(snapshot.content_hash)}

    def _hash(self, raw_hash: str) -> str:
        if self.adjustment.mode == "none":
            return raw_hash
        text = json.dumps({"content_hash": raw_hash, **self.adjustment.to_json()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def content_hash(self) -> str:
        return self.manifest["content_hash"]

    def load_bars(self, symbols: list[str] | None = None, start: Any = None, end: Any = None) -> pl.DataFrame:
        return self.adjustment.apply(self.snapshot.load_bars(symbols=symbols, start=start, end=end))
