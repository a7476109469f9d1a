"""`qfactory audit` (issue 23 §3): clean runs of a tabular and a sequence model pass every
look-ahead check; a run whose scaler saw the test rows and a run with a feature that reads the
next bar fail with exit 3 and one line naming the first failing check; the run is never changed
except for audit/. Tiny panels and --permutations 3 keep it fast."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from serving import BASE, FAST, store, train
from typer.testing import CliRunner

from quant_cli import stages
from quant_cli.audit.luck import shuffled_labels
from quant_cli.audit.rewrite import rewrite_after
from quant_cli.cli import app
from quant_cli.dataset import table
from quant_cli.features import REGISTRY
from quant_cli.io import read_json
from quant_cli.recipe import load_recipe
from quant_cli.serve.loaded import validated


def audit(trained, *extra: str) -> tuple[int, dict, str]:
    """(exit code, the --json payload, stderr) of `qfactory audit --run RUN --permutations 3 --json`."""
    result = CliRunner().invoke(
        app,
        [
            "audit",
            "--run",
            str(trained.run.path),
            "--permutations",
            "3",
            "--json",
            "--quiet",
            "--data-dir",
            str(trained.data_dir),
            "--runs-dir",
            str(trained.runs_dir),
            *extra,
        ],
    )
    return result.exit_code, json.loads(result.stdout), result.stderr


def run_files(run_path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(run_path)): p.read_bytes()
        for p in sorted(run_path.rglob("*"))
        if p.is_file() and p.relative_to(run_path).parts[0] != "audit"
    }


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return store(tmp_path_factory.mktemp("audit-data"))


@pytest.mark.parametrize("model", ["lightgbm", "lstm"])
def test_a_clean_run_passes_every_lookahead_check(model, data_dir, tmp_path):
    trained = train(tmp_path, model, data_dir=data_dir)
    before, data_before = run_files(trained.run.path), _tree(data_dir)
    code, payload, _ = audit(trained)
    report = payload["audit"]
    assert code == 0, payload
    assert payload["path"] == str(trained.run.path)  # stdout names the run, as every run command does
    assert payload["audit_json"] == str(trained.run.path / "audit" / "audit.json")
    assert report["verdict"] == "pass" and report["failure"] is None
    assert report["checks"] == {"passed": 8, "failed": 0, "total": 8}  # 3 cutoffs, 2 pipeline, inputs, val, test
    assert all(c["rows"] > 0 for c in report["scoring"]["checks"])
    assert report["training"]["deterministic"] and report["training"]["reproduction"]["reproduced"]
    luck = report["luck"]
    assert luck["permutations"] == 3 and luck["reduced"] and len(luck["null_ics"]) == 3
    assert 0.25 <= luck["p_value"] <= 1.0 and luck["min_p_value"] == 0.25
    assert not luck["deflated_sharpe"]["available"]  # no backtest yet: said, not invented
    assert read_json(trained.run.path / "audit" / "audit.json") == json.loads(json.dumps(report))
    assert run_files(trained.run.path) == before and _tree(data_dir) == data_before  # only audit/ was written


def _fit_on_every_row(pipeline, features, rows):
    """The planted mutation: preprocessing fit on every row, validation and test rows included."""
    return pipeline.fit(features.scan_features())


@pytest.mark.parametrize(
    ("still_in_code", "expected"),
    [
        (
            False,
            "look-ahead: training: the run's pipeline: its preprocessing state {} is not a fit on its "
            "training rows alone",
        ),
        (
            True,
            "look-ahead: training: fitted pipeline: preprocessing state {} moved when the bars after the end "
            "of validation were rewritten",
        ),
    ],
)
def test_a_run_whose_scaler_saw_the_test_rows_fails(still_in_code, expected, data_dir, tmp_path, monkeypatch):
    """The run was made by leaky code; the audit runs on honest code, or on the same leaky code."""
    with monkeypatch.context() as planted:
        planted.setattr(table, "fit_pipeline", _fit_on_every_row)
        trained = train(tmp_path, "lightgbm", data_dir=data_dir)  # preprocess.scaler = "zscore" by default
    if still_in_code:
        monkeypatch.setattr(table, "fit_pipeline", _fit_on_every_row)
    code, payload, stderr = audit(trained)
    assert code == 3 and payload["exit_code"] == 3 and payload["audit"]["verdict"] == "fail"
    failure = payload["audit"]["failure"]
    state = failure.split("preprocessing state ")[1].split(" ")[0]
    assert (
        failure == expected.format(state)
        and state.split(".")[0] in trained.run.path.joinpath("split", "scaler.json").read_text()
    )
    assert stderr.splitlines()[0] == f"error: {failure}"
    assert all(c["passed"] for c in payload["audit"]["scoring"]["checks"])  # a fixed scaler scores causally


@pytest.fixture
def peeking_feature():
    """A test-only feature that reads the next bar's close (shift(-1)): the leak the audit must catch."""
    REGISTRY.register("peek_{w}", inputs=("close",), tags=("test",), description="next bar's return: a planted leak")(
        lambda w: pl.col("close").shift(-w) / pl.col("close") - 1
    )
    yield "peek_1"
    del REGISTRY.families["peek_{w}"]


def test_a_run_with_a_feature_that_reads_the_next_bar_fails(peeking_feature, data_dir, tmp_path):
    trained = train(
        tmp_path,
        "lightgbm",
        (f'features.include=["ret_5", "{peeking_feature}"]', "features.sets=[]"),
        data_dir=data_dir,
    )
    code, payload, stderr = audit(trained)
    report = payload["audit"]
    first = report["scoring"]["checks"][0]
    assert code == 3 and not first["passed"]
    assert report["failure"] == (
        f"look-ahead: {first['name']}: {first['differing']} of {first['rows']} score(s) at or before "
        f"the cutoff changed when later bars were rewritten, first {first['first']['symbol']} at "
        f"{first['first']['ts']}"
    )
    assert first["first"]["ts"] == first["cutoff"]  # the bar at the cutoff reads the first rewritten one
    assert stderr.splitlines()[0] == f"error: {report['failure']}"
    training = {c["name"]: c["passed"] for c in report["training"]["checks"]}
    assert training["training: training inputs"] is False


def test_bad_input_is_one_line_and_exit_2(data_dir, tmp_path):
    result = CliRunner().invoke(app, ["audit", "--run", str(tmp_path / "nope"), "--data-dir", str(data_dir)])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    split_only = stages.new_split_run(load_recipe(None, [*BASE, *FAST["lightgbm"]]), data_dir, tmp_path / "runs").run
    result = CliRunner().invoke(app, ["audit", "--run", str(split_only.path), "--data-dir", str(data_dir)])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: run {split_only.id} has no committed train stage; train it first "
        f"with `qfactory train --run {split_only.id}`\n"
    )
    result = CliRunner().invoke(app, ["audit", "--run", "latest", "--permutations", "-1"])
    assert result.exit_code == 2 and result.stderr.startswith("error: Invalid value for '--permutations' / '-n'")


def test_labels_are_shuffled_across_symbols_within_each_timestamp():
    rows = pl.DataFrame(
        {
            "symbol": ["a", "b", "c"] * 4,
            "ts": [t for t in range(4) for _ in range(3)],
            "label": [float(i) for i in range(12)],
            "excluded": [None] * 11 + ["purged"],
        }
    )
    out = shuffled_labels(rows, seed=0)
    assert (
        out.group_by("ts")
        .agg(pl.col("label").sort())
        .sort("ts")
        .equals(
            rows.with_columns(pl.when(pl.col("excluded").is_null()).then("label").otherwise(11.0))
            .group_by("ts")
            .agg(pl.col("label").sort())
            .sort("ts")
        )
    )  # each timestamp keeps its own labels
    assert out["label"][-1] == 11.0 and not out["label"].equals(rows["label"])  # excluded rows stay put


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_report_gains_an_audit_section(data_dir, tmp_path):
    trained = train(tmp_path, "lightgbm", data_dir=data_dir)
    backtested = CliRunner().invoke(
        app,
        [
            "backtest",
            "--run",
            str(trained.run.path),
            "--quiet",
            "--data-dir",
            str(data_dir),
            "--runs-dir",
            str(trained.runs_dir),
        ],
    )
    assert backtested.exit_code == 0, backtested.output
    page = trained.run.path / "backtest" / "report.html"
    assert 'id="audit"' not in page.read_text()
    code, payload, _ = audit(trained)
    assert code == 0
    dsr = payload["audit"]["luck"]["deflated_sharpe"]
    assert dsr["available"] and dsr["n_trials"] == 1 and 0.0 <= dsr["deflated_sharpe"] <= 1.0
    text = page.read_text()
    assert '<h2 id="audit">Audit (pass)</h2>' in text and "fewer than the default 20" in text
    assert "training: fitted pipeline</td><td>pass" in text
    page.unlink()  # `qfactory report` regenerates it from files, the audit section included
    regenerated = CliRunner().invoke(
        app, ["report", "--run", str(trained.run.path), "--runs-dir", str(trained.runs_dir)]
    )
    assert regenerated.exit_code == 0 and '<h2 id="audit">Audit (pass)</h2>' in page.read_text()


@pytest.mark.parametrize("columns", [None, ["symbol", "ts", "close"]])
def test_the_rewritten_future_is_a_new_walk_of_valid_bars(small_panel, columns):
    bars = small_panel if columns is None else small_panel.select(columns)
    cutoff = bars["ts"].sort()[bars.height // 2]
    out = rewrite_after(bars, cutoff, seed=3)
    past, future = pl.col("ts") <= cutoff, pl.col("ts") > cutoff
    assert out.schema == bars.schema and out.filter(past).equals(bars.filter(past))  # the past, bit for bit
    changed = out.filter(future)["close"].to_numpy() != bars.filter(future)["close"].to_numpy()
    assert changed.all() and (out["close"] > 0).all()
    validated(out.with_columns(pl.col("symbol").cast(pl.String)), "rewritten bars")  # ingest's rules, or DataError
    if columns is None:  # high >= max(open, close), low <= min(open, close)
        assert out.select(
            (pl.col("high") >= pl.max_horizontal("open", "close")).all(),
            (pl.col("low") <= pl.min_horizontal("open", "close")).all(),
        ).row(0) == (True, True)
        assert rewrite_after(bars, cutoff, seed=3).equals(out) and not rewrite_after(bars, cutoff, seed=4).equals(out)


def test_an_unreadable_audit_json_leaves_the_report_without_a_section(tmp_path):
    from quant_cli.backtest.report import _audit

    (tmp_path / "audit").mkdir()
    for text in ("{", '{"verdict": "pass"}', "[]"):
        (tmp_path / "audit" / "audit.json").write_text(text)
        assert _audit(tmp_path) is None
