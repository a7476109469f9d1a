"""Parity (issue 12 §9): for the same bars, POST /predict on a real server, `qfactory predict` and the
training run's predictions.parquet agree to 1e-6 relative — LightGBM, the torch MLP and an LSTM (on
features, and on features plus raw-bar channels: windows of seq_len rows), through the public Model
API only. Requests carry only the bundle's measured number of bars, so this also holds
the lookback to its promise."""

from __future__ import annotations

import httpx
import numpy as np
import polars as pl
import pytest
from serving import LiveServer, train

from quant_cli import stages
from quant_cli.cli import app
from quant_cli.data.store import load_bars
from quant_cli.io import read_json
from quant_cli.pipeline.lookback import tail_bars
from quant_cli.serve.app import create_app
from quant_cli.serve.bundle import load
from quant_cli.serve.loaded import records

RTOL = 1e-6


@pytest.mark.parametrize("model", ["lightgbm", "mlp", "lstm", "lstm_bars"])
def test_server_batch_predict_and_training_agree(runner, tmp_path, model):
    trained = train(tmp_path, model)
    bundle = stages.bundle_existing(trained.run, trained.data_dir).bundle
    need = read_json(bundle / "input_schema.json")["x-qfactory"]["required_bars"]
    predictions = pl.read_parquet(trained.run.path / "predictions.parquet").filter(pl.col("segment") == "test")
    bars = load_bars(trained.data_dir, "p").with_columns(pl.col("symbol").cast(pl.String))
    moments = predictions["ts"].unique().sort()
    with LiveServer(create_app(load(bundle))) as live, httpx.Client(base_url=live.url, timeout=30) as client:
        for t in (moments[0], moments[len(moments) // 2], moments[-1]):
            window = tail_bars(bars.filter(pl.col("ts") <= t), need)
            served = client.post("/predict", json={"bars": records(window)}).json()["predictions"]
            source = tmp_path / "window.parquet"
            window.write_parquet(source)
            out = tmp_path / "scores.parquet"
            result = runner.invoke(
                app, ["predict", "--bundle", str(bundle), "--source", str(source), "--out", str(out)]
            )
            assert result.exit_code == 0, result.output
            batch = pl.read_parquet(out)
            trained_scores = predictions.filter(pl.col("ts") == t).sort("symbol")
            assert batch["symbol"].to_list() == trained_scores["symbol"].to_list() == [p["symbol"] for p in served]
            expected = trained_scores["score"].to_numpy()
            np.testing.assert_allclose(
                batch["score"].to_numpy(), expected, rtol=RTOL, atol=0, err_msg=f"{model} batch at {t}"
            )
            np.testing.assert_allclose(
                [p["score"] for p in served], expected, rtol=RTOL, atol=0, err_msg=f"{model} server at {t}"
            )
