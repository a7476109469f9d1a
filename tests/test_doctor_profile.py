"""`qfactory doctor` and `qfactory profile` (issue 22): one screen or JSON, exit 0 unless what was
asked for cannot work, one-line refusals."""

from __future__ import annotations

import json

import pytest

from quant_cli.cli import app
from quant_cli.models import device as device_mod
from quant_cli.models.registry import torch_models

CUDA_MISSING = (
    "train.device 'cuda' was requested but CUDA is not available (no GPU, or torch was built without "
    "CUDA); use --device cpu or drop --strict-device"
)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(device_mod, "_cuda_count", lambda: 0)
    monkeypatch.setattr(device_mod, "_warned", set())


def test_doctor_json_names_versions_build_homes_and_free_disk(runner, tmp_path):
    result = runner.invoke(app, ["doctor", "--json", "--data-dir", str(tmp_path / "d"), "--runs-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["problems"] == [] and report["libraries"]["torch"] and report["libraries"]["polars"]
    assert report["torch"]["installed"] and set(report["torch"]) >= {"cuda", "cudnn", "devices", "mps", "threads"}
    data, runs = report["homes"]["data"], report["homes"]["runs"]
    assert (data["path"], data["exists"], data["writable"]) == (str((tmp_path / "d").resolve()), False, True)
    assert runs["exists"] and runs["free_gb"] > 0
    assert set(report["ray"]) == {"version", "train", "address"} and "cache_dir" in report["kernels"]


def test_doctor_screen_is_short_and_exits_0(runner, tmp_path):
    result = runner.invoke(app, ["doctor", "--runs-dir", str(tmp_path), "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) <= 24 and lines[0].startswith("qfactory ") and any(line.startswith("torch ") for line in lines)
    assert any(line.startswith("runs home: ") and "GiB free" in line for line in lines)


def test_doctor_exits_2_when_the_asked_device_cannot_work(runner, tmp_path, no_gpu):
    homes = ["--runs-dir", str(tmp_path), "--data-dir", str(tmp_path)]
    result = runner.invoke(app, ["doctor", "--device", "cuda", *homes])
    assert result.exit_code == 2
    assert result.stdout.splitlines()[-1] == f"problem: {CUDA_MISSING}"
    assert result.stderr.strip().splitlines() == [f"error: {CUDA_MISSING}"]


def test_doctor_refuses_an_unknown_backend_in_one_line(runner):
    result = runner.invoke(app, ["doctor", "--backend", "slurm"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == ["error: --backend 'slurm' is not a backend; allowed: local, ray"]


def test_profile_json_gives_one_row_per_length_shortest_first(runner):
    result = runner.invoke(
        app,
        [
            "profile",
            "--model",
            "lstm",
            "-L",
            "8,4",
            "-b",
            "4",
            "--features",
            "3",
            "--steps",
            "1",
            "--device",
            "cpu",
            "--set",
            "model.params.hidden=4",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["device"] == "cpu" and [r["seq_len"] for r in out["rows"]] == [4, 8]
    for row in out["rows"]:
        assert row["samples_per_s"] > 0 and row["peak_memory_mb"] > 0
        assert (row["memory"], row["precision"], row["batch_size"]) == ("process peak RSS", "fp32", 4)


def test_profile_table(runner):
    result = runner.invoke(
        app, ["profile", "--model", "mlp", "-L", "1", "-b", "4", "--features", "3", "--steps", "1", "-q"]
    )
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split()[:5] == ["seq_len", "batch", "samples/s", "ms/step", "peak"] and row.split()[:2] == ["1", "4"]


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--model", "lightgbm"],
            f"qfactory profile measures torch models ({', '.join(torch_models())}); 'lightgbm' is not one",
        ),
        (["--model", "lstm", "-L", "8,x"], "--seq-len 'x' is not a positive integer; pass e.g. --seq-len 32,64,128"),
        (
            ["--model", "lstm", "--set", "train.epochs=3"],
            "--set 'train.epochs=3': profile takes only model.params.KEY=VALUE, e.g. --set model.params.hidden=128",
        ),
        (
            ["--model", "lstm", "--precision", "int8"],
            "--precision 'int8' is not a precision; allowed: auto, fp32, bf16, fp16",
        ),
    ],
)
def test_profile_refuses_bad_input_in_one_line(runner, args, line):
    result = runner.invoke(app, ["profile", *args, "-b", "2", "--features", "2", "--steps", "1"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"error: {line}"]
