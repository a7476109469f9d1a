"""Declarations every torch model is made of, torch-free (the recipe schema and the registry read
them without importing torch).

- `LoopConfig`: the [train] keys of the one training loop. Its fields are the single source of those
  keys' defaults, limits and docs; `quant_cli.recipe.schema` builds its [train] entries from them.
- `param(...)`: one architecture parameter (a `model.params` key) as a dataclass field carrying its
  default, its limit and its one-line doc. An architecture's config dataclass (a `NetConfig`
  subclass in its own file under models/torch/) is the single source of its parameters; `declared`
  turns it into the model class's `defaults`, `limits` and `docs`.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from typing import Any

from quant_cli.models.params import Limit, at_least, between, choice

DOC = "doc"      # field metadata: the one-line doc of a declared field
LIMIT = "limit"  # field metadata: its `Limit` (quant_cli.models.params)


def param(default: Any, doc: str, limit: Limit | None = None) -> Any:
    """An architecture parameter: `model.params.NAME`, with its default, limit and one-line doc."""
    metadata = {DOC: doc, LIMIT: limit}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _default(f: Field) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


def declared(config: type) -> tuple[dict[str, Any], dict[str, Limit], dict[str, str]]:
    """(defaults, limits, docs) of the `param` fields of a config dataclass, in field order."""
    params = [f for f in fields(config) if DOC in f.metadata]
    defaults = {f.name: _default(f) for f in params}
    limits = {f.name: f.metadata[LIMIT] for f in params if f.metadata[LIMIT] is not None}
    return defaults, limits, {f.name: f.metadata[DOC] for f in params}


@dataclass
class NetConfig:
    """What every torch network is built from: the data's shape (set at fit, not parameters) and the
    parameters every architecture has. Saved as the model's `fit_info.config`."""

    n_inputs: int = 0             # features per row (per time step)
    n_outputs: int = 1            # 1 for regression, K logits for classification
    symbol_kind: str = "none"     # none, one_hot, index, embedding (quant_cli.models.torch.heads)
    n_symbols: int = 0            # training symbols (ids 1..n_symbols)
    dropout: float = param(0.1, "dropout probability inside the network", between(0, 1, high_open=True))
    embedding_dim: int = param(4, "width of the learned symbol vector (symbol_encoding = \"embedding\")", at_least(1))


@dataclass
class SequenceConfig(NetConfig):
    """The parameters every window model has (quant_cli.models.sequence)."""

    seq_len: int = param(32, "rows of the symbol's history in each window, ending at the row scored", between(1, 4096))
    inputs: str = param("features", "what each window step holds: the features, the raw-bar channels, or both",
                        choice("features", "bars", "both"))


def _loop(default: Any, doc: str, **limits: Any) -> Any:
    """A [train] loop key: its default, doc and limits (choices, minimum, maximum) for the recipe schema."""
    return field(default=default, metadata={DOC: doc, **limits})


@dataclass
class LoopConfig:
    """The [train] keys every torch model reads, with the same meaning for each."""

    epochs: int = _loop(20, "torch models: passes over the training rows.", minimum=1, maximum=100_000)
    batch_size: int = _loop(256, "torch models: rows (windows) per optimiser step.", minimum=1, maximum=10_000_000)
    learning_rate: float = _loop(1e-3, "torch models: AdamW peak learning rate.", minimum=1e-12, maximum=10.0)
    weight_decay: float = _loop(1e-4, "torch models: AdamW decoupled weight decay.", minimum=0.0, maximum=10.0)
    schedule: str = _loop("cosine", "torch models: learning rate after the warm-up: cosine decay to zero, or constant.",
                          choices=("cosine", "constant"))
    warmup: float = _loop(0.05, "torch models: share of all optimiser steps with a linear learning-rate warm-up.",
                          minimum=0.0, maximum=1.0)
    grad_clip: float = _loop(1.0, "torch models: clip the global gradient norm to this (0: off).", minimum=0.0)
    patience: int = _loop(5, "torch models: stop after this many epochs without improvement of train.monitor on the "
                             "validation rows (0: never).", minimum=0)
    monitor: str = _loop("loss", "torch models: what early stopping and the kept best epoch follow: validation loss, "
                                 "or validation IC.", choices=("loss", "ic"))
    loss: str = _loop("mse", "torch models (regression): mse, huber, or sharpe (maximise mean/std of the per-timestamp "
                             "portfolio return of tanh(score)); classifiers use cross-entropy.",
                      choices=("mse", "huber", "sharpe"))
    precision: str = _loop("auto", "torch models: auto (bf16 autocast on a CUDA GPU that supports it, else fp32), fp32 "
                                   "or bf16.", choices=("auto", "fp32", "bf16"))
    compile: bool = _loop(False, "torch models: torch.compile the network (worth it on a GPU for long fits).")

    @classmethod
    def from_section(cls, section: dict[str, Any] | None) -> LoopConfig:
        """The [train] section (or part of it) over these defaults; other keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in dict(section or {}).items() if k in names})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
