"""Factor plugins (issue 23 §2): a Python file of factor functions named by the recipe.

Bad plugins are one line and exit 2; leaky plugins (shift(-1), a centred window, a whole-series
z-score, a backward fill) are refused at build time naming the feature and the first timestamp that
moved; a clean rolling mean is built with the right values, and its source hash is in the fingerprint.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import polars as pl
import pytest
from conftest import snapshot_tree
from typer.testing import CliRunner

from quant_cli.cli import app
from quant_cli.data.store import write_store
from quant_cli.data.synthetic import generate
from quant_cli.features import REGISTRY, plugin_check
from quant_cli.features.store import scan_version

CLEAN = """
    import polars as pl
    from quant_cli import factor

    from math import sqrt  # imported, not defined here: not a factor


    @factor(window=10)
    def close_ma10_gap(bars: pl.DataFrame) -> pl.Series:
        return bars["close"].rolling_mean(10) / bars["close"] - 1


    @factor(window=2, inputs=("close", "volume"))
    def volume_ratio(bars):
        return (bars["volume"] / bars["volume"].shift(1)).to_numpy()


    def _helper(x):  # private: not a factor
        return x
"""
LEAKS = {
    "next_return": 'bars["close"].shift(-1) / bars["close"] - 1',
    "centred_mean": 'bars["close"].rolling_mean(5, center=True) / bars["close"]',
    "zscore_full": '(bars["close"] - bars["close"].mean()) / bars["close"].std()',
    "backfilled_ma": 'bars["close"].rolling_mean(5).fill_null(strategy="backward")',
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plugins")
    write_store(root / "data", "p", generate(symbols=3, bars=200, seed=5), "test")
    return root / "data"


def recipe(folder: Path, source: str, name: str = "factors.py", extra: str = "") -> Path:
    """A recipe beside a plugin file (named relative to the recipe, as users write it)."""
    (folder / name).write_text(textwrap.dedent(source))
    path = folder / "r.toml"
    path.write_text(f'[data]\ndataset = "p"\n[features]\nsets = []\ninclude = ["ret_5"]\nplugins = ["{name}"]\n{extra}')
    return path


def features(path: Path, data_dir: Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["features", "--recipe", str(path), "--data-dir", str(data_dir), "--quiet"])
    return result.exit_code, result.stdout.strip(), result.stderr


def test_a_clean_plugin_is_built_with_correct_values(data_dir, tmp_path):
    code, out, err = features(recipe(tmp_path, CLEAN), data_dir)
    assert code == 0, err
    table = scan_version(Path(out)).collect()
    assert table.columns == ["symbol", "ts", "ret_5", "close_ma10_gap", "volume_ratio"]  # built-ins, then file order
    bars = pl.read_delta(str(data_dir / "p" / "bars")).sort("symbol", "ts")
    expected = bars.select(
        "symbol",
        "ts",
        (pl.col("close").rolling_mean(10) / pl.col("close") - 1).over("symbol").alias("close_ma10_gap"),
        (pl.col("volume") / pl.col("volume").shift(1)).over("symbol").alias("volume_ratio"),
    )
    got = table.select(expected.columns).sort("symbol", "ts")
    assert got["close_ma10_gap"].null_count() == 3 * 9  # the warm-up of each symbol, no more
    assert got.equals(expected)
    spec = json.loads((Path(out) / "spec.json").read_text())
    assert spec["features"] == ["ret_5", "close_ma10_gap", "volume_ratio"]
    assert REGISTRY.feature("close_ma10_gap").family.lookback == 10


def test_the_plugin_source_is_part_of_the_fingerprint(data_dir, tmp_path):
    path = recipe(tmp_path, CLEAN)
    first = features(path, data_dir)[1]
    assert features(path, data_dir)[1] == first  # the same source: served from cache
    (tmp_path / "factors.py").write_text(textwrap.dedent(CLEAN).replace("rolling_mean(10)", "rolling_mean(11)"))
    changed = features(path, data_dir)[1]
    assert changed != first and Path(changed).parent == Path(first).parent
    values = scan_version(Path(changed)).collect()["close_ma10_gap"]
    assert values.null_count() == 3 * 10  # computed by the edited source, not a stale registration


@pytest.mark.parametrize("name", sorted(LEAKS))
def test_a_leaky_plugin_is_refused_naming_the_feature_and_the_first_moved_timestamp(name, data_dir, tmp_path):
    source = f"def {name}(bars):\n    return {LEAKS[name]}\n"
    path = recipe(tmp_path, source, "leaky.py")
    before = snapshot_tree(data_dir)
    code, out, err = features(path, data_dir)
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    prefix = f"error: plugin leaky.py: factor {name!r} reads the future: its value at "
    assert err.startswith(prefix) and err.rstrip().endswith(
        "a factor may use only bars at or before each row "
        "(no shift(-n), centred windows, whole-series statistics or backward fills)"
    )
    moved = err[len(prefix) :].split(" ")[0]
    cutoff = err.split("changed when the bars after ")[1].split(" ")[0]
    assert moved <= cutoff  # a value at or before the cutoff moved
    if name == "next_return":  # the bar at the first cutoff (row 1) reads row 2
        assert (moved, cutoff) == ("2015-01-05T00:00:00+00:00", "2015-01-05T00:00:00+00:00")
    assert snapshot_tree(data_dir) == before  # nothing built, nothing half-written


def test_the_test_only_switch_skips_the_check_and_gets_its_own_fingerprint(data_dir, tmp_path, monkeypatch):
    path = recipe(tmp_path, f"def next_return(bars):\n    return {LEAKS['next_return']}\n", "leaky.py")
    monkeypatch.setenv(plugin_check.SKIP_ENV, "1")
    code, out, err = features(path, data_dir)
    assert code == 0, err
    assert scan_version(Path(out)).collect()["next_return"].null_count() == 3  # each symbol's last bar
    monkeypatch.delenv(plugin_check.SKIP_ENV)
    assert features(path, data_dir)[0] == 2  # the unchecked version is never reused by a checked build


BAD = [
    (
        "missing",
        None,
        "error: features.plugins: factors.py not found at {folder}/factors.py; plugin paths are "
        "relative to the recipe file",
    ),
    (
        "syntax",
        "def f(bars)\n    return bars['close']\n",
        "error: plugin factors.py: syntax error at line 1: expected ':'; fix the file",
    ),
    (
        "import",
        "import nonexistent_module_xyz\n",
        "error: plugin factors.py: running it raised "
        "ModuleNotFoundError: No module named 'nonexistent_module_xyz' (line 1); fix the file",
    ),
    (
        "none",
        "X = 1\n",
        "error: plugin factors.py defines no factor: add a top-level function (name not starting "
        "with '_') that takes one symbol's bars and returns a Series",
    ),
    (
        "arity",
        "def f(bars, other):\n    return bars['close']\n",
        "error: plugin factors.py: factor 'f' takes 2 "
        "required argument(s); a factor takes exactly one, the symbol's bars (give any other argument a default, or "
        "start the name with '_')",
    ),
    (
        "window",
        "from quant_cli import factor\n@factor(window=0)\ndef f(bars):\n    return bars['close']\n",
        "error: plugin factors.py: factor 'f': @factor(window=0): window is the bars of history it reads, 1 to 100000",
    ),
    (
        "clash",
        "def rsi_14(bars):\n    return bars['close']\n",
        "error: plugin factors.py: factor 'rsi_14' clashes with the built-in feature 'rsi_14'; rename the function",
    ),
    (
        "length",
        "def f(bars):\n    return bars['close'].head(5)\n",
        "error: plugin factors.py: factor 'f' returned "
        "5 values for 200 bars of S000; return a polars Series or a 1-D numpy array of numbers, one per bar",
    ),
    (
        "type",
        "def f(bars):\n    return list(bars['close'])\n",
        "error: plugin factors.py: factor 'f' returned "
        "a list for the bars of S000; return a polars Series or a 1-D numpy array of numbers, one per bar",
    ),
    (
        "raises",
        "def f(bars):\n    return bars['volume']\n",
        "error: plugin factors.py: factor 'f' raised "
        'ColumnNotFoundError on the bars of S000 ("volume" not found); fix the function (it receives one '
        "symbol's bars with columns symbol, ts, close; declare other "
        "columns with @factor(inputs=...))",
    ),
]


@pytest.mark.parametrize(("case", "source", "line"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_plugin_is_one_line_and_exit_2(case, source, line, data_dir, tmp_path):
    path = recipe(tmp_path, source or "", "factors.py")
    if source is None:
        (tmp_path / "factors.py").unlink()
    code, out, err = features(path, data_dir)
    assert (code, out) == (2, "")
    assert err == line.format(folder=tmp_path) + "\n"


def test_worker_processes_compute_a_plugin_from_its_carried_source(data_dir, tmp_path):
    """A build on the local backend with 2 jobs sends each symbol group to a worker process (pickled
    plan): the plugin's source travels with it; the values equal the in-process formula."""
    from quant_cli.backend import open_backend
    from quant_cli.features.store import feature_table
    from quant_cli.recipe import load_recipe

    path = recipe(tmp_path, CLEAN.replace("rolling_mean(10)", "rolling_mean(7)"))
    with open_backend("local", 2) as backend:
        built = feature_table(load_recipe(path), data_dir, chunk_rows=200, backend=backend)
    assert len(list((built.path / "table").glob("part-*.parquet"))) == 3  # one group per symbol
    bars = pl.read_delta(str(data_dir / "p" / "bars")).sort("symbol", "ts")
    expected = (pl.col("close").rolling_mean(7) / pl.col("close") - 1).over("symbol")
    assert built.frame.sort("symbol", "ts")["close_ma10_gap"].equals(
        bars.select(expected.alias("close_ma10_gap"))["close_ma10_gap"]
    )
