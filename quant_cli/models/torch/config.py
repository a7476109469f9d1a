"""The training-loop settings of every torch model: the [train] section's loop keys. Torch-free,
so models can validate and record them without importing torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class LoopConfig:
    """The [train] keys every torch model reads (defaults: quant_cli.schema)."""

    epochs: int = 20
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"   # cosine (after warm-up) or constant
    warmup: float = 0.05       # share of all steps with a linear learning-rate warm-up
    grad_clip: float = 1.0     # max global gradient norm (0: off)
    patience: int = 5          # epochs without improvement before stopping (0: never)
    monitor: str = "loss"      # "loss" (val loss, minimised) or "ic" (val IC, maximised)
    loss: str = "mse"          # mse, huber, sharpe or pnl (regression); classifiers use cross-entropy
    pnl_cost_bps: float = 5.0  # pnl loss: cost per unit of position traded, in basis points
    pnl_drawdown_penalty: float = 0.0  # pnl loss: weight of the batch path's max drawdown (0: off)
    precision: str = "auto"    # auto (bf16 on a GPU that has it), fp32, bf16
    compile: bool = False      # torch.compile the network

    @classmethod
    def from_section(cls, section: dict[str, Any] | None) -> LoopConfig:
        """The [train] section (or part of it) over the schema's defaults; other keys are ignored."""
        from quant_cli.schema import SCHEMA

        names = {f.name for f in fields(cls)}
        merged = {k: key.default for k, key in SCHEMA["train"].items() if k in names} | dict(section or {})
        return cls(**{k: v for k, v in merged.items() if k in names})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)




def receptive_field(levels: int, kernel_size: int) -> int:
    """Steps a tcn of `levels` residual blocks (two dilated convolutions each, dilation 2**i) sees."""
    return 1 + 2 * (kernel_size - 1) * (2**levels - 1)
