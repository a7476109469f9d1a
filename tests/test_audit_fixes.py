"""Bugs found by running the merged CLI as a hostile operator (issue 9 audit): each is exit 2 and
one `error:` line, never an 'unexpected failure'."""

from __future__ import annotations

import pytest

from quant_cli.cli import app
from quant_cli.data.synthetic import generate
from quant_cli.pipeline.adjust import Adjustment, resolve
from quant_cli.report import CollectingReporter


@pytest.mark.parametrize(("flags", "line"), [
    (["--bars", "99999999999999999999"],
     "error: --bars 99999999999999999999: must be between 10 and 10000000 (data.synthetic.bars)"),
    (["--symbols", "99999999999999999999"],
     "error: --symbols 99999999999999999999: must be between 1 and 100000 (data.synthetic.symbols)"),
    (["--symbols", "100000", "--bars", "10000000"],
     "error: --symbols 100000 x --bars 10000000 = 1,000,000,000,000 bars is more than a synthetic panel "
     "may hold (50,000,000); pass fewer symbols or bars"),
    (["--seed", "-1"], "error: --seed -1: must be between 0 and 4294967295 (run.seed)"),
    (["--signal", "nan"], "error: --signal nan: must be between 0.0 and 1.0 (data.synthetic.signal)"),
])
def test_synthetic_ingest_flags_are_bounded_like_the_recipe_keys(runner, flags, line):
    result = runner.invoke(app, ["ingest", "--source", "synthetic", "--dataset", "z", *flags])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [line]


def test_an_explicit_split_dividend_without_adj_close_says_prices_stay_raw():
    """`data.adjust = "split_dividend"` on bars with no adj_close column silently used raw prices."""
    bars = generate(symbols=2, bars=30, seed=3)
    reporter = CollectingReporter()
    assert resolve("split_dividend", bars, reporter) == Adjustment("none")
    assert reporter.texts("notice") == [
        "data.adjust = 'split_dividend', but the dataset has no adj_close column: every symbol uses raw prices "
        "(the run manifest records adjust mode 'none'); ingest a source with adj_close, or set data.adjust = \"none\""
    ]
    quiet = CollectingReporter()
    resolve(None, bars, quiet)  # the default asks for nothing, so it says nothing
    assert quiet.texts("notice") == []
