"""Probabilistic and deflated Sharpe ratios against hand computation, and the trial ledger."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from scipy.stats import norm

from quant_cli.backtest.metrics import deflated_sharpe_ratio, expected_max_sharpe, probabilistic_sharpe_ratio
from quant_cli.runs.ledger import deflated, ledger


def test_psr_uses_raw_kurtosis():
    # SR 0.1 per period over 250 periods, skew -0.5, raw kurtosis 6:
    # denominator sqrt(1 + 0.05 + 5/4 * 0.01) = sqrt(1.0625)
    expected = norm.cdf(0.1 * math.sqrt(249) / math.sqrt(1.0625))
    assert probabilistic_sharpe_ratio(0.1, 250, -0.5, 6.0) == pytest.approx(expected, rel=1e-12)
    # normal returns (raw kurtosis 3) must not be treated as excess kurtosis 3
    assert probabilistic_sharpe_ratio(0.1, 250, 0.0, 3.0) == pytest.approx(
        norm.cdf(0.1 * math.sqrt(249) / math.sqrt(1.005)), rel=1e-12
    )


def test_expected_max_sharpe_matches_the_paper_formula():
    n, var = 100, 0.5**2
    g = 0.5772156649015329
    expected = 0.5 * ((1 - g) * norm.ppf(1 - 1 / n) + g * norm.ppf(1 - 1 / (n * math.e)))
    assert expected_max_sharpe(n, var) == pytest.approx(expected, rel=1e-12)
    assert expected_max_sharpe(1, var) == 0.0


def test_more_trials_deflate_more():
    one = deflated_sharpe_ratio(0.1, 500, 0.0, 3.0, 1, 0.002)
    many = deflated_sharpe_ratio(0.1, 500, 0.0, 3.0, 200, 0.002)
    assert one == pytest.approx(probabilistic_sharpe_ratio(0.1, 500, 0.0, 3.0))
    assert many < one


def _run(root: Path, name: str, created: str, sharpe: float, segment: str = "test", dataset: str = "d") -> None:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(
        json.dumps({"run_id": name, "created": created, "dataset": {"name": dataset}})
    )
    block = {
        "sharpe": sharpe,
        "segment": segment,
        "periods": 252,
        "periods_per_year": 252.0,
        "skew": 0.0,
        "kurtosis": 3.0,
    }
    (folder / "metrics.json").write_text(json.dumps({"backtest": block}))


def test_ledger_counts_test_segment_runs_per_dataset_in_creation_order(tmp_path):
    _run(tmp_path, "b", "2026-01-02", 1.5)
    _run(tmp_path, "a", "2026-01-01", 0.5)
    _run(tmp_path, "v", "2026-01-03", 3.0, segment="val")  # model selection, not a trial
    _run(tmp_path, "o", "2026-01-04", 2.0, dataset="other")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    trials = ledger(tmp_path, "d")
    assert [t.run_id for t in trials] == ["a", "b"]
    first, second = (deflated(t, trials) for t in trials)
    assert first["n_trials"] == 1 and second["n_trials"] == 2
    per_period = [0.5 / math.sqrt(252), 1.5 / math.sqrt(252)]
    variance = (per_period[0] - per_period[1]) ** 2 / 2
    assert second["sharpe_variance"] == pytest.approx(variance)
    assert second["deflated_sharpe"] == pytest.approx(deflated_sharpe_ratio(per_period[1], 252, 0.0, 3.0, 2, variance))
