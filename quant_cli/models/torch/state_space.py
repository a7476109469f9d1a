"""state_space: a stack of diagonal linear state-space layers, S4D style (Gu et al. 2022).

Each layer runs `d_model` independent single-input channels, each a linear system with `state`
complex-diagonal modes (stored as state/2 conjugate pairs: the output is twice the real part):

    x_k = Ā x_{k-1} + B̄ u_k,   y_k = 2·Re(C x_k) + D u_k,   Ā = exp(Δ A),  B̄ = (Ā - 1)/A  (zero-order hold)

with A = -exp(log_a) + i·a_im (a stable, decaying mode), a learned step Δ per channel, and B = 1.
The system is causal by construction: y_k depends on u_0..u_k only. Two equal ways to compute it:

- training: as a causal convolution with the kernel K_j = 2·Re(Σ C B̄ Ā^j), j = 0..L-1, through a
  zero-padded FFT (O(L log L) per channel, no sequential loop), so windows of thousands of bars
  stay cheap to train;
- scoring (eval mode): recurrently, one step at a time, carrying only the (B, d_model, state/2)
  state — the form a streaming scorer uses. `tests/test_state_space.py` checks both agree.

The recurrence and kernel run in float32 (complex64) whatever the autocast: bf16 has no complex FFT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from quant_cli.errors import ModelError
from quant_cli.models.params import at_least, between
from quant_cli.models.sequence import SequenceModel
from quant_cli.models.torch.config import SequenceConfig, param
from quant_cli.models.torch.heads import Head


@dataclass
class StateSpaceConfig(SequenceConfig):
    d_model: int = param(32, "channels of every state-space layer", at_least(1))
    state: int = param(16, "state size per channel (complex modes x 2; even)", between(2, 256))
    layers: int = param(2, "stacked state-space layers (pre-norm, residual)", between(1, 32))
    dt_min: float = param(0.001, "smallest initial discretisation step", between(1e-6, 1.0))
    dt_max: float = param(0.1, "largest initial discretisation step", between(1e-6, 10.0))


class DiagonalSSM(nn.Module):
    """(B, L, H) → (B, L, H): H independent diagonal state-space channels (S4D-Lin initialisation)."""

    def __init__(self, width: int, state: int, dt_min: float = 0.001, dt_max: float = 0.1) -> None:
        super().__init__()
        modes = state // 2
        log_dt = torch.rand(width) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)  # (H,)
        self.log_a = nn.Parameter(torch.full((width, modes), math.log(0.5)))  # Re A = -exp(log_a) = -1/2
        self.a_im = nn.Parameter(math.pi * torch.arange(modes).float().repeat(width, 1))  # Im A = π n
        self.c = nn.Parameter(torch.randn(width, modes, 2) * math.sqrt(0.5))  # C as (re, im)
        self.d = nn.Parameter(torch.ones(width))  # the skip term D

    def _discrete(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ΔA, B̄, C), each (H, N/2) complex64; Ā = exp(ΔA)."""
        a = torch.complex(-torch.exp(self.log_a.float()), self.a_im.float())  # (H, N/2)
        dta = a * torch.exp(self.log_dt.float())[:, None]
        return dta, (torch.exp(dta) - 1) / a, torch.view_as_complex(self.c.float().contiguous())

    def kernel(self, length: int) -> torch.Tensor:
        """K (H, L) float32: the impulse response over `length` steps."""
        dta, b_bar, c = self._discrete()
        power = torch.arange(length, device=dta.device, dtype=torch.float32)
        vandermonde = torch.exp(dta[:, :, None] * power)  # Ā^j: (H, N/2, L)
        return 2 * torch.einsum("hn,hnl->hl", c * b_bar, vandermonde).real

    def convolve(self, u: torch.Tensor) -> torch.Tensor:
        """Causal convolution through a zero-padded FFT: u (B, L, H) → (B, L, H) float32."""
        length = u.shape[1]
        u = u.float().transpose(1, 2)  # (B, H, L)
        k = self.kernel(length)
        n = 2 * length  # zero-padding to 2L makes the circular convolution a causal linear one
        y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(k, n=n), n=n)[..., :length]
        return (y + self.d.float()[:, None] * u).transpose(1, 2)

    def recur(self, u: torch.Tensor) -> torch.Tensor:
        """The same map as a recurrence over steps: u (B, L, H) → (B, L, H) float32."""
        dta, b_bar, c = self._discrete()
        a_bar = torch.exp(dta)  # (H, N/2)
        u = u.float()
        x = torch.zeros(u.shape[0], *a_bar.shape, dtype=a_bar.dtype, device=u.device)  # (B, H, N/2)
        out = []
        for k in range(u.shape[1]):
            x = a_bar * x + b_bar * u[:, k, :, None]
            out.append(2 * (x * c).sum(-1).real + self.d.float() * u[:, k])  # (B, H)
        return torch.stack(out, dim=1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.convolve(u) if self.training else self.recur(u)


class SSMLayer(nn.Module):
    """Pre-norm residual layer: x + W·dropout(gelu(SSM(norm(x))))."""

    def __init__(self, width: int, state: int, dropout: float, dt_min: float = 0.001, dt_max: float = 0.1) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.ssm = DiagonalSSM(width, state, dt_min, dt_max)
        self.out = nn.Linear(width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ssm(self.norm(x)).to(x.dtype)  # (B, L, H)
        return x + self.drop(self.out(F.gelu(h)))


class StateSpace(nn.Module):
    def __init__(self, cfg: StateSpaceConfig) -> None:
        super().__init__()
        self.embed = nn.Linear(cfg.n_inputs, cfg.d_model)
        self.layers = nn.ModuleList(
            SSMLayer(cfg.d_model, cfg.state, cfg.dropout, cfg.dt_min, cfg.dt_max) for _ in range(cfg.layers)
        )
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = Head(cfg.d_model, cfg)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Per-step hidden states (B, L, F) → (B, L, D), causal (what `qfactory pretrain` trains)."""
        h = self.embed(x)  # (B, L, D)
        for layer in self.layers:
            h = layer(h)
        return self.norm(h)

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.encode(x)[:, -1], ids)  # the last (prediction) step: (B, n_outputs)


class StateSpaceModel(SequenceModel):
    name = "state_space"
    config = StateSpaceConfig
    network = StateSpace
    fast_test = {"seq_len": 6, "d_model": 8, "state": 4, "layers": 1}

    def _check_architecture(self) -> None:
        super()._check_architecture()
        p = self.params
        if p["state"] % 2:
            raise ModelError(
                f"model 'state_space': state {p['state']} must be even (complex modes come in "
                "conjugate pairs); change model.params.state"
            )
        if p["dt_min"] > p["dt_max"]:
            raise ModelError(
                f"model 'state_space': dt_min {p['dt_min']} is above dt_max {p['dt_max']}; "
                "swap model.params.dt_min and dt_max"
            )
