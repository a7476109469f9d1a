"""Helpers for the bundle / predict / serve tests: a small trained run, its bundle, a live server.

Import as `from serving import ...` (tests/ is on sys.path, as for helpers.py).
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quant_cli import stages
from quant_cli.data.store import write_store
from quant_cli.data.synthetic import generate
from quant_cli.recipe import load_recipe
from quant_cli.runs.directory import Run

# Core features (rsi, MACD, ATR: recursive, ~320 bars of warm-up) on 4 symbols x 600 daily bars.
BASE = [
    'data.dataset="p"',
    'features.sets=["core"]',
    "features.windows=[5, 10]",
    "label.horizon=3",
    "train.threads=1",
    "train.early_stopping=0",
]
FAST = {
    "lightgbm": ["model.params.n_estimators=20", "model.params.min_data_in_leaf=20"],
    "mlp": ['model.name="mlp"', "train.epochs=3", "model.params.hidden=[8]"],
    "random_forest": ['model.name="random_forest"', "model.params.n_estimators=5"],
    "xgboost": ['model.name="xgboost"', "model.params.n_estimators=10", "model.params.max_depth=3"],
    # short exact warm-ups (ret_w: w + 1 bars), so a request one bar short of the window is wrong
    "lstm": [
        "features.sets=[]",
        'features.include=["ret_5", "ret_10"]',
        'model.name="lstm"',
        "model.params.seq_len=8",
        "model.params.hidden=8",
        "train.epochs=2",
        "train.batch_size=64",
        "train.patience=0",
    ],
    "lstm_bars": [
        "features.sets=[]",
        'features.include=["ret_5", "ret_10"]',
        'model.name="lstm"',
        "model.params.seq_len=8",
        "model.params.hidden=8",
        'model.params.inputs="both"',
        "train.epochs=2",
        "train.batch_size=64",
        "train.patience=0",
    ],
}


@dataclass
class Trained:
    data_dir: Path
    runs_dir: Path
    run: Run


def store(root: Path, symbols: int = 4, bars: int = 600) -> Path:
    data_dir = root / "data"
    write_store(data_dir, "p", generate(symbols=symbols, bars=bars, seed=3), "test")
    return data_dir


def train(root: Path, model: str = "lightgbm", extra: tuple[str, ...] = (), data_dir: Path | None = None) -> Trained:
    data_dir = data_dir or store(root)
    recipe = load_recipe(None, [*BASE, *FAST[model], *extra])
    runs_dir = root / "runs"
    return Trained(data_dir, runs_dir, stages.train_new(recipe, data_dir, runs_dir).run)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """A real uvicorn server on 127.0.0.1 in a thread, for as long as the `with` block lasts."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
