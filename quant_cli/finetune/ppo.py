"""PPO fine-tuning of a trained sequence model into a trading policy: one plain loop.

The supervised network is the actor: its output for the window ending at t (before the
model's target scaling) is the mean μ of a Gaussian over a pre-tanh value u, and the position is
a = tanh(u) ∈ [-1, 1]; at scoring the policy is deterministic, a = tanh(μ) (TorchModel scores a
fine-tuned model so). At update 0 the policy is therefore tanh of the supervised forecast in
units of the training returns' std, the position rule of the `sharpe` and `pnl` losses. A learned
log-std is the exploration. The critic is a small network over the actor's last hidden layer (the
input of its head, detached: value errors do not move the backbone) and the position held going
into the trade.

Why the actor reads the window only, and the position only through the critic and the costs: a
score must stay a pure function of the window ending at t, so that `predict`, `serve` and bundles
(which score a request's bars on their own) agree with the run to 1e-6, and so that rewriting the
bars after t can never change the position at t. Turnover is still priced: every reward is net
of the costs of moving from the position held to the new one.

Each update: a rollout over `steps_per_rollout` bars of the training segment (every symbol at
once, started flat at a random bar) → rewards from the backtest's own book (env.py) → GAE →
`epochs` passes of clipped-ratio minibatch steps with an entropy bonus and a value loss, stopped
early once the approximate KL passes 1.5 × target_kl. After every update the deterministic
policy is backtested on the validation segment; the best validation Sharpe's weights are kept
(update 0, the supervised model, included) and `patience` updates without a better one stop it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from quant_cli.finetune.env import Market, advantages, rewards
from quant_cli.models.torch.windows import Samples, gather
from quant_cli.report import SILENT, Reporter
from quant_cli.schema import SCHEMA

SCORE_BATCH = 4096  # windows per no-grad forward
VALUE_COEF = 0.5  # weight of the critic's loss (it has its own parameters: this only scales its step)
CRITIC_WIDTH = 64


def _key(name: str) -> Any:
    from dataclasses import field

    return field(default=SCHEMA["finetune"][name].default)


@dataclass
class PPOConfig:
    """The [finetune] keys of PPO; their defaults, limits and docs live in quant_cli.schema only."""

    updates: int = _key("updates")
    steps_per_rollout: int = _key("steps_per_rollout")
    epochs: int = _key("epochs")
    minibatch: int = _key("minibatch")
    clip: float = _key("clip")
    gamma: float = _key("gamma")
    lam: float = _key("lam")
    entropy: float = _key("entropy")
    learning_rate: float = _key("learning_rate")
    grad_clip: float = _key("grad_clip")
    init_std: float = _key("init_std")
    reward: str = _key("reward")
    sharpe_decay: float = _key("sharpe_decay")
    risk_penalty: float = _key("risk_penalty")
    target_kl: float = _key("target_kl")
    patience: int = _key("patience")

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> PPOConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in section.items() if k in names})


class ActorCritic(nn.Module):
    """The supervised network as the actor's mean, a learned log-std, and a critic."""

    def __init__(self, net: nn.Module, init_std: float) -> None:
        super().__init__()
        self.net = net
        self.log_std = nn.Parameter(torch.tensor(math.log(init_std)))
        out = net.head.out  # quant_cli.models.torch.heads.Head: its input is the actor's last hidden layer
        self.critic = nn.Sequential(nn.Linear(out.in_features + 1, CRITIC_WIDTH), nn.Tanh(), nn.Linear(CRITIC_WIDTH, 1))
        self._hidden: torch.Tensor | None = None
        self._hook = out.register_forward_pre_hook(self._keep)

    def _keep(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        self._hidden = args[0]

    def forward(
        self, x: torch.Tensor, ids: torch.Tensor | None, position: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows x (B, L, F), symbol ids (B,), positions held (B,) → (mean μ (B,), value (B,))."""
        mean = self.net(x, ids)[:, 0]
        state = torch.cat([self._hidden.detach().float(), position[:, None]], dim=1)  # (B, H + 1)
        return mean, self.critic(state)[:, 0]

    def release(self) -> nn.Module:
        """The actor network alone, without the hook (what the fine-tuned model saves)."""
        self._hook.remove()
        return self.net


@dataclass
class Segment:
    """A segment's scorable windows (`Samples`, in the order of the market's cells) and its market."""

    samples: Samples
    market: Market


@dataclass
class Finetuned:
    net: nn.Module
    history: list[dict[str, float]]
    best_update: int
    best_sharpe: float


def means(policy: ActorCritic, samples: Samples, device: str) -> np.ndarray:
    """(n,) the actor's μ of every window (no grad)."""
    out = []
    with torch.no_grad():
        for start in range(0, len(samples), SCORE_BATCH):
            idx = torch.arange(start, min(start + SCORE_BATCH, len(samples)))
            x, ids = samples.inputs(idx)
            out.append(policy.net(x.to(device), None if ids is None else ids.to(device))[:, 0].double().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


@dataclass
class Rollout:
    cells: np.ndarray  # (m,) sample index of each step taken
    positions: np.ndarray  # (m,) position held going into the trade (policy units)
    u: np.ndarray  # (m,) pre-tanh action drawn
    logp: np.ndarray  # (m,) its log-probability under the rollout's policy
    advantage: np.ndarray  # (m,)
    ret: np.ndarray  # (m,) GAE return (the critic's target)
    reward: float  # mean reward per step
    net: float  # mean net return per period of the book


def rollout(policy: ActorCritic, train: Segment, cfg: PPOConfig, rng: np.random.Generator, device: str) -> Rollout:
    """Trade one stretch of the training segment with the stochastic policy and score it."""
    market = train.market
    length = min(cfg.steps_per_rollout, market.steps)
    start = int(rng.integers(0, market.steps - length + 1))
    cell = market.cell[start : start + length]
    valid = cell >= 0
    cells = cell[valid]
    mean = means(policy, _subset(train.samples, cells), device)
    std = math.exp(float(policy.log_std.detach()))
    u = mean + std * rng.standard_normal(len(cells))
    positions = np.full(cell.shape, np.nan)
    positions[valid] = np.tanh(u)
    book = market.trade(positions, start)
    reward = rewards(book, market, cfg.reward, cfg.risk_penalty, cfg.sharpe_decay)
    held = book.before[valid]
    value = np.zeros(cell.shape)
    value[valid] = _values(policy, _subset(train.samples, cells), held, device)
    adv, ret = advantages(reward, value, valid, cfg.gamma, cfg.lam)
    logp = -0.5 * ((u - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)
    return Rollout(cells, held, u, logp, adv[valid], ret[valid], float(reward[valid].mean()), float(book.net.mean()))


def _subset(samples: Samples, cells: np.ndarray) -> Samples:
    idx = torch.as_tensor(cells, dtype=torch.int64)
    return Samples(samples.x, samples.ends[idx.to(samples.ends.device)], samples.seq_len, samples.part("ids", idx))


def _values(policy: ActorCritic, samples: Samples, positions: np.ndarray, device: str) -> np.ndarray:
    out = []
    with torch.no_grad():
        for start in range(0, len(samples), SCORE_BATCH):
            idx = torch.arange(start, min(start + SCORE_BATCH, len(samples)))
            x, ids = samples.inputs(idx)
            held = torch.as_tensor(positions[start : start + len(idx)], dtype=torch.float32, device=device)
            out.append(policy(x.to(device), None if ids is None else ids.to(device), held)[1].double().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def update(
    policy: ActorCritic,
    opt: torch.optim.Optimizer,
    samples: Samples,
    roll: Rollout,
    cfg: PPOConfig,
    seed: int,
    device: str,
) -> dict[str, float]:
    """`cfg.epochs` passes of clipped PPO over the rollout; stops early on the KL budget."""
    n = len(roll.cells)
    adv = (roll.advantage - roll.advantage.mean()) / (roll.advantage.std() + 1e-8)
    tensors = {
        name: torch.as_tensor(a, dtype=torch.float32, device=device)
        for name, a in (("pos", roll.positions), ("u", roll.u), ("logp", roll.logp), ("adv", adv), ("ret", roll.ret))
    }
    cells = torch.as_tensor(roll.cells, dtype=torch.int64)
    stats: dict[str, float] = {"kl": 0.0, "clipped": 0.0, "entropy": 0.0, "value_loss": 0.0, "epochs": 0}
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(cfg.epochs):
        order = torch.randperm(n, generator=generator)
        kls = []
        for start in range(0, n, cfg.minibatch):
            batch = order[start : start + cfg.minibatch]
            step = _minibatch_step(
                policy, opt, samples, cells[batch], {k: v[batch.to(device)] for k, v in tensors.items()}, cfg, device
            )
            kls.append(step["kl"])
            for key in ("clipped", "entropy", "value_loss"):
                stats[key] = step[key]
        stats["kl"], stats["epochs"] = float(np.mean(kls)), epoch + 1
        if cfg.target_kl > 0 and stats["kl"] > 1.5 * cfg.target_kl:
            break
    return stats


def _minibatch_step(
    policy: ActorCritic,
    opt: torch.optim.Optimizer,
    samples: Samples,
    cells: torch.Tensor,
    batch: dict[str, torch.Tensor],
    cfg: PPOConfig,
    device: str,
) -> dict[str, float]:
    x = gather(samples.x, samples.ends[cells.to(samples.ends.device)], samples.seq_len).to(device)
    ids = samples.part("ids", cells)
    mean, value = policy(x, None if ids is None else ids.to(device), batch["pos"])
    dist = torch.distributions.Normal(mean.float(), policy.log_std.exp())
    logp = dist.log_prob(batch["u"])
    ratio = torch.exp(logp - batch["logp"])  # (B,) new / rollout probability of the drawn action
    clipped = torch.clamp(ratio, 1.0 - cfg.clip, 1.0 + cfg.clip)
    policy_loss = -torch.min(ratio * batch["adv"], clipped * batch["adv"]).mean()
    value_loss = 0.5 * ((value - batch["ret"]) ** 2).mean()
    entropy = dist.entropy().mean()
    loss = policy_loss + VALUE_COEF * value_loss - cfg.entropy * entropy
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
    opt.step()
    with torch.no_grad():
        log_ratio = logp - batch["logp"]
        kl = float((torch.exp(log_ratio) - 1.0 - log_ratio).mean())  # ≥ 0, unbiased (Schulman's k3 estimator)
        share = float(((ratio - 1.0).abs() > cfg.clip).float().mean())
    return {"kl": kl, "clipped": share, "entropy": float(entropy.detach()), "value_loss": float(value_loss.detach())}


def finetune(
    net: nn.Module,
    train: Segment,
    validate: Callable[[np.ndarray], dict[str, Any]],
    val_samples: Samples,
    cfg: PPOConfig,
    *,
    seed: int,
    device: str,
    reporter: Reporter = SILENT,
) -> Finetuned:
    """PPO on `train`; `validate(positions)` backtests the deterministic positions of `val_samples`'
    windows and returns the summary whose `sharpe` picks the kept update. `net` is updated in place."""
    rng = np.random.default_rng(seed)
    policy = ActorCritic(net, cfg.init_std).to(device)
    policy.eval()  # dropout off: the rollout's and the update's probabilities are of the same policy
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.learning_rate, weight_decay=0.0)
    history = [_evaluated(0, policy, val_samples, validate, device)]
    best, best_update, best_state, waited = history[0]["val_sharpe"], 0, copy.deepcopy(net.state_dict()), 0
    for number in range(1, cfg.updates + 1):
        roll = rollout(policy, train, cfg, rng, device)
        stats = update(policy, opt, train.samples, roll, cfg, seed + number, device)
        entry = {**_evaluated(number, policy, val_samples, validate, device), "train_reward": roll.reward}
        entry.update(train_net_return=roll.net, std=math.exp(float(policy.log_std.detach())), **stats)
        history.append(entry)
        sharpe = entry["val_sharpe"]
        if math.isfinite(sharpe) and (not math.isfinite(best) or sharpe > best):
            best, best_update, best_state, waited = sharpe, number, copy.deepcopy(net.state_dict()), 0
        else:
            waited += 1
        reporter.info(
            f"finetune update {number}/{cfg.updates}: train reward {roll.reward:.4f}, val sharpe {sharpe:.2f} "
            f"(net exposure {entry['val_net_exposure']:.2f}, beta {entry['val_beta']:.2f}), kl {stats['kl']:.4f}"
        )
        if cfg.patience and waited >= cfg.patience:
            break
    actor = policy.release()
    actor.load_state_dict(best_state)
    actor.eval()
    return Finetuned(actor, history, best_update, best)


def _evaluated(
    number: int, policy: ActorCritic, samples: Samples, validate: Callable[[np.ndarray], dict[str, Any]], device: str
) -> dict[str, float]:
    summary = validate(np.tanh(means(policy, samples, device)))
    return {"update": number, **{f"val_{k}": _number(summary.get(k)) for k in EVAL_KEYS}}


EVAL_KEYS = ("sharpe", "net_exposure", "exposure", "beta", "mean_turnover", "annual_return")


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan


def config_json(cfg: PPOConfig) -> dict[str, Any]:
    return asdict(cfg)
