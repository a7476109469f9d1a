"""Bugs found by running the merged CLI as a hostile operator (issue 9 audit): each is exit 2 and
one `error:` line, never an 'unexpected failure'."""

from __future__ import annotations

import pytest

from quant_cli.cli import app


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
