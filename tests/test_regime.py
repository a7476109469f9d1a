"""Issue 20 §4: the "regime" feature set. The HMM regime probability is fitted on training rows
only, filtered (never smoothed), and the same in training, bundles and serving."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers import prices_rewritten_after
from serving import Trained, train

from quant_cli import stages
from quant_cli.cli import app
from quant_cli.data.store import load_bars, write_store
from quant_cli.data.synthetic import generate
from quant_cli.errors import DataError
from quant_cli.features import REGISTRY, compute_features
from quant_cli.features.regime import HMM_FEATURE
from quant_cli.features.testing import assert_causal
from quant_cli.pipeline.fitted import FittedPipeline
from quant_cli.pipeline.lookback import tail_bars
from quant_cli.pipeline.regime import GaussianHMM, filtered, fit_hmm, smoothed
from quant_cli.serve.bundle import load

REGIME = ('features.sets=["regime"]', "features.windows=[5]")


def planted_returns(bars: int = 800, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(returns, states): a persistent two-state chain, 1% daily volatility when calm, 3% when not."""
    rng = np.random.default_rng(seed)
    switches = rng.random(bars) < 0.02
    states = np.cumsum(switches) % 2
    return rng.normal(0.0, np.where(states == 1, 0.03, 0.01)), states


def test_the_regime_set_holds_volatility_trend_and_hmm_features() -> None:
    names = REGISTRY.resolve({"sets": ["regime"], "windows": [20]}).names
    assert names == ["regime_bull_20", "regime_vol_pct_20", "regime_vol_state_20", HMM_FEATURE]


def test_hmm_recovers_planted_regimes() -> None:
    sequences, states = zip(*(planted_returns(seed=s) for s in range(3)))
    model = fit_hmm(list(sequences))
    assert model.variances[1] > 4 * model.variances[0]  # state 1 is the turbulent one
    assert np.all(np.diag(model.transition) > 0.9)
    for probability, state in zip(filtered(model, list(sequences)), states):
        assert ((probability > 0.5) == state).mean() > 0.85


def test_filtered_probabilities_ignore_the_future_and_smoothed_ones_do_not() -> None:
    """The property the feature rests on, at the model level: rewriting returns after t leaves the
    filtered probability at every bar <= t as it was; the smoothed one moves (so this bites)."""
    returns, _ = planted_returns()
    model = fit_hmm([returns])
    t = 400
    rewritten = returns.copy()
    rewritten[t + 1 :] = np.random.default_rng(9).normal(0.0, 0.03, len(returns) - t - 1)
    before, after = filtered(model, [returns])[0], filtered(model, [rewritten])[0]
    np.testing.assert_array_equal(before[: t + 1], after[: t + 1])
    assert np.abs(smoothed(model, [returns])[0][: t + 1] - smoothed(model, [rewritten])[0][: t + 1]).max() > 1e-3


@pytest.fixture(scope="module")
def fitted_pipeline(small_panel: pl.DataFrame) -> FittedPipeline:
    pipeline = FittedPipeline(
        features=["regime_vol_pct_5", HMM_FEATURE], preprocess={"scaler": "zscore", "fill": "zero", "clip": 0.0}
    )
    training = small_panel.filter(pl.col("ts") < small_panel["ts"].unique().sort()[150])
    return pipeline.fit(compute_features(training, pipeline.features))


def test_the_pipelines_regime_feature_is_causal(fitted_pipeline: FittedPipeline, small_panel: pl.DataFrame) -> None:
    """The causality harness over the fitted pipeline's feature path (what serving computes): it
    fails if the regime probability is smoothed (forward-backward) instead of filtered."""

    def compute(bars: pl.DataFrame) -> pl.DataFrame:
        return fitted_pipeline.compute(bars).select("symbol", "ts", HMM_FEATURE)

    assert compute(small_panel)[HMM_FEATURE].null_count() == small_panel["symbol"].n_unique()  # first bars: no return
    assert_causal(compute, small_panel)


def test_feature_rows_without_history_are_refused_by_a_regime_bundle(regime_run: Trained, regime_bundle: Path) -> None:
    loaded = load(regime_bundle)
    rows = pl.read_parquet(next((regime_run.run.path / "split").glob("rows.parquet"))).head(3).select("symbol", "ts")
    rows = rows.with_columns(pl.lit(0.0).alias(name) for name in loaded.pipeline.features)
    expected = f"feature '{HMM_FEATURE}' is filtered over each symbol's bar history; send bars"
    with pytest.raises(DataError, match=expected):
        loaded.score_features(rows)


@pytest.fixture(scope="module")
def regime_run(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return train(tmp_path_factory.mktemp("regime"), "lightgbm", REGIME)


@pytest.fixture(scope="module")
def regime_bundle(regime_run: Trained) -> Path:
    return stages.bundle_existing(regime_run.run, regime_run.data_dir).bundle


def test_bundle_predict_agrees_with_the_training_run(
    regime_run: Trained, regime_bundle: Path, runner, tmp_path: Path
) -> None:
    """Training filtered each symbol's whole history (the run's table); predict filters the bars of
    a request with the bundle's measured lookback: same scores to 1e-6."""
    bundle = regime_bundle
    need = json.loads((bundle / "input_schema.json").read_text())["x-qfactory"]["required_bars"]
    predictions = pl.read_parquet(regime_run.run.path / "predictions.parquet").filter(pl.col("segment") == "test")
    bars = load_bars(regime_run.data_dir, "p").with_columns(pl.col("symbol").cast(pl.String))
    t = predictions["ts"].unique().sort()[-5]
    source, out = tmp_path / "window.parquet", tmp_path / "scores.parquet"
    tail_bars(bars.filter(pl.col("ts") <= t), need).write_parquet(source)
    result = runner.invoke(app, ["predict", "--bundle", str(bundle), "--source", str(source), "--out", str(out)])
    assert result.exit_code == 0, result.output
    expected = predictions.filter(pl.col("ts") == t).sort("symbol")["score"].to_numpy()
    np.testing.assert_allclose(pl.read_parquet(out).sort("symbol")["score"].to_numpy(), expected, rtol=1e-6, atol=0)


def test_hmm_parameters_ignore_bars_after_the_training_segment(regime_run: Trained, tmp_path: Path) -> None:
    """Rewrite every bar after the training segment's last row: the fitted HMM and the scaler are
    the same (fit on training rows only), while the test rows' features did change."""
    boundaries = json.loads((regime_run.run.path / "split" / "boundaries.json").read_text())
    pipeline = json.loads((regime_run.run.path / "split" / "pipeline.json").read_text())
    bars = load_bars(regime_run.data_dir, "p").with_columns(pl.col("symbol").cast(pl.String))
    train_end = pl.Series([boundaries["segments"]["train"]["end"]]).str.to_datetime(time_zone="UTC")[0]
    data_dir = tmp_path / "data"
    write_store(data_dir, "p", prices_rewritten_after(bars, train_end, seed=5), "test")
    other = train(tmp_path, "lightgbm", REGIME, data_dir=data_dir)
    rewritten = json.loads((other.run.path / "split" / "pipeline.json").read_text())
    assert rewritten["regime"] == pipeline["regime"]
    # Scaler statistics to 1e-12 relative: polars may sum the same training values in another order when
    # the table around them differs (seen: 1 ulp on a std); a leak of later bars moves them far more.
    state, expected = rewritten["state"], pipeline["state"]
    assert {k: v for k, v in state.items() if k not in ("center", "scale")} == {
        k: v for k, v in expected.items() if k not in ("center", "scale")
    }
    for stat in ("center", "scale"):
        assert state[stat] == pytest.approx(expected[stat], rel=1e-12, abs=0)
    late = pl.read_parquet(other.run.path / "predictions.parquet").filter(pl.col("segment") == "test")["score"]
    early = pl.read_parquet(regime_run.run.path / "predictions.parquet").filter(pl.col("segment") == "test")["score"]
    assert not np.allclose(late.to_numpy(), early.to_numpy())


def test_a_planted_two_regime_hmm_is_json_round_tripped() -> None:
    model = fit_hmm([planted_returns()[0]])
    again = GaussianHMM.from_json(json.loads(json.dumps(model.to_json())))
    np.testing.assert_array_equal(again.transition, model.transition)


WF_RECIPE = [
    'data.dataset="p"',
    "label.horizon=3",
    "model.params.n_estimators=10",
    "model.params.min_data_in_leaf=20",
    "train.threads=1",
    "walkforward.train=120",
    "walkforward.test=40",
    'features.sets=["regime"]',
    "features.windows=[5]",
]


def _fold(data_dir: Path, index: int):
    """Walk-forward fold `index`: its FoldTask and fitted pipeline and test scores."""
    from quant_cli.data.store import pin
    from quant_cli.dataset.table import build_table, new_pipeline
    from quant_cli.recipe import load_recipe
    from quant_cli.walkforward.execute import fit_fold
    from quant_cli.walkforward.folds import build_folds
    from quant_cli.walkforward.stage import _tasks

    recipe = load_recipe(None, WF_RECIPE)
    snapshot = pin(data_dir, "p")
    table, bars, adjustment = build_table(recipe, snapshot)
    folds = build_folds(table.rows.filter(pl.col("label").is_not_null())["ts"].to_numpy(), recipe["walkforward"], 3)
    template = new_pipeline(recipe, table, snapshot.manifest, adjustment)
    tasks = list(_tasks(folds, table, template, bars.select("symbol", "ts"), recipe, "cpu"))
    pipeline, _, scored = fit_fold(tasks[index])
    return folds[index], pipeline, scored


def test_walkforward_fits_the_hmm_per_fold_on_its_training_window_only(tmp_path: Path) -> None:
    """Each fold fits its own HMM (two folds, two models); rewriting every bar after fold 1's
    training end leaves its HMM and scaler as they were, while its test scores move."""
    bars = generate(symbols=4, bars=420, seed=3)
    write_store(tmp_path / "a", "p", bars, "test")
    _, first, _ = _fold(tmp_path / "a", 0)
    fold, pipeline, scored = _fold(tmp_path / "a", 1)
    assert first.regime != pipeline.regime
    write_store(tmp_path / "b", "p", prices_rewritten_after(bars, fold.train_end), "test")
    _, rewritten, scored_b = _fold(tmp_path / "b", 1)
    assert rewritten.regime == pipeline.regime and rewritten.state == pipeline.state
    assert scored.height == scored_b.height
    assert not np.allclose(scored["score"].to_numpy(), scored_b["score"].to_numpy())


def test_the_runs_backtest_reports_results_by_regime(regime_run: Trained, runner) -> None:
    result = runner.invoke(app, ["backtest", "--run", str(regime_run.run.path), "--data-dir", str(regime_run.data_dir)])
    assert result.exit_code == 0, result.output
    by_regime = json.loads((regime_run.run.path / "metrics.json").read_text())["backtest"]["by_regime"]
    assert set(by_regime) <= {"low", "normal", "high", "unknown"} and len(by_regime) >= 2
    assert abs(sum(r["share"] for r in by_regime.values()) - 1.0) < 1e-12
    assert "By market regime" in (regime_run.run.path / "backtest" / "report.html").read_text()


def test_cross_validation_refits_the_hmm_per_fold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Purged k-fold: every fold fits its own HMM on its own training rows (one fit per fold plus
    the run's), and the out-of-fold scores come out."""
    import quant_cli.pipeline.fitted as fitted

    fits: list[int] = []
    real = fitted.fit_hmm

    def counting(sequences):  # noqa: ANN001, ANN202
        fits.append(sum(int(np.isfinite(s).sum()) for s in sequences))
        return real(sequences)

    monkeypatch.setattr(fitted, "fit_hmm", counting)
    trained = train(tmp_path, "lightgbm", (*REGIME, 'split.method="purged_kfold"', "split.folds=3"))
    cv = json.loads((trained.run.path / "metrics.json").read_text())["cv"]
    assert len(cv["fold_ic"]) == 3 and all(np.isfinite(cv["fold_ic"]))
    assert len(fits) == 4 and len(set(fits)) == 4  # the run's fit and three folds', each on different rows
