"""Covariates beside the windows (issue 19 §1) and the first model that takes them, tft (§3).

Static covariates: integer categories fitted on training rows (unseen → the reserved id 0), carried by the
saved model so a bundle reproduces them. Known-future covariates: calendar fields of the bars after t from
t's timestamp and the fitted bar calendar only — identical when every later bar is deleted or rewritten.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl
import pytest
from helpers import prices_rewritten_after

from quant_cli import stages
from quant_cli.cli import app
from quant_cli.data.store import load_bars, write_store
from quant_cli.data.synthetic import generate
from quant_cli.errors import DataError
from quant_cli.models.covariates import StaticCodes, fit_calendar, future_fields, future_times, static_frame
from quant_cli.models.panel import Panel, PanelRows
from quant_cli.models.registry import create_model, load_model
from quant_cli.recipe import load_recipe
from quant_cli.serve.bundle import load

TINY = {"seq_len": 4, "hidden": 8, "heads": 2}
LOOP = {"epochs": 1, "batch_size": 32, "warmup": 0.0, "patience": 0}


def _us(text: str) -> np.int64:
    return np.datetime64(text, "us").astype(np.int64)


# ---- static covariates ----------------------------------------------------------------------------------


def test_static_codes_are_fitted_on_training_rows_with_a_reserved_unknown_id():
    symbols = np.array(["A", "A", "B", "C"])
    codes = StaticCodes.fit(["sector"], symbols, {"sector": np.array(["tech", "tech", "energy", None], dtype=object)})
    assert codes.vocab == {"sector": ["energy", "tech"]} and codes.sizes == [3]
    ids = codes.ids(
        np.array(["A", "B", "D", "B", "C"]),
        {"sector": np.array(["tech", "utilities", "energy", None, None], dtype=object)},
    )
    # A: its own value; B: a value never seen in training → 0; D (a new symbol): its value; B without a
    # value: its training value; C: no value in training or now → 0
    assert ids[:, 0].tolist() == [2, 0, 1, 1, 0]
    assert codes.ids(np.array(["A", "B", "Z"]), {})[:, 0].tolist() == [2, 1, 0]  # a request without the column
    assert StaticCodes.from_json(json.loads(json.dumps(codes.to_json()))) == codes


def test_static_frame_refuses_a_missing_column_and_a_value_that_changes():
    bars = generate(symbols=8, bars=5, seed=3, sector=True)
    assert static_frame(bars, ["sector"])["sector"].n_unique() == 2  # 8 symbols: two sector blocks
    with pytest.raises(DataError) as missing:
        static_frame(bars, ["industry"])
    assert str(missing.value) == (
        "model.static_columns names 'industry', which the dataset's bars lack (their text columns: ['sector']); "
        "ingest bars with that column or remove it from model.static_columns"
    )
    changed = bars.with_columns(
        pl.when((pl.col("symbol") == "S001") & (pl.col("ts") > pl.col("ts").min()))
        .then(pl.lit("sector_9"))
        .otherwise(pl.col("sector"))
        .alias("sector")
    )
    with pytest.raises(DataError) as changing:
        static_frame(changed, ["sector"])
    assert str(changing.value) == (
        "model.static_columns: column 'sector' of symbol 'S001' changes over time ('sector_0', 'sector_9'); a static "
        "covariate must have one value per symbol: fix the data or remove the column from model.static_columns"
    )


# ---- the bar calendar ----------------------------------------------------------------------------------


def test_the_calendar_steps_over_weekends_and_out_of_sessions():
    days = np.busday_offset(np.datetime64("2024-01-01", "D"), np.arange(30), roll="forward").astype("datetime64[us]")
    daily = fit_calendar(days, np.zeros(30, dtype=str))  # no frequency given: the median spacing, 1 day
    assert daily.weekdays == [0, 1, 2, 3, 4] and daily.session is None
    friday = np.array(["2024-01-05"], dtype="datetime64[us]")
    assert future_times(friday, daily, 2)[0].tolist() == [_us("2024-01-08"), _us("2024-01-09")]
    fields = future_fields(friday, daily, 3, ["day_of_week", "day_of_month", "month"])
    assert fields.shape == (1, 3, 3) and fields[0].tolist() == [[0, 8, 1], [1, 9, 1], [2, 10, 1]]

    hours = np.array([f"2024-01-{d:02d}T{h:02d}:00" for d in (1, 2, 3, 4, 5) for h in range(9, 17)], "datetime64[us]")
    hourly = fit_calendar(hours, np.zeros(len(hours), dtype=str), "1h")
    assert hourly.session == [9 * 3600 * 10**6, 16 * 3600 * 10**6]
    late_friday = np.array(["2024-01-05T15:00"], dtype="datetime64[us]")
    assert future_times(late_friday, hourly, 3)[0].tolist() == [
        _us("2024-01-05T16:00"),
        _us("2024-01-08T09:00"),  # past the session's last bar, over the weekend: Monday's first bar
        _us("2024-01-08T10:00"),
    ]
    assert future_fields(late_friday, hourly, 3, ["hour", "minute"])[0].tolist() == [[16, 0], [9, 0], [10, 0]]


def _daily_panel(n_sym: int = 3, n: int = 40, seed: int = 0) -> tuple[Panel, np.ndarray]:
    rng = np.random.default_rng(seed)
    days = np.busday_offset(np.datetime64("2024-01-01", "D"), np.arange(n), roll="forward").astype("datetime64[us]")
    values = rng.normal(size=(n_sym * n, 3)).astype(np.float32)
    symbols = np.repeat([f"S{i}" for i in range(n_sym)], n)
    sectors = np.repeat(np.array(["tech", "energy", "tech", "utilities"], dtype=object)[:n_sym], n)
    y = np.stack([values[:, 0], values[:, 1]], axis=1).astype(np.float64)
    return Panel(values, symbols, np.tile(days, n_sym), statics={"sector": sectors}, frequency="1d"), y


def _fit_tft(panel: Panel, y: np.ndarray, rows: np.ndarray | None = None, **covariates):
    model = create_model("tft", "regression", TINY, 1, 1, symbol_encoding="embedding", train=LOOP, **covariates)
    rows = np.arange(len(panel)) if rows is None else rows
    return model.fit(PanelRows(panel, rows), y[rows], feature_names=["a", "b", "c"])


def _cut(panel: Panel, keep: np.ndarray, ts: np.ndarray | None = None) -> Panel:
    statics = {c: v[keep] for c, v in panel.statics.items()}
    times = panel.ts[keep] if ts is None else ts
    return Panel(panel.values[keep], panel.symbols[keep], times, statics=statics, frequency=panel.frequency)


def test_known_future_fields_ignore_every_later_bar():
    """The covariates (and the scores) of rows up to a cutoff are the same when every later bar is deleted,
    or rewritten with other timestamps: they come from the row's own timestamp and the fitted calendar."""
    panel, y = _daily_panel()
    model = _fit_tft(panel, y, known_future=["day_of_week", "day_of_month", "month"], static_columns=["sector"])
    cutoff = np.datetime64("2024-01-26", "us")  # a Friday: its next bars are the next week's
    early = np.flatnonzero(panel.ts <= cutoff)
    full = PanelRows(panel, early)
    ids = model._covariates(full, model.encoder_.ids(full.symbols))
    friday = early[panel.ts[early] == cutoff][0]
    row = np.flatnonzero(early == friday)[0]
    assert ids[row, 2:].reshape(2, 3).tolist() == [[0, 29, 1], [1, 30, 1]]  # Monday 29th, Tuesday 30th
    deleted = _cut(panel, panel.ts <= cutoff)
    later = panel.ts > cutoff
    shifted = np.where(later, panel.ts + np.timedelta64(17, "h"), panel.ts)  # later bars at other times of day
    rewritten = _cut(panel, np.ones(len(panel), dtype=bool), shifted)
    for other in (deleted, rewritten):
        rows = PanelRows(other, np.flatnonzero(other.ts <= cutoff))
        np.testing.assert_array_equal(model._covariates(rows, model.encoder_.ids(rows.symbols)), ids)
        np.testing.assert_array_equal(model.predict(rows), model.predict(full))


def test_an_unseen_static_category_scores_with_the_reserved_id():
    panel, y = _daily_panel(n_sym=4)
    training = np.flatnonzero(panel.symbols != "S3")  # S3 ('utilities') is in the panel, not in the training rows
    model = _fit_tft(panel, y, training, static_columns=["sector"])
    assert model.statics_.vocab == {"sector": ["energy", "tech"]}  # fitted on the training rows only
    s3 = PanelRows(panel, np.flatnonzero(panel.symbols == "S3"))
    assert (model._covariates(s3, None)[:, 1] == 0).all()  # 'utilities': the reserved unknown id
    panel = _cut(panel, panel.symbols != "S3")
    rows = PanelRows(panel, np.arange(len(panel)))
    scores = model.predict(rows)
    renamed = _cut(panel, np.ones(len(panel), dtype=bool))
    renamed.statics["sector"] = np.where(panel.symbols == "S1", "mining", panel.statics["sector"]).astype(object)
    unseen = model.predict(PanelRows(renamed, rows.rows))
    assert np.isfinite(unseen[panel.position >= 3]).all()
    s1 = panel.symbols == "S1"
    assert not np.allclose(unseen[s1 & (panel.position >= 3)], scores[s1 & (panel.position >= 3)])  # id 0, not 'energy'
    np.testing.assert_array_equal(unseen[~s1], scores[~s1])
    without = Panel(panel.values, panel.symbols, panel.ts)  # no sector column: each symbol's training value
    np.testing.assert_array_equal(model.predict(PanelRows(without, rows.rows)), scores)


def test_a_panel_without_the_static_column_is_refused_at_fit():
    panel, y = _daily_panel()
    bare = Panel(panel.values, panel.symbols, panel.ts)
    with pytest.raises(Exception, match=r"model.static_columns names 'sector', but the panel has no such column"):
        _fit_tft(bare, y, static_columns=["sector"])


# ---- end to end: a run, its importances, a bundle ------------------------------------------------------

CUTOFF = dt.datetime(2015, 7, 31, tzinfo=dt.timezone.utc)  # a Friday
RUN = [
    'data.dataset="sec"',
    "features.sets=[]",
    'features.include=["ret_5", "ret_10"]',
    "label.horizon=2",
    'model.name="tft"',
    'model.symbol_encoding="embedding"',
    'model.static_columns=["sector"]',
    'model.known_future=["day_of_week", "month"]',
    *(f"model.params.{k}={json.dumps(v)}" for k, v in TINY.items()),
    "train.threads=1",
    "train.early_stopping=0",
    "train.epochs=1",
    "train.batch_size=64",
    "train.patience=0",
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tft") / "data"
    write_store(data_dir, "sec", generate(symbols=8, bars=160, seed=3, sector=True), "test")
    return data_dir


def test_a_tft_run_writes_importances_and_its_bundle_is_causal(store, tmp_path):
    run = stages.train_new(load_recipe(None, RUN), store, tmp_path / "runs").run
    importance = json.loads((run.path / "model" / "importance.json").read_text())
    assert set(importance) == {"past", "static", "future"}
    assert list(importance["past"]) == ["ret_5", "ret_10"] and list(importance["static"]) == ["symbol", "sector"]
    assert list(importance["future"]) == ["step", "day_of_week", "month"]
    for weights in importance.values():
        assert abs(sum(weights.values()) - 1.0) < 1e-4  # mean softmax weights
    model = load_model(run.path / "model")
    assert model.statics_.vocab == {"sector": ["sector_0", "sector_1"]}

    bundle = load(stages.bundle_existing(run, store).bundle)
    bars = load_bars(store, "sec").with_columns(pl.col("symbol").cast(pl.String))
    before = bundle.score_bars(bars, every_bar=True)
    after = bundle.score_bars(prices_rewritten_after(bars, CUTOFF, seed=1), every_bar=True)
    joined = before.join(after, on=["symbol", "ts"], suffix="_rewritten")
    early = joined.filter(pl.col("ts") <= CUTOFF)
    assert joined.height == before.height > early.height > 0
    assert (early["score"] == early["score_rewritten"]).all()
    assert (
        joined.filter(pl.col("ts") > CUTOFF)["score"] != joined.filter(pl.col("ts") > CUTOFF)["score_rewritten"]
    ).any()
    cut = bundle.score_bars(bars.filter(pl.col("ts") <= CUTOFF), every_bar=True)  # every later bar deleted
    assert (
        cut.join(before, on=["symbol", "ts"], suffix="_full")
        .select((pl.col("score") == pl.col("score_full")).all())
        .item()
    )
    # a request without the sector column scores each symbol with its training sector
    assert bundle.score_bars(bars.drop("sector"), every_bar=True).equals(before)


def test_a_static_column_the_dataset_lacks_is_one_line_before_any_run(runner, store, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[run]\nname = "tft"\n')
    args = ["train", "--recipe", str(recipe), "--data-dir", str(store), "--runs-dir", str(tmp_path / "runs")]
    sets = [*RUN[:-1], 'model.static_columns=["industry"]']
    result = runner.invoke(app, [*args, *(a for s in sets for a in ("--set", s))])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        "error: model.static_columns names 'industry', which is not a text column of dataset 'sec' (its text "
        "columns: ['sector']); ingest bars with that column or remove it from model.static_columns"
    ]
    assert not (tmp_path / "runs").exists()
