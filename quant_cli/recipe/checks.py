"""Checks across recipe keys, run when the recipe loads — before any feature is built.

Each key is already valid on its own (the schema); these catch combinations that cannot work.
Dates outside the data are checked by the split stage, which knows the data.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from quant_cli.errors import RecipeError


def check_recipe(recipe: dict[str, Any], origin: str) -> None:
    _check_features(recipe["features"], origin)
    _check_split(recipe["split"], origin)
    _check_walkforward(recipe["walkforward"], origin)
    _check_backtest(recipe["backtest"], origin)


def _check_features(cfg: dict[str, Any], origin: str) -> None:
    if cfg.get("expressions"):
        _check_expressions(cfg["expressions"], origin)
    if not cfg["sets"] and not cfg["include"] and not cfg.get("expressions"):
        raise RecipeError(
            f"{origin}: features.sets is empty and features.include names nothing, so there are no features; "
            'list at least one set, e.g. sets = ["core"] (`qfactory features ls-specs`)'
        )
    if cfg.get("references"):  # named groups, validated before any data is read
        from quant_cli.features.references import References  # noqa: PLC0415 - features only when configured

        try:
            References.from_section(cfg["references"])
        except RecipeError as exc:
            raise RecipeError(f"{origin}: {exc}") from None


def _check_expressions(table: dict[str, Any], origin: str) -> None:
    """Every factor expression parses, reads no bar after t and names a new column (features/expression.py)."""
    from quant_cli.features.expression_eval import expression_features  # noqa: PLC0415 - only when expressions

    for name, text in table.items():
        if not isinstance(text, str):
            raise RecipeError(
                f"{origin}: 'features.expressions.{name}' must be a string formula such as "
                f'"$close / Ref($close, 5) - 1", got {type(text).__name__}'
            )
    try:
        expression_features({"expressions": table})
    except RecipeError as exc:
        raise RecipeError(f"{origin}: {exc}") from None


def _check_split(cfg: dict[str, Any], origin: str) -> None:
    val_start, test_start = cfg["val_start"], cfg["test_start"]
    if bool(val_start) != bool(test_start):
        given, missing = (
            ("split.val_start", "split.test_start") if val_start else ("split.test_start", "split.val_start")
        )
        raise RecipeError(
            f"{origin}: {given} is set but {missing} is not; set both (explicit boundaries) "
            "or neither (the split.train / split.val fractions)"
        )
    if val_start and _time(val_start) > _time(test_start):
        raise RecipeError(
            f"{origin}: split.val_start ({val_start}) is after split.test_start ({test_start}); "
            "the validation segment must start first"
        )
    if not val_start and cfg["train"] + cfg["val"] >= 1:
        raise RecipeError(
            f"{origin}: split.train ({cfg['train']:g}) + split.val ({cfg['val']:g}) = {cfg['train'] + cfg['val']:g} "
            "leaves no test segment; make them sum to less than 1"
        )


def _check_backtest(cfg: dict[str, Any], origin: str) -> None:
    if cfg["rebalance"] and cfg["rebalance_every"] != 1:
        raise RecipeError(
            f"{origin}: backtest.rebalance ({cfg['rebalance']!r}) and "
            f"backtest.rebalance_every ({cfg['rebalance_every']}) "
            "are both set, and only one schedule can apply; keep the calendar or the bar count"
        )


def _check_walkforward(cfg: dict[str, Any], origin: str) -> None:
    """Window lengths that can be compared here (both bars or both durations); mixed ones are
    checked against the data when the folds are built."""
    test, step, train, validation = cfg["test"], cfg["step"], cfg["train"], cfg["validation"]
    if step is not None and _comparable(step, test) and _length(step) < _length(test):
        raise RecipeError(
            f"{origin}: walkforward.step ({step!r}) is shorter than walkforward.test ({test!r}), so test windows "
            "would overlap and score timestamps twice; make step at least test (or leave it unset)"
        )
    if validation and _comparable(validation, train) and _length(validation) >= _length(train):
        raise RecipeError(
            f"{origin}: walkforward.validation ({validation!r}) leaves nothing of walkforward.train ({train!r}) "
            "to fit on; make the validation tail shorter than the training window"
        )


def _comparable(a: int | str, b: int | str) -> bool:
    return isinstance(a, str) == isinstance(b, str)


def _length(value: int | str) -> float:
    """Bars, or seconds of a duration (both already validated by the schema)."""
    from quant_cli.data.frequency import parse_frequency

    return parse_frequency(value).total_seconds() if isinstance(value, str) else float(value)


def _time(text: str) -> dt.datetime:
    """Comparable instants: naive values are UTC (as the split stage reads them)."""
    parsed = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
