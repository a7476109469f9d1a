"""The feature registry: every feature family is registered once, then selected by recipe.

A *family* is one definition (a polars expression builder) with a name pattern. Families that
take `w` expand over the recipe's `features.windows` (``ret_{w}`` → ``ret_5``, ``ret_20``, ...);
fixed parameters are baked into the name (``rsi_{n}`` with n=14 → ``rsi_14``). A concrete
column is a `Feature` (family + window).

Selection (`resolve`) reads the `[features]` recipe section:
- `sets`: named groups of families ("all" selects every family);
- `include`: extra features, by concrete name (``ret_3`` — any window of a windowed family), by
  family pattern (``ret_{w}``) or by tag (``volatility``);
- `exclude`: the same kinds of names, removed from the selection.
Column order is canonical (registration order, then ascending window) so the same selection
always yields the same table, however the recipe lists it.

Expressions are written for ONE symbol's bars sorted by time; the engine wraps each in
``.over(family.over)`` so nothing crosses symbols. A later cross-sectional family can set
``over="ts"`` (same-timestamp data only, still causal).

Writing a family: use only backward-looking operations (shift(n >= 0), rolling_* with
min_samples = window, ewm_mean(adjust=False), cum_*); the causality tests pick it up
automatically. Reference each sub-expression as few times as possible — polars re-evaluates
every reference inside one expression, so nested smoothings grow exponentially (see
core.seeded_ewm). Declare every raw input column: a feature whose inputs are absent from the
data is skipped with a notice, never filled.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from quant_cli.errors import RecipeError, suggest

# Bump whenever any feature definition changes its values: every cached feature version built
# by older code gets a new fingerprint and is rebuilt.
FEATURE_CODE_VERSION = "1"

ALL_SET = "all"
_WINDOW = "w"
_WHOLE = object()  # marks "every window of this family" in include/exclude matching
_SUGGEST_WINDOWS = (5, 10, 20, 60)


@dataclass(frozen=True, eq=False)  # identity equality: a family is registered once; params (a dict) stay unhashed
class Family:
    """One registered definition. `build(**params)` returns a per-symbol polars expression."""

    pattern: str  # display/lookup key: fixed params substituted, "{w}" kept, e.g. "ret_{w}", "rsi_14"
    inputs: tuple[str, ...]
    tags: tuple[str, ...]
    description: str
    build: Callable[..., pl.Expr]
    params: Mapping[str, Any] = field(default_factory=dict)
    windowed: bool = False
    min_window: int = 1
    sets: tuple[str, ...] = ()
    over: str = "symbol"

    def name(self, window: int | None = None) -> str:
        return self.pattern.replace("{w}", str(window)) if self.windowed else self.pattern

    def expr(self, window: int | None = None) -> pl.Expr:
        params = {**self.params, _WINDOW: window} if self.windowed else dict(self.params)
        return self.build(**params)

    def match_window(self, name: str) -> int | None:
        """The window encoded in a concrete name (``ret_7`` → 7), or None if it is not ours."""
        if not self.windowed:
            return None
        head, _, tail = self.pattern.partition("{w}")
        found = re.fullmatch(re.escape(head) + r"(\d+)" + re.escape(tail), name)
        return int(found.group(1)) if found else None


@dataclass(frozen=True)
class Feature:
    """One output column: a family at one window (None for non-windowed families)."""

    family: Family
    window: int | None = None

    @property
    def name(self) -> str:
        return self.family.name(self.window)

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.family.inputs

    def expr(self) -> pl.Expr:
        return self.family.expr(self.window)


@dataclass(frozen=True)
class Selection:
    """The resolved features plus those dropped because a window is below a family's minimum."""

    features: list[Feature]
    too_short: list[str]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]


class Registry:
    def __init__(self) -> None:
        self.families: dict[str, Family] = {}
        self.sets: dict[str, str] = {ALL_SET: "Every registered feature."}

    def define_set(self, name: str, description: str) -> None:
        self.sets[name] = description

    def register(
        self,
        pattern: str,
        *,
        inputs: Sequence[str],
        tags: Sequence[str],
        description: str,
        sets: Sequence[str] = (),
        params: Mapping[str, Any] | None = None,
        min_window: int = 1,
        over: str = "symbol",
    ) -> Callable[[Callable[..., pl.Expr]], Callable[..., pl.Expr]]:
        """Decorator: register `fn(**params[, w])` under `pattern` (``{w}`` marks a windowed family)."""
        unknown_sets = [s for s in sets if s not in self.sets or s == ALL_SET]
        if unknown_sets or not inputs or not description:
            raise ValueError(f"feature {pattern!r}: define sets {unknown_sets} first; inputs and description are required")
        fixed = dict(params or {})
        key = pattern.format(**fixed, w="{w}")  # bake fixed params into the name, keep the window placeholder

        def decorate(fn: Callable[..., pl.Expr]) -> Callable[..., pl.Expr]:
            family = Family(
                pattern=key, inputs=tuple(inputs), tags=tuple(tags), description=description, build=fn,
                params=fixed, windowed="{w}" in key, min_window=min_window, sets=tuple(sets), over=over,
            )
            self._check_unique(family)
            self.families[key] = family
            return fn

        return decorate

    def _check_unique(self, new: Family) -> None:
        """A concrete name must map to exactly one family (``rsi_{w}`` would swallow ``rsi_14``)."""
        for old in self.families.values():
            if old.pattern == new.pattern or old.match_window(new.pattern) is not None or new.match_window(old.pattern) is not None:
                raise ValueError(f"feature {new.pattern!r} clashes with registered feature {old.pattern!r}")

    # --- lookup ------------------------------------------------------------------------------

    @property
    def tags(self) -> list[str]:
        return sorted({t for fam in self.families.values() for t in fam.tags})

    def in_set(self, name: str) -> list[Family]:
        return [f for f in self.families.values() if name == ALL_SET or name in f.sets]

    def feature(self, name: str) -> Feature:
        """The feature with this concrete name (``ret_7``, ``rsi_14``); KeyError if none."""
        for family in self.families.values():
            if not family.windowed and family.pattern == name:
                return Feature(family)
            window = family.match_window(name)
            if window is not None:
                return Feature(family, window)
        raise KeyError(f"unknown feature {name!r}{suggest(name, self.families)}")

    def catalogue(self) -> list[dict[str, Any]]:
        """One row per family, for `qfactory features ls-specs`."""
        return [
            {"name": f.pattern, "inputs": list(f.inputs), "tags": list(f.tags), "sets": list(f.sets),
             "windowed": f.windowed, "description": f.description}
            for f in self.families.values()
        ]

    # --- selection ---------------------------------------------------------------------------

    def resolve(self, section: Mapping[str, Any]) -> Selection:
        """Turn a `[features]` section into the ordered feature list; unknown names → RecipeError."""
        windows = _windows(section.get("windows", []))
        chosen: dict[str, set[int | None]] = {}
        for set_name in section.get("sets", []):
            if set_name not in self.sets:
                raise RecipeError(
                    f"features.sets: unknown feature set {set_name!r}{suggest(set_name, self.sets)}; "
                    f"known sets: {', '.join(map(repr, self.sets))}"
                )
            for family in self.in_set(set_name):
                chosen.setdefault(family.pattern, set()).update(_family_windows(family, windows))
        for item in section.get("include", []):
            for family, window in self._match(item, "features.include"):
                wins = _family_windows(family, windows) if window is _WHOLE else [window]
                chosen.setdefault(family.pattern, set()).update(wins)
        for item in section.get("exclude", []):
            for family, window in self._match(item, "features.exclude"):
                if window is _WHOLE or not family.windowed:  # a tag or pattern drops every window
                    chosen.pop(family.pattern, None)
                else:
                    chosen.get(family.pattern, set()).discard(window)
        return self._ordered(chosen)

    def _match(self, item: str, key: str) -> list[tuple[Family, Any]]:
        """(family, window) pairs `item` names; window is _WHOLE for a tag or a family pattern."""
        if item in self.tags:
            return [(f, _WHOLE) for f in self.families.values() if item in f.tags]
        if item in self.families:
            return [(self.families[item], _WHOLE)]
        try:
            feature = self.feature(item)
        except KeyError:
            raise RecipeError(self._unknown(item, key)) from None
        return [(feature.family, feature.window if feature.family.windowed else _WHOLE)]

    def _unknown(self, item: str, key: str) -> str:
        names = [*self.tags, *self.families]  # concrete names of every family at common windows
        names += [f.name(w) for f in self.families.values() if f.windowed for w in _SUGGEST_WINDOWS]
        return (f"{key}: unknown feature or tag {item!r}{suggest(item, names)}; "
                "see `qfactory features ls-specs` for feature names and tags")

    def _ordered(self, chosen: dict[str, set[int | None]]) -> Selection:
        features: list[Feature] = []
        too_short: list[str] = []
        for pattern, family in self.families.items():  # registration order is the column order
            wins = chosen.get(pattern, set())
            if not family.windowed:
                features += [Feature(family)] if wins else []
                continue
            for w in sorted(w for w in wins if w is not None):
                if w >= family.min_window:
                    features.append(Feature(family, w))
                else:
                    too_short.append(family.name(w))
        return Selection(features, too_short)


def _windows(raw: Iterable[Any]) -> list[int]:
    windows = list(raw)
    bad = [w for w in windows if not isinstance(w, int) or isinstance(w, bool) or w < 1]
    if bad:
        raise RecipeError(f"features.windows: windows are bar counts >= 1, got {bad!r}; e.g. windows = [5, 10, 20, 60]")
    return sorted(set(windows))


def _family_windows(family: Family, windows: list[int]) -> list[int | None]:
    return list(windows) if family.windowed else [None]


REGISTRY = Registry()
register = REGISTRY.register
