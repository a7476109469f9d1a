"""Factor expressions (issue 23 §1): the parser (precedence, parsed form, window, lookback), its
one-line errors, the recipe check at load (exit 2 with the exact line) and `features --explain`."""

from __future__ import annotations

import json

import pytest

from quant_cli.cli import app
from quant_cli.features.expression import ExpressionError, parse
from quant_cli.features.expression_eval import expression_features


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("$close / Ref($close, 5) - 1", "Sub(Div($close, Ref($close, 5)), 1)"),
        ("1 + 2 * $close", "Add(1, Mul(2, $close))"),
        ("(1 + 2) * $close", "Mul(Add(1, 2), $close)"),
        ("$close - $open - $low", "Sub(Sub($close, $open), $low)"),  # left-associative
        ("$close / $open / $low", "Div(Div($close, $open), $low)"),
        ("-$close * 2", "Mul(Neg($close), 2)"),  # unary minus binds tighter than *
        ("-2 * $close", "Mul(-2, $close)"),
        ("$close > $open + 1", "Gt($close, Add($open, 1))"),  # comparisons bind loosest
        ("$close + 1 <= 2 * $open", "Le(Add($close, 1), Mul(2, $open))"),
        ("Corr($close, Log($volume + 1), 10)", "Corr($close, Log(Add($volume, 1)), 10)"),
        ("If($close != $open, 1e-3, .5)", "If(Ne($close, $open), 0.001, 0.5)"),
        ("Quantile($close, 5, 0.25)", "Quantile($close, 5, 0.25)"),
        ("  Abs( $adj_close )  ", "Abs($adj_close)"),
        ("$sentiment * 2", "Mul($sentiment, 2)"),  # any store column (the feature is skipped if absent)
    ],
)
def test_precedence_and_parsed_form(text, parsed):
    assert str(parse("f", text).root) == parsed


@pytest.mark.parametrize(
    ("text", "window", "lookback", "fields"),
    [
        ("$close", 0, 1, ("close",)),
        ("$close / Ref($close, 5) - 1", 5, 6, ("close",)),
        ("Mean($close, 5)", 5, 5, ("close",)),
        ("Mean(Ref($close, 3), 5)", 5, 8, ("close",)),  # nested: 3 + (5 - 1) bars before t, plus t
        ("Corr($close, Log($volume + 1), 10)", 10, 10, ("close", "volume")),
        ("Std(Delta($close, 1), 20) + Mean($volume, 60)", 60, 60, ("close", "volume")),
        ("EMA($close, 12)", 12, 12, ("close",)),
        ("Ref($close, 0)", 0, 1, ("close",)),
    ],
)
def test_window_and_lookback(text, window, lookback, fields):
    expression = parse("f", text)
    assert (expression.window, expression.lookback, expression.fields) == (window, lookback, fields)


W = "features.expressions.f = "
OPS_LIST = (
    "operators: Ref, Delta, Mean, Sum, Std, Var, Skew, Kurt, Max, Min, Med, Quantile, Rank, IdxMax, IdxMin, "
    "Slope, Rsquare, Resi, EMA, WMA, Corr, Cov, Abs, Log, Sign, Power, Greater, Less, If"
)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            "$close / Ref($close, -1) - 1",
            "Ref($close, -1) reads 1 bar(s) past t (a negative offset is a look into the future); "
            "use an offset >= 0, e.g. Ref($close, 1)",
        ),
        (
            "Mean(Delta($volume, -3), 5)",
            "Delta($volume, -3) reads 3 bar(s) past t (a negative offset is a look into the future); "
            "use an offset >= 0, e.g. Delta($volume, 3)",
        ),
        ("Mena($close, 5)", f"unknown operator 'Mena' (did you mean 'Mean'?); {OPS_LIST}"),
        ("corr($close, $open, 5)", f"unknown operator 'corr' (did you mean 'Corr'?); {OPS_LIST}"),
        (
            "$clsoe / $open",
            "unknown field $clsoe (did you mean '$close'?); fields: "
            "$open, $high, $low, $close, $volume, $vwap, $adj_close",
        ),
        ("close / $open", "'close' at position 1 is a field; write $close"),
        ("Mean($ts, 5)", "$ts is not a number column; fields: $open, $high, $low, $close, $volume, $vwap, $adj_close"),
        ("Mean($close)", "Mean takes 2 argument(s), Mean(x, N); got 1 in Mean($close)"),
        ("Corr($close, 5)", "Corr takes 3 argument(s), Corr(x, y, N); got 2 in Corr($close, 5)"),
        ("Mean($close, 0)", "Mean's window must be at least 1, got 0 in Mean($close, 0)"),
        ("Std($close, 1)", "Std's window must be at least 2, got 1 in Std($close, 1)"),
        ("Mean($close, 2.5)", "Mean's window must be a whole number of bars, got 2.5 in Mean($close, 2.5)"),
        ("Mean($close, $open)", "Mean's window must be a number, got $open in Mean($close, $open)"),
        ("Quantile($close, 5, 1.5)", "Quantile's q must be in [0, 1], got 1.5 in Quantile($close, 5, 1.5)"),
        ("Mean($close, 5", "the expression ends early; expected ')'"),
        ("$close +", "the expression ends early"),
        ("$close $open", "unexpected '$open' at position 8"),
        ("$close ^ 2", "unexpected character '^' at position 8"),
        ("$close > $open > $low", "chained comparison at position 16; add parentheses"),
        ("1 + 2", "the expression reads no field, so it is a constant; use e.g. $close"),
        ("", 'the expression is empty; write e.g. "$close / Ref($close, 5) - 1"'),
    ],
)
def test_errors_are_one_line_naming_the_term(text, line):
    with pytest.raises(ExpressionError) as caught:
        parse("f", text)
    assert str(caught.value) == f"{W}{text!r}: {line}"


def test_bad_names_and_clashes_with_built_in_features():
    with pytest.raises(ExpressionError, match=r"^features.expressions: '5day' is not a usable feature name"):
        parse("5day", "$close")
    with pytest.raises(Exception, match=r"^features.expressions.ret_5: the name is a built-in feature's"):
        expression_features({"expressions": {"ret_5": "$close / Ref($close, 5) - 1"}})


def test_expressions_are_sorted_by_name_whatever_the_recipe_order():
    a = expression_features({"expressions": {"b": "$close", "a": "$open"}})
    b = expression_features({"expressions": {"a": "$open", "b": "$close"}})
    assert [f.name for f in a] == [f.name for f in b] == ["a", "b"]
    assert a[0] is b[0]  # one object per definition: the engine's plan cache hits


# ---- the command line -----------------------------------------------------------------------


def _recipe(tmp_path, expressions: str, sets: str = "[]") -> str:
    path = tmp_path / "r.toml"
    path.write_text(f'[data]\ndataset = "d"\n[features]\nsets = {sets}\n[features.expressions]\n{expressions}\n')
    return str(path)


@pytest.mark.parametrize("command", [["features"], ["train"], ["recipe", "show"]])
def test_a_look_ahead_is_refused_at_recipe_load(runner, tmp_path, command):
    recipe = _recipe(tmp_path, 'fwd = "Ref($close, -1) / $close - 1"')
    result = runner.invoke(app, [*command, "--recipe", recipe])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"error: recipe {recipe}: features.expressions.fwd = 'Ref($close, -1) / $close - 1': Ref($close, -1) reads "
        "1 bar(s) past t (a negative offset is a look into the future); use an offset >= 0, e.g. Ref($close, 1)"
    ]
    assert result.stdout == ""


def test_unknown_operator_from_the_command_line_is_one_line(runner, tmp_path):
    recipe = _recipe(tmp_path, 'm = "$close"')
    result = runner.invoke(app, ["features", "--recipe", recipe, "--set", 'features.expressions.v="Stdev($close, 5)"'])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: recipe {recipe}: features.expressions.v = 'Stdev($close, 5)': unknown operator 'Stdev' "
        f"(did you mean 'Std'?); {OPS_LIST}"
    ]


def test_a_formula_must_be_a_string(runner, tmp_path):
    recipe = _recipe(tmp_path, "m = 5")
    result = runner.invoke(app, ["features", "--recipe", recipe])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: recipe {recipe}: 'features.expressions.m' must be a string formula such as "
        '"$close / Ref($close, 5) - 1", got int'
    ]


def test_a_name_taken_by_a_built_in_feature_is_refused_at_load(runner, tmp_path):
    recipe = _recipe(tmp_path, 'RSV5 = "$close / Ref($close, 5)"')
    result = runner.invoke(app, ["recipe", "show", "--recipe", recipe])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: recipe {recipe}: features.expressions.RSV5: the name is a built-in feature's; rename the "
        "expression (e.g. RSV5_x)"
    ]


def test_expressions_alone_are_a_feature_selection(runner, tmp_path):
    recipe = _recipe(tmp_path, 'mom5 = "$close / Ref($close, 5) - 1"')
    result = runner.invoke(app, ["recipe", "show", "--recipe", recipe])
    assert result.exit_code == 0, result.output


def test_explain_an_expression(runner, tmp_path):
    recipe = _recipe(tmp_path, 'vcorr10 = "Corr($close, Log($volume + 1), 10)"')
    result = runner.invoke(app, ["features", "--recipe", recipe, "--explain", "vcorr10"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "name: vcorr10",
        "kind: expression",
        "expression: Corr($close, Log($volume + 1), 10)",
        "parsed: Corr($close, Log(Add($volume, 1)), 10)",
        "inputs: close, volume",
        "window: 10",
        "lookback: 10",
        "operators:",
        "  Corr: Pearson correlation of x and y over the last N rows",
        "  Log: natural logarithm (null where x <= 0)",
    ]
    as_json = runner.invoke(app, ["features", "--recipe", recipe, "--explain", "vcorr10", "--json"])
    assert json.loads(as_json.stdout)["lookback"] == 10


def test_explain_a_built_in_feature_and_an_unknown_name(runner, tmp_path):
    result = runner.invoke(app, ["features", "--explain", "ret_5", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) | {"description": ""} == {
        "name": "ret_5",
        "kind": "built-in",
        "family": "ret_{w}",
        "description": "",
        "inputs": ["close"],
        "window": 5,
        "lookback": 5,
    }
    recipe = _recipe(tmp_path, 'vcorr10 = "Corr($close, $volume, 10)"')
    unknown = runner.invoke(app, ["features", "--recipe", recipe, "--explain", "vcorr1"])
    assert unknown.exit_code == 2
    assert unknown.stderr.splitlines() == [
        "error: --explain: unknown feature 'vcorr1' (did you mean 'vcorr10'?); give a built-in feature name "
        "(`qfactory features ls-specs`) or the name of an expression in --recipe's [features.expressions]"
    ]


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        (
            "close",
            "$open",
            "features.expressions: 'close' is the name of a bar column or key; give the expression "
            "another name, e.g. close_x",
        ),
        ("deep", "(" * 60 + "$close" + ")" * 60, "nested more than 50 levels deep; split it into several features"),
        ("neg", "-" * 60 + "$close", "nested more than 50 levels deep; split it into several features"),
        ("long", "+".join(["$close"] * 120), "more than 100 operators deep; split it into several features"),
        (
            "huge",
            "$close + " * 300 + "1",
            "the expression has 2701 characters, more than 2000; split it into several features",
        ),
        ("inf", "Mean($close, 1e400)", "Mean's window is at most 100000 bars, got inf in Mean($close, inf)"),
    ],
)
def test_hostile_expressions_are_one_line_never_a_recursion_error(name, text, line):
    """Sizes a recursive parser could choke on are refused by name; the expression is clipped in the line."""
    with pytest.raises(ExpressionError) as caught:
        parse(name, text)
    assert str(caught.value).endswith(line)
    assert len(str(caught.value)) < 400


def test_a_stored_pipeline_is_checked_again():
    """pipeline.json is input: a look-ahead written into it is refused when it is read."""
    from quant_cli.errors import RunError
    from quant_cli.pipeline.fitted import FittedPipeline

    data = FittedPipeline(["f"], {"scaler": "none"}, expressions={"f": "Ref($close, -2)"}).to_json()
    with pytest.raises(RunError, match=r"^pipeline.json: features.expressions.f = 'Ref\(\$close, -2\)': Ref"):
        FittedPipeline.from_json(data)
    data["expressions"] = {"f": "Ref($close, 2)"}
    assert FittedPipeline.from_json(data).specs[0].window == 3
