"""Windows as an index into one contiguous float32 tensor — never a (samples, seq_len, F) array.

`Samples` pairs the panel tensor `x` (N, F) with `ends` (n,): sample i is the window of rows
`ends[i] - seq_len + 1 .. ends[i]` (inclusive), or the single row `ends[i]` when seq_len is 0
(tabular). `gather` builds the (B, seq_len, F) tensor of one batch only. Callers pass only ends
with a full window inside their symbol (`PanelRows.full_window`), so a window never crosses
symbols and never reaches past its row: the offsets below are all <= 0.

Batches (`Samples.batches`): shuffled rows split into `batch_size` rows, or, for a cross-sectional
model (`cross_section`), whole timestamps: each batch holds every sample of one or several
timestamps (`group`), the timestamps shuffled, so the network can attend across the symbols of a
timestamp and never across timestamps (it receives `group` through `Samples.context`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


def timestamp_codes(ts: np.ndarray | None) -> np.ndarray | None:
    """int64 codes of timestamps (the sharpe loss and the validation IC group rows by them)."""
    return None if ts is None else np.asarray(ts).astype("datetime64[us]").astype(np.int64)


def previous_rows(symbols: np.ndarray | None, ts: np.ndarray | None) -> np.ndarray:
    """(n,) index of the row holding the same symbol's previous timestamp among these rows, -1 for
    a symbol's first (the pnl loss's turnover for tabular rows; rows without symbols are one
    symbol; without timestamps, the rows' own order is time order)."""
    n = 0 if symbols is None and ts is None else len(symbols if symbols is not None else ts)
    keys = [np.arange(n)] if ts is None else [np.asarray(ts).astype("datetime64[us]").astype(np.int64)]
    if symbols is not None:
        keys.append(np.unique(np.asarray(symbols).astype(str), return_inverse=True)[1])
    order = np.lexsort(keys)  # by symbol, then time
    prev = np.full(n, -1, dtype=np.int64)
    same = np.ones(max(n - 1, 0), dtype=bool) if symbols is None else keys[-1][order[1:]] == keys[-1][order[:-1]]
    prev[order[1:][same]] = order[:-1][same]
    return prev


def timestamp_blocks(group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sample indices sorted by timestamp, stable; samples per timestamp in time order) of (n,) codes."""
    rows = torch.argsort(group, stable=True)
    counts = torch.unique_consecutive(group[rows], return_counts=True)[1]
    return rows, counts


def window_offsets(seq_len: int, device: torch.device | str) -> torch.Tensor:
    """(seq_len,) -seq_len+1 .. 0: oldest row first, the prediction row last."""
    return torch.arange(-seq_len + 1, 1, device=device)


def gather(x: torch.Tensor, ends: torch.Tensor, seq_len: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """(B, seq_len, F) windows ending at `ends` (B,), or (B, F) rows when seq_len == 0; written into
    `out` (a flat buffer of at least B * max(seq_len, 1) * F elements, e.g. pinned) when given."""
    rows = ends if seq_len == 0 else (ends[:, None] + window_offsets(seq_len, x.device)[None, :]).reshape(-1)
    shape = (len(ends), x.shape[1]) if seq_len == 0 else (len(ends), seq_len, x.shape[1])
    if out is None:
        return x.index_select(0, rows).view(shape)  # (B·L, F) → (B, L, F)
    target = out[: rows.numel() * x.shape[1]].view(rows.numel(), x.shape[1])
    torch.index_select(x, 0, rows, out=target)
    return target.view(shape)


@dataclass
class Samples:
    """What the training loop iterates over; every tensor lives on the training device."""

    x: torch.Tensor  # (N, F) float32 panel (sequence) or rows (tabular)
    ends: torch.Tensor  # (n,) int64 row of x each sample ends at
    seq_len: int = 0  # 0: a sample is one row
    ids: torch.Tensor | None = None  # (n,) int64 symbol ids (symbol encodings)
    y: torch.Tensor | None = None  # (n,) float32 target, or int64 class code
    w: torch.Tensor | None = None  # (n,) float32 sample weight
    group: torch.Tensor | None = None  # (n,) int64 timestamp code (sharpe loss, cross-sectional IC)
    prev: torch.Tensor | None = None  # (n,) int64 row the symbol's previous sample ends at, -1: none (pnl loss,
    #                                    validation PnL telemetry); on the panel's device, like `ends`
    cross_section: bool = False  # batches are whole timestamps (`group`), which the network reads

    def __len__(self) -> int:
        return len(self.ends)

    def inputs(self, idx: torch.Tensor, out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(x_batch, ids_batch) of samples `idx`: (B, L, F) or (B, F), and (B,); x written into `out` when given."""
        return gather(self.x, self.ends[idx], self.seq_len, out), self.part("ids", idx)

    def batch_numel(self, batch: int) -> int:
        """Elements of the x of a batch of `batch` samples (a staging buffer's size)."""
        return batch * max(self.seq_len, 1) * self.x.shape[1]

    def to(self, device: str, panel_device: str | None = None) -> Samples:
        """A copy with the panel and ends on `panel_device` (default `device`), the rest on `device`."""

        def move(t, where):
            return None if t is None else t.to(where)

        where = panel_device or device
        return Samples(
            move(self.x, where),
            move(self.ends, where),
            self.seq_len,
            move(self.ids, device),
            move(self.y, device),
            move(self.w, device),
            move(self.group, device),
            move(self.prev, where),
            self.cross_section,
        )

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """One pass's batches of sample indices (on the panel's device): shuffled by `generator` when
        given, else in order. Cross-sectional: whole timestamps, `timestamps_per_batch` of them."""
        n = len(self)
        if not self.cross_section:
            order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
            return list(order.to(self.ends.device).split(batch_size))
        rows, counts = timestamp_blocks(self.group.cpu())
        pick = torch.randperm(len(counts), generator=generator) if generator is not None else torch.arange(len(counts))
        blocks = rows.split(counts.tolist())  # one block of sample indices per timestamp, in time order
        per = self.timestamps_per_batch(batch_size, counts)
        return [torch.cat([blocks[t] for t in chunk.tolist()]).to(self.ends.device) for chunk in pick.split(per)]

    def timestamps_per_batch(self, batch_size: int, counts: torch.Tensor | None = None) -> int:
        """Whole timestamps per batch: as many of the widest cross-section as fit in `batch_size` rows, at least 1."""
        counts = timestamp_blocks(self.group.cpu())[1] if counts is None else counts
        return max(1, batch_size // max(int(counts.max()) if len(counts) else 1, 1))

    def n_batches(self, batch_size: int) -> int:
        """Batches in one pass (the learning-rate schedule's steps per epoch)."""
        if not self.cross_section:
            return math.ceil(len(self) / batch_size)
        counts = timestamp_blocks(self.group.cpu())[1]
        return math.ceil(len(counts) / self.timestamps_per_batch(batch_size, counts))

    def context(self, idx: torch.Tensor, device: str | torch.device) -> dict[str, torch.Tensor]:
        """What a cross-sectional network reads beside (x, ids): each sample's timestamp code; nothing otherwise."""
        return {"group": self.group[idx.to(self.group.device)].to(device)} if self.cross_section else {}

    def previous_inputs(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(x, ids, known) of the windows ending at each sample's previous row (`prev`; where there is
        none, the sample's own window stands in, masked by `known`): what the pnl loss scores."""
        idx = idx.to(self.prev.device, non_blocking=True)
        prev = self.prev[idx]
        known = prev >= 0
        ends = torch.where(known, prev, self.ends[idx.to(self.ends.device)].to(prev.device))
        return gather(self.x, ends.to(self.x.device), self.seq_len), self.part("ids", idx), known

    def part(self, name: str, idx: torch.Tensor) -> torch.Tensor | None:
        """Per-sample values of `idx`; the panel may sit in host memory while these are on the GPU."""
        value = getattr(self, name)
        return None if value is None else value[idx.to(value.device, non_blocking=True)]
