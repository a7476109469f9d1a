"""Torch building blocks for the neural models: modules, one training loop, batched inference.

Kept apart from `neural.py` so that importing the model registry (every CLI command does) does
not import torch (~1 s); torch loads when a neural model is first fitted or loaded.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

PREDICT_BATCH = 65536


@dataclass
class MLPConfig:
    n_inputs: int                 # features plus one-hot columns
    n_outputs: int                # 1 for regression, K logits for classification
    hidden: tuple[int, ...] = (64, 32)
    dropout: float = 0.1
    n_symbols: int = 0            # > 0 adds an embedding table with one extra row for "unseen"
    embedding_dim: int = 4


class MLP(nn.Module):
    def __init__(self, cfg: MLPConfig) -> None:
        super().__init__()
        # Row 0 is the unseen symbol: padding_idx pins it to zeros and gives it no gradient.
        self.embed = nn.Embedding(cfg.n_symbols + 1, cfg.embedding_dim, padding_idx=0) if cfg.n_symbols else None
        width = cfg.n_inputs + (cfg.embedding_dim if cfg.n_symbols else 0)
        layers: list[nn.Module] = []
        for size in cfg.hidden:
            layers += [nn.Linear(width, size), nn.GELU(), nn.Dropout(cfg.dropout)]
            width = size
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, cfg.n_outputs)

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, F) float32; ids: (B,) int64 symbol ids
        if self.embed is not None:
            x = torch.cat([x, self.embed(ids)], dim=1)  # (B, F + E)
        return self.head(self.body(x))  # (B, n_outputs)


@dataclass
class Batch:
    """Rows as tensors on the training device."""

    x: torch.Tensor                # (n, F) float32
    ids: torch.Tensor | None       # (n,) int64
    y: torch.Tensor | None = None  # (n,) float32 standardised label, or int64 class code
    w: torch.Tensor | None = None  # (n,) float32 sample weight

    def take(self, idx: torch.Tensor) -> Batch:
        return Batch(*(None if t is None else t[idx] for t in (self.x, self.ids, self.y, self.w)))

    def __len__(self) -> int:
        return self.x.shape[0]


@dataclass
class TrainConfig:
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    patience: int  # epochs without validation improvement before stopping (0: never stop early)


@dataclass
class TrainResult:
    epochs_run: int
    best_epoch: int


@contextlib.contextmanager
def reproducible(seed: int, device: str, threads: int):
    """Seed torch without touching the caller's RNG state; deterministic kernels on CPU."""
    cuda_devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
    deterministic, n_threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        if device == "cpu":
            torch.use_deterministic_algorithms(True)
        if threads > 0:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(deterministic)
            torch.set_num_threads(n_threads)


LossFn = Callable[[nn.Module, Batch], torch.Tensor]


def train(net: nn.Module, data: Batch, val: Batch | None, loss_fn: LossFn, cfg: TrainConfig) -> TrainResult:
    """AdamW over shuffled mini-batches; keep the weights of the best validation epoch."""
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    best, best_state, waited, result = float("inf"), None, 0, TrainResult(0, cfg.epochs)
    for epoch in range(1, cfg.epochs + 1):
        net.train()
        for idx in torch.randperm(len(data), device=data.x.device).split(cfg.batch_size):
            loss = loss_fn(net, data.take(idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        result.epochs_run = epoch
        if val is None:
            continue
        val_loss = evaluate(net, val, loss_fn)
        if val_loss < best:
            best, best_state, waited, result.best_epoch = val_loss, copy.deepcopy(net.state_dict()), 0, epoch
        elif (waited := waited + 1) >= cfg.patience > 0:
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return result


@torch.no_grad()
def evaluate(net: nn.Module, val: Batch, loss_fn: LossFn) -> float:
    """Mean loss over `val`, in chunks so a large validation set fits in memory."""
    net.eval()
    total = 0.0
    for idx in torch.arange(len(val), device=val.x.device).split(PREDICT_BATCH):
        total += float(loss_fn(net, val.take(idx))) * len(idx)
    return total / max(len(val), 1)


@torch.no_grad()
def infer(net: nn.Module, rows: Batch, n_outputs: int) -> torch.Tensor:
    """(n, n_outputs) raw outputs, in chunks."""
    net.eval()
    chunks = [net(rows.x[i:i + PREDICT_BATCH], None if rows.ids is None else rows.ids[i:i + PREDICT_BATCH])
              for i in range(0, len(rows), PREDICT_BATCH)]
    return torch.cat(chunks) if chunks else rows.x.new_zeros(0, n_outputs)
