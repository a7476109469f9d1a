"""Declarations every torch model is made of, torch-free (the registry and the CLI read them
without importing torch).

- `LoopConfig`: the [train] keys of the one training loop, typed; their defaults, limits and docs
  have one source, the recipe schema (`quant_cli.schema`), which each field reads its default from.
- `param(...)`: one architecture parameter (a `model.params` key) as a dataclass field carrying its
  default, its limit and its one-line doc. An architecture's config dataclass (a `NetConfig`
  subclass in its own file under models/torch/) is the single source of its parameters; `declared`
  turns it into the model class's `defaults`, `limits` and `docs`.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from typing import Any

from quant_cli.models.params import Limit, at_least, between, choice
from quant_cli.schema import SCHEMA

DOC = "doc"  # field metadata: the one-line doc of a declared field
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

    n_inputs: int = 0  # features per row (per time step)
    n_outputs: int = 1  # 1 for regression, K logits for classification
    symbol_kind: str = "none"  # none, one_hot, index, embedding (quant_cli.models.torch.heads)
    n_symbols: int = 0  # training symbols (ids 1..n_symbols)
    dropout: float = param(0.1, "dropout probability inside the network", between(0, 1, high_open=True))
    embedding_dim: int = param(4, 'width of the learned symbol vector (symbol_encoding = "embedding")', at_least(1))


@dataclass
class SequenceConfig(NetConfig):
    """The parameters every window model has (quant_cli.models.sequence)."""

    seq_len: int = param(32, "rows of the symbol's history in each window, ending at the row scored", between(1, 4096))
    inputs: str = param(
        "features",
        "what each window step holds: the features, the raw-bar channels, or both",
        choice("features", "bars", "both"),
    )


def _train(key: str) -> Any:
    """The default of the [train] key `key`: the recipe schema is its one source (with its doc and limits)."""
    return field(default=SCHEMA["train"][key].default)


@dataclass
class LoopConfig:
    """The [train] keys every torch model reads, with the same meaning for each; their defaults, limits
    and docs live in quant_cli.schema only."""

    epochs: int = _train("epochs")
    batch_size: int = _train("batch_size")
    learning_rate: float = _train("learning_rate")
    weight_decay: float = _train("weight_decay")
    schedule: str = _train("schedule")  # cosine (after warm-up) or constant
    warmup: float = _train("warmup")  # share of all steps with a linear learning-rate warm-up
    grad_clip: float = _train("grad_clip")  # max global gradient norm (0: off)
    patience: int = _train("patience")  # epochs without improvement before stopping (0: never)
    monitor: str = _train("monitor")  # "loss" (val loss, minimised) or "ic" (val IC, maximised)
    loss: str = _train("loss")  # mse, huber, sharpe or pnl (regression); classifiers use cross-entropy
    pnl_cost_bps: float = _train("pnl_cost_bps")  # pnl loss: cost per unit of position traded, in basis points
    pnl_drawdown_penalty: float = _train("pnl_drawdown_penalty")  # pnl loss: weight of the batch path's max drawdown
    precision: str = _train("precision")  # training autocast: auto, fp32, bf16, fp16 (models/torch/precision.py)
    inference_precision: str = _train("inference_precision")  # scoring: fp32 unless asked otherwise
    compile: bool = _train("compile")  # torch.compile the training forward (dynamic shapes)

    @classmethod
    def from_section(cls, section: dict[str, Any] | None) -> LoopConfig:
        """The [train] section (or part of it) over these defaults; other keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in dict(section or {}).items() if k in names})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
