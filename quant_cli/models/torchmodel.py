"""The base of every torch model (mlp, lstm, gru, tcn, transformer): one fit, one predict, one
save format, all on the one training loop (quant_cli.models.torch.loop).

A family declares its network (`_net_config`, `_build`) and how its rows become `Samples`: one
row each (tabular) or a window ending at each row (sequence). Loop settings come from the
recipe's [train] section (`train=` at construction) and mean the same for every family;
architecture comes from model.params.

Regression targets are standardised inside the model (returns are ~1e-2; unscaled, the first
epochs would only shrink the output); the sharpe loss scales them without centring, since its
sign is the trade. A model fine-tuned into a trading policy (`qfactory finetune`, fit_info.policy)
scores tanh(output): the policy's deterministic position in [-1, 1]. Weights are a state dict of
tensors saved with `torch.save` and loaded with
`weights_only=True`; `history.json` holds every epoch's numbers. Torch is imported on first fit
or load, so the model registry loads without it.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from quant_cli.errors import ModelError
from quant_cli.io import write_bytes_atomic, write_json_atomic
from quant_cli.models.base import TASKS, Inputs, Model
from quant_cli.models.torch.config import LoopConfig, NetConfig, declared

LOSSES = ("mse", "huber", "sharpe", "pnl")
_UNCENTRED = ("sharpe", "pnl")  # losses whose target sign is the trade: targets are scaled, never centred
ONE_PROCESS = {"world_size": 1, "backend": "none", "launcher": "none"}  # fit_info of a fit without a process group


class TorchModel(Model):
    family = "neural"
    tasks = TASKS
    sample_weights = True
    gpu = True
    early_stopping = True
    # An architecture declares these in its one file under models/torch/ (see docs/models.md):
    config: ClassVar[type[NetConfig]]  # its config dataclass: model.params are its `param` fields
    network: ClassVar[type]  # its nn.Module, built from a config instance
    fixed: ClassVar[dict[str, Any]] = {}  # config fields the class fixes (e.g. the recurrent cell)
    fast_test: ClassVar[dict[str, Any]]  # tiny model.params the model-zoo test harness trains with
    fast_train: ClassVar[dict[str, Any]] = {}  # [train] keys over the harness's short loop, if it needs others

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if "config" in cls.__dict__:  # the config dataclass is the one source of defaults, limits and docs
            cls.defaults, cls.limits, cls.docs = declared(cls.config)
        if "name" in cls.__dict__:
            missing = [a for a in ("config", "network", "fast_test") if not hasattr(cls, a)]
            if missing:
                raise TypeError(f"torch model {cls.__dict__['name']!r} must declare {', '.join(missing)}")
        super().__init_subclass__(**kwargs)

    def _check_params(self) -> None:
        self.loop = LoopConfig.from_section(self.train_settings)
        if self.loop.loss not in LOSSES:
            raise ModelError(f"train.loss {self.loop.loss!r} is not a loss; allowed: {', '.join(map(repr, LOSSES))}")
        if self.output == "path" and self.loop.loss not in ("mse", "huber"):
            raise ModelError(
                f"train.loss {self.loop.loss!r} trades one score, but model '{self.name}' forecasts a path; "
                "use train.loss = 'mse' or 'huber'"
            )
        if self.is_classifier and self.loop.loss != "mse":
            raise ModelError(
                f"train.loss {self.loop.loss!r} is a regression loss; a classifier trains on cross-entropy, "
                "so leave train.loss at 'mse' (its default) or set model.task = 'regression'"
            )
        self._check_architecture()

    def _check_architecture(self) -> None:
        """A family's own checks beyond each value's type and range."""

    def _usable_device(self, resolved: str) -> str:
        return resolved  # torch runs on cpu, cuda:N and mps alike

    def set_checkpoints(self, folder: Path | None, resume: bool = False) -> None:
        self.checkpoint_dir, self.resume = folder, resume

    def set_init(self, pretrained) -> None:
        """Warm-start the next fit from a pretrain run (quant_cli.models.torch.warmstart.Pretrained)."""
        self.init = pretrained

    def _warm_start(self, net) -> None:
        pretrained = getattr(self, "init", None)
        self.init_ = None
        if pretrained is not None:
            from quant_cli.models.torch.warmstart import load_into

            self.init_ = {"run": pretrained.run_id, "tensors": load_into(net, pretrained, self.params)}

    # ---- the family's part ----------------------------------------------------------------------

    def _net_config(self, n_inputs: int) -> NetConfig:
        kind, n_symbols = self._symbol_input()
        outputs = self.n_classes if self.is_classifier else getattr(self, "horizon_", 1)
        return self.config(
            n_inputs=n_inputs, n_outputs=outputs, symbol_kind=kind, n_symbols=n_symbols, **self.params, **self.fixed
        )

    def _symbol_input(self) -> tuple[str, int]:
        """(symbol_kind, n_symbols) the network encodes itself (quant_cli.models.torch.heads)."""
        return self.encoder_.kind, len(self.encoder_.symbols_)

    def _build(self, config: NetConfig):
        return self.network(config)

    def _samples(self, rows: Inputs, y: np.ndarray | None = None, w: np.ndarray | None = None):
        """(Samples on the training device, (n,) bool mask of the rows they cover)."""
        raise NotImplementedError

    # ---- fit and predict --------------------------------------------------------------------------

    def _scale_targets(self, y: np.ndarray) -> None:
        if self.is_classifier:
            return
        self.y_std_ = float(y.std()) or 1.0
        self.y_mean_ = 0.0 if self.loop.loss in _UNCENTRED else float(y.mean())

    def _scaled(self, y: np.ndarray | None) -> np.ndarray | None:
        return y if y is None or self.is_classifier else (y - self.y_mean_) / self.y_std_

    def _fit(self, train, y, val, y_val, sample_weight, early_stopping):
        import torch

        from quant_cli.models.torch import distributed, loop, losses

        self._scale_targets(y)
        self.policy_ = None  # a fit from labels is a forecaster again, whatever it was fine-tuned into
        if self.output == "path":
            self.horizon_ = y.shape[1]  # one output per step of the path
        cfg = self.loop if early_stopping else replace(self.loop, patience=0)
        folder = getattr(self, "checkpoint_dir", None)
        world = distributed.current()  # a data-parallel group (`train --nproc N`), or None
        cuda = self.device_.startswith("cuda")
        if cuda:  # the fit's own peak, recorded in fit_info
            torch.cuda.reset_peak_memory_stats(torch.device(self.device_))
        with loop.reproducible(self.seed, self.device_, world.cpu_threads(self.threads) if world else self.threads):
            self.config_ = self._net_config(self._n_inputs(train))
            net = self._build(self.config_).to(self.device_)
            self._warm_start(net)
            data, _ = self._samples(train, self._scaled(y), sample_weight)
            if len(data) == 0:
                raise ModelError(
                    f"model '{self.name}' has no training rows it can use (every row is in a window's warm-up); "
                    "use a shorter model.params.seq_len or more data"
                )
            held = self._samples(val, self._scaled(y_val))[0] if val is not None and len(val.X) else None
            result = loop.train(
                net,
                data,
                held,
                cfg,
                self._loss(losses),
                device=self.device_,
                seed=self.seed,
                reporter=self.reporter,
                name=self.name,
                checkpoints=loop.Checkpoints(folder) if folder else None,
                resume=getattr(self, "resume", False),
                on_epoch=self._epoch_report(net, val),
                world=world,
                trading=self._trading(),
            )
        self._release()
        peak = torch.cuda.max_memory_allocated(torch.device(self.device_)) if cuda else None
        self.peak_cuda_mb_ = None if peak is None else round(peak / 2**20, 1)
        self.precision_ = result.precision
        self.parallel_ = (
            ONE_PROCESS
            if world is None
            else {"world_size": world.size, "backend": world.backend, "launcher": world.launcher}
        )
        self.net_, self.history_ = net, result.history
        self.epochs_run_, self.best_epoch_, self.resumed_from_ = (
            result.epochs_run,
            result.best_epoch,
            result.resumed_from,
        )
        self.samples_ = len(data)

    def _loss(self, losses):
        """The [train] loss; pnl's cost is train.pnl_cost_bps per unit of position traded, in the
        scaled targets' units (returns / y_std_), so it keeps its meaning whatever the scale."""
        cost = self.loop.pnl_cost_bps / 1e4 / (self.y_std_ if not self.is_classifier else 1.0)
        return losses.loss_fn(self.loop.loss, self.is_classifier, cost, self.loop.pnl_drawdown_penalty)

    def _trading(self):
        """What the per-epoch validation PnL telemetry needs (a regression score; models/torch/telemetry.py)."""
        if self.is_classifier or self.output == "path":
            return None
        from quant_cli.models.torch.telemetry import Trading

        return Trading(self.loop.pnl_cost_bps / 1e4, self.y_mean_, self.y_std_)

    def _epoch_report(self, net, val: Inputs | None):
        """Per-epoch StepReport call (Model.fit(report=...)): the validation scores of the current
        weights, computed only when the hook asks for them."""
        report = getattr(self, "_report", None)
        if report is None or val is None:
            return None

        def on_epoch(epoch: int) -> None:
            def val_scores():
                self.net_ = net  # score the weights as they are after this epoch
                return self._scores(self._predict(val))

            report(epoch, val_scores)

        return on_epoch

    def _n_inputs(self, rows: Inputs) -> int:
        return rows.X.shape[1]

    def _release(self) -> None:
        """Drop per-fit caches (a panel on the device)."""

    def _predict(self, rows: Inputs) -> np.ndarray:
        import torch

        from quant_cli.models.torch.loop import infer

        samples, mask = self._samples(rows)
        out = infer(self.net_, samples, self.device_, self.loop.inference_precision).double()  # (m, K) on CPU
        self._release()
        if self.is_classifier:
            values = torch.softmax(out, dim=1).numpy()
        elif getattr(self, "policy_", None):  # a fine-tuned policy (quant_cli.finetune): its position
            values = torch.tanh(out[:, 0]).numpy()
        elif self.output == "path":  # the score: the path's one-bar returns compounded, as the label compounds them
            values = np.prod(1.0 + (out.numpy() * self.y_std_ + self.y_mean_), axis=1) - 1.0
        else:
            values = out[:, 0].numpy() * self.y_std_ + self.y_mean_
        full = np.full((len(mask), *values.shape[1:]), np.nan)
        full[mask] = values  # rows without an input (a window's warm-up) stay NaN: unscored
        return full

    # ---- persistence ------------------------------------------------------------------------------

    def _fit_info(self) -> dict[str, Any]:
        info = {
            "epochs_run": self.epochs_run_,
            "best_epoch": self.best_epoch_,
            "config": asdict(self.config_),
            "train": self.loop.to_json(),
            "samples": self.samples_,
            # what ran, not what was asked: autocast dtype of training, and the data-parallel group
            "precision": getattr(self, "precision_", "fp32"),
            "inference_precision": self.loop.inference_precision,
            **getattr(self, "parallel_", ONE_PROCESS),
        }
        if getattr(self, "peak_cuda_mb_", None) is not None:
            info["peak_cuda_memory_mb"] = self.peak_cuda_mb_  # torch.cuda.max_memory_allocated during the fit
        if getattr(self, "resumed_from_", 0):
            info["resumed_from_epoch"] = self.resumed_from_
        if getattr(self, "init_", None):
            info["init"] = self.init_  # the pretrain run and the tensors warm-started from it
        if not self.is_classifier:
            info.update(y_mean=self.y_mean_, y_std=self.y_std_)
        if self.output == "path":
            info["horizon"] = self.horizon_
        if getattr(self, "policy_", None):
            info["policy"] = self.policy_
        return info

    def _save_native(self, folder: Path) -> None:
        import io

        import torch

        # Serialised in memory, then written by qfactory: on a full disk torch's own writer says only "file write
        # failed"; write_bytes_atomic names the file (one StorageError line).
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in self.net_.state_dict().items()}, buffer)
        write_bytes_atomic(folder / "weights.pt", buffer.getvalue())
        write_json_atomic(folder / "history.json", {"model": self.name, "epochs": self.history_})

    def _load_native(self, folder: Path, meta: dict[str, Any]) -> None:
        import torch

        from quant_cli.io import read_json

        info = meta["fit_info"]
        self.config_ = self._config_from_json(info["config"])
        self.loop = LoopConfig(**info["train"])
        self.epochs_run_, self.best_epoch_, self.samples_ = info["epochs_run"], info["best_epoch"], info["samples"]
        self.precision_ = info.get("precision", "fp32")
        self.peak_cuda_mb_ = info.get("peak_cuda_memory_mb")
        self.parallel_ = {k: info[k] for k in ONE_PROCESS if k in info} or ONE_PROCESS
        self.resumed_from_ = info.get("resumed_from_epoch", 0)
        self.init_ = info.get("init")
        if not self.is_classifier:
            self.y_mean_, self.y_std_ = info["y_mean"], info["y_std"]
        if self.output == "path":
            self.horizon_ = info["horizon"]
        self.policy_ = info.get("policy")  # scores are positions tanh(output) (quant_cli.finetune)
        history = folder / "history.json"
        self.history_ = read_json(history)["epochs"] if history.is_file() else []
        self.net_ = self._build(self.config_)
        self.net_.load_state_dict(torch.load(folder / "weights.pt", map_location="cpu", weights_only=True))
        self.net_.eval()

    def _config_from_json(self, data: dict[str, Any]) -> NetConfig:
        return self.config(**data)
