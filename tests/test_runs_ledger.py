"""The trial ledger in `runs ls` / `runs show`: every Sharpe ratio next to its deflated Sharpe ratio and N."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from runs_fakes import fake_run, stamp, trial
from runs_fakes import ls_json as _ls

from quant_cli.backtest.metrics import deflated_sharpe_ratio
from quant_cli.cli import app
from quant_cli.runs.ledger import deflated, deflated_now, ledger, psr

RUNS = Path("runs")


def test_best_of_200_trials_is_deflated_far_below_its_psr(runner):
    # 200 variants of a strategy with no skill: annualised Sharpe ~ N(0, 1) over two years of days.
    sharpes = np.random.default_rng(0).normal(0.0, 1.0, 200)
    for i, sharpe in enumerate(sharpes):
        fake_run(
            RUNS,
            f"v{i:03d}-20260101T000000-{i:04x}",
            stamp(i),
            dataset="spx",
            backtest=trial(float(sharpe), periods=504),
        )
    fake_run(RUNS, "other-20260101T000000-ffff", stamp(999), dataset="ftse", backtest=trial(3.0, periods=504))
    best = max(range(200), key=lambda i: sharpes[i])
    best_id = f"v{best:03d}-20260101T000000-{best:04x}"
    row = next(r for r in _ls(runner, "--dataset", "spx") if r["run_id"] == best_id)
    assert row["n_trials"] == 200
    info = json.loads(runner.invoke(app, ["runs", "show", best_id, "--json"]).stdout)
    (entry,) = info["ledger"]
    assert entry["n_trials"] == 200 and entry["n_trials_at_creation"] == best + 1
    assert entry["psr"] > 0.95  # alone, a Sharpe of ~2.6 looks significant
    assert entry["deflated_sharpe"] < 0.5 < entry["psr"] - 0.45  # the best of 200 is worth little
    assert entry["deflated_sharpe"] == pytest.approx(row["deflated_sharpe"])
    line = next(
        line
        for line in runner.invoke(app, ["runs", "ls", "--dataset", "spx"]).stdout.splitlines()
        if line.startswith(best_id)
    )
    assert line.split()[6:9] == [f"{sharpes[best]:.2f}", f"{entry['deflated_sharpe']:.2f}", "200"]
    # the other dataset's ledger is its own
    assert _ls(runner, "--dataset", "ftse")[0]["n_trials"] == 1


def test_the_ledger_counts_runs_the_listing_filters_out(runner):
    fake_run(RUNS, "a-20260101T000000-0001", stamp(1), model="lightgbm", backtest=trial(1.0))
    fake_run(RUNS, "b-20260101T000000-0002", stamp(2), model="catboost", backtest=trial(2.0))
    (row,) = _ls(runner, "--model", "catboost")
    assert row["n_trials"] == 2


def test_deflated_now_agrees_with_deflated_for_the_newest_trial(tmp_path):
    for i, sharpe in enumerate((0.3, 1.1, -0.4, 2.0)):
        fake_run(tmp_path, f"r{i}", stamp(i), backtest=trial(sharpe, skew=-0.2, kurtosis=4.0))
    trials = ledger(tmp_path, "d")
    views = deflated_now(trials)
    newest = trials[-1]
    assert views[(newest.run_id, newest.kind)] == pytest.approx(deflated(newest, trials))
    first = trials[0]  # now it is deflated by all four, at its creation by itself only
    assert views[(first.run_id, first.kind)]["n_trials"] == 4 and deflated(first, trials)["n_trials"] == 1


def test_missing_moments_take_the_documented_defaults_and_missing_periods_is_na(runner):
    fake_run(
        RUNS, "m-20260101T000000-0001", stamp(1), backtest={"sharpe": 1.0, "periods": 252, "periods_per_year": 252.0}
    )
    fake_run(
        RUNS, "p-20260101T000000-0002", stamp(2), backtest={"sharpe": 1.0, "periods_per_year": 252.0, "skew": None}
    )
    rows = {r["run_id"][0]: r for r in _ls(runner)}
    trials = ledger(RUNS, "d")
    assert (trials[0].skew, trials[0].kurtosis) == (0.0, 3.0)  # skew 0, raw kurtosis 3
    variance = deflated_now(trials)[(trials[0].run_id, "backtest")]["sharpe_variance"]
    assert rows["m"]["deflated_sharpe"] == pytest.approx(
        deflated_sharpe_ratio(1.0 / np.sqrt(252), 252, 0.0, 3.0, 2, variance)
    )
    assert rows["p"]["deflated_sharpe"] is None and rows["p"]["n_trials"] == 2  # counted, not deflatable
    line = next(line for line in runner.invoke(app, ["runs", "ls"]).stdout.splitlines() if line.startswith("p-"))
    assert line.split()[6:9] == ["1.00", "n/a", "2"]
    text = runner.invoke(app, ["runs", "show", "p-20260101T000000-0002"]).stdout
    assert text.splitlines()[-1].split()[:3] == ["backtest", "1.00", "n/a"]  # periods n/a


def test_a_validation_backtest_is_not_a_trial(runner):
    fake_run(RUNS, "v-20260101T000000-0001", stamp(1), backtest=trial(2.0, segment="val"))
    (row,) = _ls(runner)
    assert row["sharpe"] == 2.0 and row["segment"] == "val" and row["trials"] == [] and row["n_trials"] is None
    line = runner.invoke(app, ["runs", "ls"]).stdout.splitlines()[1]
    assert "2.00 (val)" in line


def test_psr_is_the_single_trial_value(tmp_path):
    fake_run(tmp_path, "one", stamp(1), backtest=trial(1.0))
    (only,) = ledger(tmp_path, "d")
    assert deflated(only, [only])["deflated_sharpe"] == pytest.approx(psr(only))


def test_a_walk_forward_sharpe_is_a_trial_too(runner):
    fake_run(RUNS, "w-20260101T000000-0001", stamp(1), backtest=trial(2.0, segment="val"))
    metrics = json.loads((RUNS / "w-20260101T000000-0001" / "metrics.json").read_text())
    metrics["walkforward"] = trial(0.8)
    (RUNS / "w-20260101T000000-0001" / "metrics.json").write_text(json.dumps(metrics))
    (row,) = _ls(runner, "--limit", "1")
    assert [t["kind"] for t in row["trials"]] == ["walkforward"] and row["n_trials"] == 1
    assert runner.invoke(app, ["runs", "ls"]).stdout.splitlines()[1].split()[6:8] == ["0.80", "(wf)"]
    assert _ls(runner, "--limit", "0") == []


def test_an_older_backtest_without_segment_takes_it_from_its_summary(runner):
    folder = fake_run(
        RUNS, "o-20260101T000000-0001", stamp(1), backtest={"sharpe": 1.0, "periods": 252, "periods_per_year": 252.0}
    )
    (folder / "backtest").mkdir()
    (folder / "backtest" / "summary.json").write_text(json.dumps({"sharpe": 1.0, "config": {"segment": "val"}}))
    (row,) = _ls(runner)
    assert row["segment"] == "val" and row["trials"] == [] and ledger(RUNS, "d") == []


def test_identical_reruns_are_one_trial_and_any_change_of_recipe_data_or_code_is_another(runner):
    """Three identical refits (same resolved recipe, data content and code) count once, in `runs ls`
    and in the value at creation; a different recipe, dataset content, qfactory version or git
    commit is a new trial. A run without fingerprints (made before them) stays its own trial."""
    same = {"fingerprints": {"recipe": "r1", "experiment": "e1"}, "git_commit": "c1"}
    for i in range(3):
        fake_run(RUNS, f"refit-20260101T00000{i}-000{i}", stamp(i), backtest=trial(1.0 + i / 100), **same)
    rows = _ls(runner)
    assert {r["n_trials"] for r in rows} == {1}
    trials = ledger(RUNS, "d")
    assert [deflated(t, trials)["n_trials"] for t in trials] == [1, 1, 1]
    changes = {
        "recipe": {"fingerprints": {"recipe": "r2", "experiment": "e2"}, "git_commit": "c1"},
        "code": {**same, "git_commit": "c2"},
        "version": {**same, "qfactory_version": "0.2.0"},
        "data": same,
        "old": {},
    }
    for i, (name, manifest) in enumerate(changes.items()):
        folder = fake_run(RUNS, f"{name}-20260101T000010-00{i}a", stamp(10 + i), backtest=trial(0.5), **manifest)
        if name == "data":  # the same dataset name and recipe on other bars
            written = json.loads((folder / "manifest.json").read_text())
            other_bars = {"name": "d", "version": 7, "content_hash": "y"}
            (folder / "manifest.json").write_text(json.dumps({**written, "dataset": other_bars}))
        assert {r["n_trials"] for r in _ls(runner)} == {2 + i}, name
    # the key ignores only what names or places a run: run.name, runs_dir and data_dir are not in `experiment`
    from quant_cli.recipe import load_recipe
    from quant_cli.runs.directory import experiment_fingerprint

    base = load_recipe(None, ['data.dataset="d"'])
    renamed = load_recipe(
        None, ['data.dataset="d"', 'run.name="other"', 'run.runs_dir="/elsewhere"', "serve.port=9000"]
    )
    assert experiment_fingerprint(base) == experiment_fingerprint(renamed)
    assert experiment_fingerprint(base) != experiment_fingerprint(load_recipe(None, ['data.dataset="d"', "run.seed=7"]))
