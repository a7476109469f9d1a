"""The feature registry: every feature family is registered once, then selected by recipe.

A *family* is one definition (a function over the compiled kernels, `kernel=True`; or a polars
expression builder, stage 2 and extensions) with a name pattern. Placeholders in
the pattern say what it expands over:
- ``{w}``: a window in bars, from the recipe's `features.windows` (``ret_{w}`` → ``ret_5``, ...) or
  from the family's own window key (the Alpha158 set uses `features.alpha158_windows`, default
  5/10/20/30/60, so the published set stays fixed whatever `features.windows` says);
- ``{tf}``: a coarser timeframe from `features.timeframes` (``mtf_rsi_{tf}`` → ``mtf_rsi_1w``); the
  builder runs on resampled bars (see features/mtf.py);
- ``{feature}``: another feature, from `features.cross_sectional` or a concrete name
  (``cs_rank_{feature}`` → ``cs_rank_ret_20``); see stage 2 below.
Fixed parameters are baked into the name (``rsi_{n}`` with n=14 → ``rsi_14``). A concrete column
is a `Feature` (family + window / timeframe / source features).

Selection (`resolve`) reads the `[features]` recipe section:
- `sets`: named groups of families ("all" selects every family);
- `include`: extra features, by concrete name (``ret_3`` — any window of a windowed family), by
  family pattern (``ret_{w}``) or by tag (``volatility``);
- `exclude`: the same kinds of names, removed from the selection.
Column order is canonical (registration order, then ascending window / timeframe, source name)
so the same selection always yields the same table, however the recipe lists it.

Where a family runs (`over`):
- ``"symbol"`` (default): the expression is written for ONE symbol's bars sorted by time; the
  engine evaluates it per symbol, so nothing crosses symbols;
- ``"row"``: row-wise (no shift, no window) — on raw inputs, or, with `sources`, on other
  features' columns after they are computed (a *composite*: IMXD = IMAX - IMIN shares the work);
- ``"ts"`` or ``("ts", "sector")``: stage 2, across symbols at one timestamp, transforming its
  `sources` (still causal: it sees same-timestamp values only); runs once every symbol's stage 1
  is done (in a chunked build, over all chunks).
Sources a recipe does not select are computed and dropped.

Writing a per-symbol family: `@register(..., kernel=True)` on `fn(p: Panel, [*sources], **params)`
returning a float64 array; use only the panel's kernels (shift(n >= 0), trailing windows, seeded
recursions: features/kernels.py) and elementwise numpy, and share helper series with `p.memo`.
The causality tests and the kernel-vs-oracle tests pick a new family up automatically (add its
reference polars expression to tests/feature_oracle). Declare every raw input column: a feature
whose inputs are absent from the data is skipped with a notice, never filled.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from quant_cli.data.frequency import parse_duration, parse_frequency
from quant_cli.errors import RecipeError, suggest

# Bump whenever any feature definition changes its values: every cached feature version built
# by older code gets a new fingerprint and is rebuilt.
FEATURE_CODE_VERSION = "2"

ALL_SET = "all"
_WINDOW = "w"
_WHOLE = object()  # marks "every variant of this family" in include/exclude matching
_SUGGEST_WINDOWS = (5, 10, 20, 60)
_TIMEFRAME = r"(\d+[smhdw])"
Variant = Any  # int window, str timeframe, Feature source, or None


@dataclass(frozen=True, eq=False)  # identity equality: a family is registered once; params (a dict) stay unhashed
class Family:
    """One registered definition: `compute(panel, *sources, **params)` returns a float64 array over
    the compiled kernels (features/panel.py), or, for a polars family (no `compute`),
    `build(*sources, **params)` returns a polars expression (the engine still runs those: tests'
    deliberately leaky features, the oracle of tests/feature_oracle, future user expressions)."""

    pattern: str  # display/lookup key: fixed params substituted, placeholders kept, e.g. "ret_{w}", "rsi_14"
    inputs: tuple[str, ...]
    tags: tuple[str, ...]
    description: str
    build: Callable[..., pl.Expr] | None
    params: Mapping[str, Any] = field(default_factory=dict)
    windowed: bool = False
    min_window: int = 1
    sets: tuple[str, ...] = ()
    over: str | tuple[str, ...] = "symbol"
    window_key: str = "windows"  # the recipe key listing this family's windows
    default_windows: tuple[int, ...] = ()  # used when the section lacks window_key (never for "windows")
    sources: tuple[str, ...] = ()  # features it is computed from: "ret_{w}", "MAX{w}", or "{feature}"
    derived: tuple[str, ...] = ()  # per-symbol helper columns (Registry.derive) computed once, before the features
    compute: Callable[..., Any] | None = None  # the kernel implementation (see the class doc)
    lookback: int = 1  # bars of history a value reads beyond `window` (a plugin's @factor(window=...))
    plugin: str | None = None  # "file.py:<sha256>" of a user's factor plugin (features/plugins.py), else None

    @property
    def kernel(self) -> bool:
        return self.compute is not None

    @property
    def timeframed(self) -> bool:
        return "{tf}" in self.pattern

    @property
    def generic(self) -> bool:
        return "{feature}" in self.pattern

    @property
    def stage(self) -> int:
        """1: per symbol (over="symbol") or row-wise (over="row"); 2: across symbols at one timestamp."""
        return 1 if self.over in ("symbol", "row") else 2

    @property
    def composite(self) -> bool:
        """Row-wise from other features' columns (computed after them, e.g. IMXD = IMAX - IMIN)."""
        return self.over == "row" and bool(self.sources)

    @property
    def over_keys(self) -> list[str]:
        return [self.over] if isinstance(self.over, str) else list(self.over)

    def name(self, window: int | None = None) -> str:
        return self.pattern.replace("{w}", str(window)) if self.windowed else self.pattern

    def expr(self, window: int | None = None) -> pl.Expr:
        if self.build is None:
            raise TypeError(f"feature family {self.pattern!r} runs on the compiled kernels, not as a polars expression")
        params = {**self.params, _WINDOW: window} if self.windowed else dict(self.params)
        return self.build(**params)

    def match_window(self, name: str) -> int | None:
        """The window encoded in a concrete name (``ret_7`` → 7), or None if it is not ours."""
        if not self.windowed:
            return None
        head, _, tail = self.pattern.partition("{w}")
        found = re.fullmatch(re.escape(head) + r"(\d+)" + re.escape(tail), name)
        return int(found.group(1)) if found else None

    def match_timeframe(self, name: str) -> str | None:
        if not self.timeframed:
            return None
        head, _, tail = self.pattern.partition("{tf}")
        found = re.fullmatch(re.escape(head) + _TIMEFRAME + re.escape(tail), name)
        return found.group(1) if found else None


@dataclass(frozen=True)
class Feature:
    """One output column: a family at one window / timeframe / source features (None / () if unused)."""

    family: Family
    window: int | None = None
    timeframe: str | None = None
    sources: tuple[Feature, ...] = ()  # the features it is computed from (composite, cross-sectional)

    @functools.cached_property  # read thousands of times per served request; a Feature never changes
    def name(self) -> str:
        name = self.family.name(self.window)
        if self.timeframe is not None:
            name = name.replace("{tf}", self.timeframe)
        if self.family.generic and self.sources:
            name = name.replace("{feature}", self.sources[0].name)
        return name

    @functools.cached_property
    def inputs(self) -> tuple[str, ...]:
        extra = [c for s in self.sources for c in s.inputs]
        return tuple(dict.fromkeys((*self.family.inputs, *extra)))

    def compute(self, panel: Any, sources: Sequence[Any] = ()) -> Any:
        """A kernel family's values on `panel` (features/panel.py); `sources`: its sources' arrays."""
        params = dict(self.family.params)
        if self.family.windowed:
            params[_WINDOW] = self.window
        return self.family.compute(panel, *sources, **params)

    def expr(self) -> pl.Expr:
        """The family's expression; families with sources get their source columns as arguments."""
        if self.family.build is None:
            raise TypeError(f"feature {self.name!r} runs on the compiled kernels, not as a polars expression")
        if not self.sources:
            return self.family.expr(self.window)
        params = dict(self.family.params)
        if self.family.windowed:
            params[_WINDOW] = self.window
        return self.family.build(*(pl.col(s.name) for s in self.sources), **params)


@dataclass(frozen=True)
class Selection:
    """The resolved features plus those dropped because a window is below a family's minimum."""

    features: list[Feature]
    too_short: list[str]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]


def feature_lookback(feature: Feature) -> int:
    """Bars of history a feature's definition reads (its window, or its sources'); recursive
    features (EMA, Wilder) converge over more bars than this."""
    own = max(feature.window or 1, feature.family.lookback)
    return max([own, *(feature_lookback(s) for s in feature.sources)])


class Registry:
    def __init__(self) -> None:
        self.families: dict[str, Family] = {}
        self.sets: dict[str, str] = {ALL_SET: "Every registered feature."}
        self.derived: dict[str, pl.Expr] = {}
        # Name resolvers for families made from the recipe rather than registered (features/references.py):
        # each takes a concrete name and returns its Feature, or None when the name is not its own.
        self.resolvers: list[Callable[[str], Feature | None]] = []
        # Features made from a recipe's [features] section, by the modules that define them, set when those are
        # imported so that this module imports neither: "references" (features/references.py) and "expressions"
        # (features/expression_eval.py). Each maps (section, windows) to (features, names too short to compute).
        self.makers: dict[str, Callable[[Mapping[str, Any], list[int]], tuple[list[Feature], list[str]]]] = {}

    def derive(self, name: str, expr: pl.Expr) -> None:
        """A helper column shared by several families, computed once per build (e.g. a rank).

        `expr` is evaluated on the whole (symbol, ts)-sorted frame, so it must be per-symbol
        (`.over("symbol")`) or row-wise; families list it in `derived` and read `pl.col(name)`.
        """
        self.derived[name] = expr

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
        over: str | tuple[str, ...] = "symbol",
        window_key: str = "windows",
        default_windows: Sequence[int] = (),
        sources: Sequence[str] = (),
        derived: Sequence[str] = (),
        kernel: bool = False,
    ) -> Callable[[Callable[..., pl.Expr]], Callable[..., pl.Expr]]:
        """Decorator: register `fn(**params[, w])` under `pattern` (placeholders: see the module doc).

        With `kernel=True`, `fn(panel, *sources, **params[, w])` computes the values on the compiled
        kernels (features/panel.py); otherwise `fn` returns a polars expression."""
        unknown_sets = [s for s in sets if s not in self.sets or s == ALL_SET]
        if unknown_sets or not (inputs or sources) or not description:
            raise ValueError(
                f"feature {pattern!r}: define sets {unknown_sets} first; inputs and description are required"
            )
        fixed = dict(params or {})
        key = pattern.format(**fixed, w="{w}", tf="{tf}", feature="{feature}")
        if any(d not in self.derived for d in derived):
            raise ValueError(f"feature {pattern!r}: derive {[d for d in derived if d not in self.derived]} first")
        sources = tuple(sources)
        if (
            (over == "symbol" and sources)
            or (over not in ("symbol", "row") and not sources)
            or (("{feature}" in key) != (sources == ("{feature}",)))
        ):
            raise ValueError(
                f"feature {pattern!r}: cross-sectional families need sources, per-symbol "
                f"ones none; generic ones source '{{feature}}'"
            )

        def decorate(fn: Callable[..., pl.Expr]) -> Callable[..., pl.Expr]:
            family = Family(
                pattern=key,
                inputs=tuple(inputs),
                tags=tuple(tags),
                description=description,
                build=None if kernel else fn,
                compute=fn if kernel else None,
                params=fixed,
                windowed="{w}" in key,
                min_window=min_window,
                sets=tuple(sets),
                over=over,
                window_key=window_key,
                default_windows=tuple(default_windows),
                sources=sources,
                derived=tuple(derived),
            )
            self._check_unique(family)
            self.families[key] = family
            return fn

        return decorate

    def _check_unique(self, new: Family) -> None:
        """A concrete name must map to exactly one family (``rsi_{w}`` would swallow ``rsi_14``)."""
        for old in self.families.values():
            if (
                old.pattern == new.pattern
                or old.match_window(new.pattern) is not None
                or new.match_window(old.pattern) is not None
                or _shadows(old, new)
                or _shadows(new, old)
            ):
                raise ValueError(f"feature {new.pattern!r} clashes with registered feature {old.pattern!r}")

    # --- lookup ------------------------------------------------------------------------------

    @property
    def tags(self) -> list[str]:
        return sorted({t for fam in self.families.values() for t in fam.tags})

    def in_set(self, name: str) -> list[Family]:
        """The set's families; "all" is every built-in one (plugins join only the recipes that name them)."""
        return [f for f in self.families.values() if (name == ALL_SET and f.plugin is None) or name in f.sets]

    def feature(self, name: str) -> Feature:
        """The feature with this concrete name (``ret_7``, ``rsi_14``, ``cs_rank_ret_5``); KeyError if none."""
        made = self._made(name)
        if made is not None:
            return made
        for family in self.families.values():
            if family.generic:
                continue
            if not (family.windowed or family.timeframed) and family.pattern == name:
                return self._with_sources(family, None)
            window = family.match_window(name)
            if window is not None:
                return self._with_sources(family, window)
            timeframe = family.match_timeframe(name)
            if timeframe is not None:
                return Feature(family, timeframe=timeframe)
        for family in self.families.values():
            prefix = family.pattern.partition("{feature}")[0]
            if family.generic and name.startswith(prefix):
                return Feature(family, sources=(self._stage1(name[len(prefix) :]),))
        raise KeyError(f"unknown feature {name!r}{suggest(name, self.families)}")

    def _with_sources(self, family: Family, window: int | None) -> Feature:
        sources = tuple(self._stage1(p.replace("{w}", str(window))) for p in family.sources)
        return Feature(family, window, sources=sources)

    def _stage1(self, name: str) -> Feature:
        feature = self.feature(name)
        if feature.family.stage != 1:
            raise KeyError(
                f"{name!r} is itself cross-sectional; cross-sectional transforms apply to per-symbol features only"
            )
        return feature

    def catalogue(self) -> list[dict[str, Any]]:
        """One row per family, for `qfactory features ls-specs`."""
        return [
            {
                "name": f.pattern,
                "inputs": list(f.inputs),
                "tags": list(f.tags),
                "sets": list(f.sets),
                "windowed": f.windowed,
                "expands_over": _expands_over(f),
                "description": f.description,
            }
            for f in self.families.values()
            if f.plugin is None  # a plugin's factors are listed by its file, not the catalogue
        ]

    # --- selection ---------------------------------------------------------------------------

    def resolve(self, section: Mapping[str, Any]) -> Selection:
        """Turn a `[features]` section into the ordered feature list; unknown names → RecipeError."""
        context = _Context(self, section)
        chosen: dict[str, set[Variant]] = {}
        for set_name in section.get("sets", []):
            if set_name not in self.sets:
                raise RecipeError(
                    f"features.sets: unknown feature set {set_name!r}{suggest(set_name, self.sets)}; "
                    f"known sets: {', '.join(map(repr, self.sets))}"
                )
            for family in self.in_set(set_name):
                chosen.setdefault(family.pattern, set()).update(context.variants(family))
        include, exclude = section.get("include", []), section.get("exclude", [])
        for item in (i for i in include if self._made(i) is None):
            for family, variant in self._match(item, "features.include"):
                chosen.setdefault(family.pattern, set()).update(
                    context.variants(family) if variant is _WHOLE else [variant]
                )
        for item in (i for i in exclude if self._made(i) is None):
            for family, variant in self._match(item, "features.exclude"):
                if variant is _WHOLE or variant is None:  # a tag or pattern drops every variant
                    chosen.pop(family.pattern, None)
                else:
                    chosen.get(family.pattern, set()).discard(variant)
        selection = self._ordered(chosen)
        made, short = self.makers["references"](section, context.windows)
        made += [f for i in include if (f := self._made(i)) is not None and f.name not in {m.name for m in made}]
        dropped = set(exclude)  # concrete names, or a tag such as cross_asset
        made = [f for f in made if f.name not in dropped and not dropped & set(f.family.tags)]
        made += self.makers["expressions"](section, context.windows)[0]  # factor expressions last, sorted by name
        return Selection([*selection.features, *made], [*selection.too_short, *short])

    def _made(self, name: str) -> Feature | None:
        """The feature a resolver makes of a concrete name (a reference feature), else None."""
        return next((f for resolve in self.resolvers if (f := resolve(name)) is not None), None)

    def _match(self, item: str, key: str) -> list[tuple[Family, Variant]]:
        """(family, variant) pairs `item` names; variant is _WHOLE for a tag or a family pattern."""
        if item in self.tags:
            return [(f, _WHOLE) for f in self.families.values() if item in f.tags]
        if item in self.families:
            return [(self.families[item], _WHOLE)]
        try:
            feature = self.feature(item)
        except KeyError:
            raise RecipeError(self._unknown(item, key)) from None
        return [(feature.family, _variant(feature))]

    def _unknown(self, item: str, key: str) -> str:
        names = [*self.tags, *self.families]  # concrete names of every family at common windows
        names += [f.name(w) for f in self.families.values() if f.windowed for w in _SUGGEST_WINDOWS]
        return (
            f"{key}: unknown feature or tag {item!r}{suggest(item, names)}; "
            "see `qfactory features ls-specs` for feature names and tags"
        )

    def _ordered(self, chosen: dict[str, set[Variant]]) -> Selection:
        features: list[Feature] = []
        too_short: list[str] = []
        for pattern, family in self.families.items():  # registration order is the column order
            variants = chosen.get(pattern, set())
            if family.generic:
                features += [Feature(family, sources=(s,)) for s in sorted(variants, key=lambda s: s.name)]
            elif family.timeframed:
                features += [Feature(family, timeframe=tf) for tf in sorted(variants, key=_timeframe_order)]
            elif not family.windowed:
                features += [self._with_sources(family, None)] if variants else []
            else:
                for w in sorted(w for w in variants if w is not None):
                    if w >= family.min_window:
                        features.append(self._with_sources(family, w))
                    else:
                        too_short.append(family.name(w))
        return Selection(features, too_short)


class _Context:
    """The recipe lists a family expands over when it is selected whole (by set, tag or pattern)."""

    def __init__(self, registry: Registry, section: Mapping[str, Any]) -> None:
        self.section = section
        self.windows = _windows(section.get("windows", []), "features.windows")
        self.timeframes = _timeframes(section.get("timeframes", []))
        self.sources = [_source(registry, name) for name in section.get("cross_sectional", [])]

    def variants(self, family: Family) -> list[Variant]:
        if family.generic:
            return list(self.sources)
        if family.timeframed:
            return list(self.timeframes)
        if not family.windowed:
            return [None]
        if family.window_key == "windows":
            return list(self.windows)
        return _windows(self.section.get(family.window_key, family.default_windows), f"features.{family.window_key}")


def _shadows(generic: Family, other: Family) -> bool:
    """A generic ``cs_rank_{feature}`` answers to every name starting with ``cs_rank_``."""
    return generic.generic and other.pattern.startswith(generic.pattern.partition("{feature}")[0])


def _variant(feature: Feature) -> Variant:
    if feature.family.generic:
        return feature.sources[0]
    if feature.family.timeframed:
        return feature.timeframe
    return feature.window


def _source(registry: Registry, name: Any) -> Feature:
    try:
        return registry._stage1(str(name))
    except KeyError as exc:
        raise RecipeError(
            f"features.cross_sectional: {exc.args[0]}; list per-symbol feature names such as 'ret_20'"
        ) from None


def _windows(raw: Iterable[Any], key: str) -> list[int]:
    windows = list(raw)
    bad = [w for w in windows if not isinstance(w, int) or isinstance(w, bool) or w < 1]
    if bad:
        raise RecipeError(f"{key}: windows are bar counts >= 1, got {bad!r}; e.g. windows = [5, 10, 20, 60]")
    return sorted(set(windows))


def _timeframes(raw: Iterable[Any]) -> list[str]:
    timeframes = [str(t).strip().lower() for t in raw]
    for timeframe in timeframes:
        parse_duration(timeframe, "features.timeframes", "['1h', '1d', '1w']")
    return sorted(set(timeframes), key=_timeframe_order)


def _timeframe_order(tf: str) -> tuple[dt.timedelta, str]:
    return parse_frequency(tf), tf


def _expands_over(family: Family) -> str | None:
    if family.generic:
        return "features.cross_sectional"
    if family.timeframed:
        return "features.timeframes"
    return f"features.{family.window_key}" if family.windowed else None


REGISTRY = Registry()
register = REGISTRY.register
