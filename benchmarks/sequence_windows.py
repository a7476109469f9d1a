"""Benchmark: sequence-model training on window views vs materialised windows (issue 10).

    .venv/bin/python benchmarks/sequence_windows.py                      # 500 symbols x 2,500 bars x 64 features
    .venv/bin/python benchmarks/sequence_windows.py --symbols 50 --bars 1000 --max-batches 20 --threads 2

For each model (lstm, transformer) a child process builds a random float32 panel of
symbols x bars x features, fits the registered model for one epoch with seq_len windows gathered
per batch from the panel (quant_cli.models.torch.windows), predicts those windows, and prints
samples/s of that epoch and the peak RSS (VmHWM) of fit and predict, against the bound: 2.5 x
the float32 feature matrix + model and optimizer state (weights, gradients, two AdamW moments),
and next to what materialised windows
(samples x seq_len x features float32) would need. `--max-batches` caps the epoch (the panel
stays full size) so a CPU can run it; samples/s is per sample either way. `--checkpoint` turns on
the transformer's activation checkpointing (model.params.checkpoint: same results, less memory,
slower). Peak RSS is the process's high-water mark, so it counts allocator caching too: the loop
fixes glibc's mmap threshold (quant_cli.models.torch.memory), without which freed activations
stayed resident and the peak grew batch by batch (transformer, above the baseline: 0.91 GiB
after 5 batches, 1.21 GiB after 10).

Then, in the same run, on a panel small enough to materialise (`--ref-symbols`), the same network
trains one epoch twice: from window views (our loop) and from a materialise-then-TensorDataset
DataLoader (what the replaced pipelines do), alternated in one process so machine load hits both
alike; the ratio shows what the views cost or save.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

GIB = 1024**3
PARAMS = {"lstm": {"hidden": 64, "layers": 1}, "transformer": {"d_model": 64, "heads": 4, "layers": 2}}


def main() -> int:
    args = _parse()
    if args.side:
        print(json.dumps(_side(args)))
        return 0
    feature_bytes = args.symbols * args.bars * args.features * 4
    windows_bytes = args.symbols * (args.bars - args.seq_len + 1) * args.seq_len * args.features * 4
    print(
        f"panel {args.symbols:,} symbols x {args.bars:,} bars x {args.features} features, seq_len {args.seq_len}, "
        f"batch {args.batch}, device {args.device}, threads {args.threads}"
    )
    print(
        f"float32 feature matrix {feature_bytes / GIB:.2f} GiB; materialised "
        f"windows would need {windows_bytes / GIB:.1f} GiB"
    )
    for name in args.models.split(","):
        r = _child(args, name, "views")
        bound, used = 2.5 * feature_bytes + r["state_bytes"], r["peak_rss"] - r["baseline_rss"]
        label = f"{name}+ckpt" if args.checkpoint and name == "transformer" else name
        print(
            f"{label:<16} {r['samples_per_s']:>10,.0f} samples/s over "
            f"{r['samples']:,} windows; peak RSS {r['peak_rss'] / GIB:.2f} GiB, "
            f"{used / GIB:.2f} GiB above the interpreter + torch + qfactory "
            f"({r['baseline_rss'] / GIB:.2f} GiB) over fit + "
            f"predict (fit alone {(r['fit_rss'] - r['baseline_rss']) / GIB:.2f}); bound 2.5 x matrix + "
            f"model/optimizer state ({r['state_bytes'] / 2**20:.1f} MiB) = "
            f"{bound / GIB:.2f} GiB -> {'ok' if used <= bound else 'OVER'} "
            f"({used / bound:.0%} of the bound)"
        )
    for name in args.models.split(",") if args.ref_symbols else ():  # --ref-symbols 0: memory check only
        r = _child(args, name, "reference")
        print(
            f"{name:<12} reference panel {args.ref_symbols} symbols x {args.bars:,} "
            f"bars (best of {args.rounds}): views "
            f"{r['views']:,.0f} samples/s (peak RSS {r['views_rss'] / GIB:.2f} GiB), "
            f"materialised TensorDataset {r['dense']:,.0f} "
            f"samples/s (peak RSS {r['dense_rss'] / GIB:.2f} GiB); views/materialised = {r['views'] / r['dense']:.2f}x"
        )
    return 0


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--bars", type=int, default=2500)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument(
        "--max-batches", type=int, default=0, help="cap the epoch at this many batches (0: every window)"
    )
    parser.add_argument(
        "--ref-symbols", type=int, default=20, help="symbols of the panel that is also materialised (0: skip)"
    )
    parser.add_argument("--models", default="lstm,transformer")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--checkpoint", action="store_true", help="transformer: model.params.checkpoint = true")
    parser.add_argument("--rounds", type=int, default=2, help="reference epochs of each kind, alternated (best counts)")
    parser.add_argument("--side", choices=("views", "reference"), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    return parser.parse_args()


def _child(args: argparse.Namespace, name: str, side: str) -> dict:
    argv = [sys.executable, __file__, "--side", side, "--model", name, *_flags(args)]
    out = subprocess.run(argv, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _flags(args: argparse.Namespace) -> list[str]:
    """The parent's options for a child (switches only when on)."""
    flags = []
    for key, value in vars(args).items():
        if key not in ("side", "model") and value is not False:
            flags.append(f"--{key.replace('_', '-')}" if value is True else f"--{key.replace('_', '-')}={value}")
    return flags


def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _panel(symbols: int, bars: int, features: int, seed: int = 0):
    """A random float32 panel, written symbol by symbol (no float64 temporary of the whole)."""
    import numpy as np

    from quant_cli.models.panel import Panel

    rng = np.random.default_rng(seed)
    values = np.empty((symbols * bars, features), dtype=np.float32)
    for s in range(symbols):
        values[s * bars : (s + 1) * bars] = rng.standard_normal((bars, features), dtype=np.float32)
    names = np.repeat(np.array([f"S{s:04d}" for s in range(symbols)]), bars)
    ts = np.tile(np.arange(bars).astype("datetime64[D]").astype("datetime64[us]"), symbols)
    return Panel(values, names, ts)


def _side(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from quant_cli.models import registry  # noqa: F401 - imported before the baseline, like every other module
    from quant_cli.models.device import resolve_device
    from quant_cli.models.torch import loop, recurrent, transformer  # noqa: F401

    torch.set_num_threads(args.threads or torch.get_num_threads())
    device = resolve_device(args.device)
    baseline = _peak_rss()  # the interpreter, torch and qfactory: what any run pays before its data
    symbols = args.symbols if args.side == "views" else args.ref_symbols
    panel = _panel(symbols, args.bars, args.features)
    ends = np.flatnonzero(panel.position >= args.seq_len - 1)
    limit = args.max_batches * args.batch if args.side == "views" and args.max_batches else len(ends)
    ends = np.random.default_rng(1).permutation(ends)[:limit]
    y = np.random.default_rng(2).standard_normal(len(ends))
    if args.side == "views":
        return _fit_model(args, panel, ends, y, device, baseline)
    return _reference(args, panel, ends, y, device, baseline)


def _fit_model(args, panel, ends, y, device: str, baseline: int) -> dict:
    from quant_cli.models.panel import PanelRows
    from quant_cli.models.registry import create_model

    train = {"epochs": 1, "batch_size": args.batch, "patience": 0, "warmup": 0.0}
    extra = {"checkpoint": True} if args.checkpoint and args.model == "transformer" else {}
    model = create_model(
        args.model,
        "regression",
        {"seq_len": args.seq_len, **PARAMS[args.model], **extra},
        0,
        args.threads,
        device=device,
        train=train,
    )
    model.fit(PanelRows(panel, ends), y, feature_names=[f"f{i}" for i in range(args.features)])
    fit_rss = _peak_rss()
    model.predict(PanelRows(panel, ends))  # the inference path (predict, validation) under the same bound
    n_params = sum(p.numel() for p in model.net_.parameters())
    return {
        "samples_per_s": model.history_[0]["samples_per_s"],
        "samples": len(ends),
        "peak_rss": _peak_rss(),
        "fit_rss": fit_rss,
        "baseline_rss": baseline,
        "state_bytes": n_params * 4 * 4,
    }


def _network(args, device: str):
    from quant_cli.models.torch.recurrent import Recurrent, RecurrentConfig
    from quant_cli.models.torch.transformer import Transformer, TransformerConfig

    if args.model == "lstm":
        return Recurrent(RecurrentConfig(n_inputs=args.features, n_outputs=1, **PARAMS["lstm"])).to(device)
    return Transformer(
        TransformerConfig(n_inputs=args.features, n_outputs=1, seq_len=args.seq_len, **PARAMS["transformer"])
    ).to(device)


def _reference(args, panel, ends, y, device: str, baseline: int) -> dict:
    """The same network, one epoch at a time: window views through our loop, then materialised
    windows through a TensorDataset DataLoader, alternated (best of `--rounds` each) so that a
    shared machine's load hits both alike. Views run first, so the peak RSS after them is theirs."""
    import torch

    from quant_cli.models.torch import loop, losses
    from quant_cli.models.torch.config import LoopConfig
    from quant_cli.models.torch.windows import Samples, gather

    x = torch.from_numpy(panel.values).to(device)
    ends_t, y_t = torch.from_numpy(ends).to(device), torch.as_tensor(y, dtype=torch.float32, device=device)
    cfg = LoopConfig.from_section({"epochs": 1, "batch_size": args.batch, "warmup": 0.0, "patience": 0})
    views, dense, windows, views_rss = [], [], None, 0
    for _ in range(args.rounds):
        torch.manual_seed(0)
        net, started = _network(args, device), time.perf_counter()
        loop.train(net, Samples(x, ends_t, args.seq_len, y=y_t), None, cfg, losses.mse, device=device, seed=0)
        views.append(len(ends) / (time.perf_counter() - started))
        views_rss = views_rss or _peak_rss()
        if windows is None:  # (n, L, F) materialised once, as the replaced pipelines do before training
            windows = torch.cat([gather(x, chunk, args.seq_len) for chunk in ends_t.split(4096)])
        torch.manual_seed(0)
        net, started = _network(args, device), time.perf_counter()
        _dense_epoch(net, windows, y_t, cfg)
        dense.append(len(ends) / (time.perf_counter() - started))
    return {
        "views": max(views),
        "dense": max(dense),
        "views_rss": views_rss,
        "dense_rss": _peak_rss(),
        "baseline_rss": baseline,
    }


def _dense_epoch(net, windows, y, cfg) -> None:
    import torch

    from quant_cli.models.torch import losses

    data = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(windows, y), batch_size=cfg.batch_size, shuffle=True
    )
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    net.train()
    for xb, yb in data:
        loss = losses.mse(net(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
