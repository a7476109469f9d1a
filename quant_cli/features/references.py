"""Cross-asset reference groups: `[features.references]`, named groups of reference symbols.

    [features.references]
    dataset = "refs"                  # optional: another dataset of the same data home
    crypto = ["BTC-USD", "ETH-USD"]
    macro = ["TNX", "VIX"]

Every symbol being built gets, for each window w of `features.windows`:
- per reference symbol:  ``ref_<group>_<symbol>_{ret,vol,corr,beta}<w>``
- per group:             ``refgrp_<group>_{ret,vol,corr,beta}<w>``
where `ret<w>` is the reference's w-bar log return (the sum of its one-bar log returns), `vol<w>`
their standard deviation (ddof 1), `corr<w>` their correlation with the symbol's one-bar log
returns and `beta<w>` cov(symbol, reference) / var(reference). A group's one-bar return is the
equal-weight mean of its members' one-bar log returns at that bar, over the members that have one
(null when none has).

Time alignment is the benchmark's (features/align.py): each reference's close is joined onto the
symbol's bars backward only (the reference's last bar with ts <= t), at most
`features.max_staleness` old (older → null, never back-filled). Returns are then taken on the
SYMBOL's calendar: on a Monday an equity sees the crypto return from its Friday bar to the crypto
bar at Monday's timestamp, the same interval its own return spans, so weekend crypto bars are
neither lost nor seen early. Everything after the alignment runs on the compiled kernels
(features/kernels.py), in the build and in a served window alike.

References from another dataset (`dataset = ...`) are read from that dataset's pinned version in
a build (the feature-store fingerprint covers its content hash); at serving time their bars come
with the request (the bundle lists them as required symbols) and are not scored themselves.
Group names are letters and digits (no '_'), so every feature name parses back unambiguously.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from quant_cli.errors import DataError, RecipeError, shown
from quant_cli.features.panel import Panel, errstate
from quant_cli.features.registry import REGISTRY, Family, Feature

KEY = "features.references"
GROUP_NAME = r"[A-Za-z][A-Za-z0-9]{0,31}"
STATS = ("ret", "vol", "corr", "beta")
MIN_WINDOW = {"ret": 1, "vol": 2, "corr": 3, "beta": 3}
_STAT = "|".join(STATS)
_MEMBER_NAME = re.compile(rf"ref_({GROUP_NAME})_(.+)_({_STAT})(\d+)")
_GROUP_FEATURE = re.compile(rf"refgrp_({GROUP_NAME})_({_STAT})(\d+)")


def close_column(symbol: str) -> str:
    """The derived input column holding a reference's close aligned to each symbol's bars."""
    return f"ref_close[{symbol}]"


def group_column(group: str) -> str:
    """The derived input column holding a group's one-bar log return on each symbol's calendar."""
    return f"ref_group_return[{group}]"


@dataclass(frozen=True)
class References:
    """The parsed `[features.references]` table: groups (sorted by name, members sorted) and the
    dataset they come from (None: the recipe's own dataset)."""

    groups: tuple[tuple[str, tuple[str, ...]], ...]
    dataset: str | None = None

    @classmethod
    def from_section(cls, raw: Mapping[str, Any] | None, home: str | None = None) -> References | None:
        """Validate the table (RecipeError naming the key); None when it names no group. `home`:
        the recipe's dataset (a `dataset` equal to it means the same as leaving it out)."""
        if not raw:
            return None
        raw = dict(raw)
        dataset = raw.pop("dataset", None)
        if dataset is not None and (not isinstance(dataset, str) or not dataset.strip()):
            raise RecipeError(f'{KEY}.dataset: expected a dataset name, got {shown(dataset)}; e.g. dataset = "refs"')
        groups = []
        for name, members in sorted(raw.items()):
            _check_group(name, members)
            groups.append((name, tuple(sorted(members))))
        if not groups:
            raise RecipeError(f'{KEY}: names no group; add one, e.g. crypto = ["BTC-USD", "ETH-USD"]')
        return cls(tuple(groups), None if dataset == home else dataset)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> References | None:
        if not data:
            return None
        return cls(tuple((g, tuple(m)) for g, m in data["groups"].items()), data.get("dataset"))

    def to_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "groups": {g: list(m) for g, m in self.groups}}

    @property
    def symbols(self) -> list[str]:
        """Every reference symbol, once, sorted."""
        return sorted({s for _, members in self.groups for s in members})

    @property
    def external(self) -> bool:
        """The references come from another dataset: their bars are inputs, never scored rows."""
        return self.dataset is not None

    def members(self, group: str) -> tuple[str, ...]:
        return dict(self.groups).get(group, ())

    def columns(self) -> set[str]:
        """The derived input columns these references make available."""
        return {close_column(s) for s in self.symbols} | {group_column(g) for g, _ in self.groups}

    def features(self, windows: Sequence[int]) -> tuple[list[Feature], list[str]]:
        """(features in canonical order, names dropped because w is below the statistic's minimum):
        per group by name, each member's features, then the group's; stats, then windows, in order."""
        out: list[Feature] = []
        too_short: list[str] = []
        for group, members in self.groups:
            for symbol in (*members, None):
                for stat in STATS:
                    family = _family(group, symbol, stat)
                    for w in sorted(set(windows)):
                        if w >= MIN_WINDOW[stat]:
                            out.append(Feature(family, w))
                        else:
                            too_short.append(family.name(w))
        return out, too_short


def _check_group(name: Any, members: Any) -> None:
    if not re.fullmatch(GROUP_NAME, str(name)):
        raise RecipeError(
            f"{KEY}: group name {shown(name)} must be 1-32 letters or digits starting with a letter "
            "(no '_': it separates the parts of a feature name); e.g. crypto"
        )
    if (
        not isinstance(members, list)
        or not members
        or not all(isinstance(m, str) and m.strip() and m == m.strip() for m in members)
    ):
        raise RecipeError(
            f"{KEY}.{name}: expected a non-empty list of symbols, got {shown(members)}; "
            f'e.g. {name} = ["BTC-USD", "ETH-USD"]'
        )
    if len(set(members)) != len(members):
        twice = sorted({m for m in members if members.count(m) > 1})
        raise RecipeError(f"{KEY}.{name}: symbol {twice[0]!r} is listed twice; list each member once")


# ---- the feature families ---------------------------------------------------------------------------


@functools.cache
def _family(group: str, symbol: str | None, stat: str) -> Family:
    """One family per (group, member or the group itself, statistic): built once, so features and
    the engine's plan cache compare equal."""
    if symbol is None:
        pattern, column, what = f"refgrp_{group}_{stat}{{w}}", group_column(group), f"group {group!r}"
    else:
        pattern, column, what = f"ref_{group}_{symbol}_{stat}{{w}}", close_column(symbol), f"reference {symbol!r}"
    inputs = ("close", column) if stat in ("corr", "beta") else (column,)
    return Family(
        pattern=pattern,
        inputs=inputs,
        tags=("cross_asset", "references"),
        description=f"{_DESCRIPTIONS[stat]} of {what} over w bars ({KEY}).",
        build=None,
        compute=_compute,
        params={"column": column, "is_return": symbol is None, "stat": stat},
        windowed=True,
        min_window=MIN_WINDOW[stat],
    )


_DESCRIPTIONS = {
    "ret": "Log return",
    "vol": "Standard deviation of the one-bar log returns",
    "corr": "Correlation of the symbol's one-bar log returns with those",
    "beta": "Beta (cov / var of one-bar log returns) of the symbol",
}


def _returns(p: Panel, column: str, is_return: bool) -> np.ndarray:
    """One-bar log returns on the symbol's calendar: a group's column already holds them."""
    if is_return:
        return p.col(column)
    return p.memo(("log_return_of", column), lambda: p.diff(np.log(p.col(column))))


def _compute(p: Panel, column: str, is_return: bool, stat: str, w: int) -> np.ndarray:
    ref = _returns(p, column, is_return)
    if stat == "ret":
        return p.sum(ref, w)
    if stat == "vol":
        return p.std(ref, w)
    own = p.memo(("log_return_of", "close"), lambda: p.diff(np.log(p.col("close"))))
    if stat == "corr":
        return p.corr(own, ref, w)
    return p.cov(own, ref, w) / p.var(ref, w)


def feature_by_name(name: str) -> Feature | None:
    """The reference feature a concrete name denotes (the registry asks here first), else None."""
    if not name.startswith("ref"):
        return None
    found = _GROUP_FEATURE.fullmatch(name)
    if found:
        return Feature(_family(found.group(1), None, found.group(2)), int(found.group(3)))
    found = _MEMBER_NAME.fullmatch(name)
    if found:
        return Feature(_family(found.group(1), found.group(2), found.group(3)), int(found.group(4)))
    return None


REGISTRY.resolvers.append(feature_by_name)


def recipe_features(section: Mapping[str, Any], windows: list[int]) -> tuple[list[Feature], list[str]]:
    """Every reference feature of `features.references` over `windows`, and the names too short to compute."""
    if not section.get("references"):
        return [], []
    return References.from_section(section["references"]).features(windows)


REGISTRY.makers["references"] = recipe_features


# ---- alignment and group returns (the engine calls these while deriving inputs) ---------------------


def needed_symbols(references: References, needed: set[str]) -> list[str]:
    """Reference symbols whose aligned close the needed columns read (a group reads its members)."""
    symbols = {s for s in references.symbols if close_column(s) in needed}
    symbols |= {s for g, members in references.groups if group_column(g) in needed for s in members}
    return sorted(symbols)


def series(bars: pl.DataFrame, source: pl.DataFrame | None, symbols: list[str]) -> pl.DataFrame:
    """(symbol, ts, close) of the reference symbols: from `source` (a build's pinned bars) or from
    the bars themselves (a served request carries them); DataError naming any that is absent."""
    frame = bars if source is None else source
    picked = frame.filter(pl.col("symbol").cast(pl.String).is_in(symbols)).select(
        pl.col("symbol").cast(pl.String), "ts", pl.col("close").cast(pl.Float64)
    )
    absent = sorted(set(symbols) - set(picked["symbol"].unique().to_list()))
    if absent:
        raise DataError(
            f"{KEY}: reference symbol(s) {absent[:5]} are not among the bars; include their bars "
            "(every reference symbol is a required input)"
        )
    return picked


def with_aligned(lazy: pl.LazyFrame, refs: pl.DataFrame, tolerance: Any) -> pl.LazyFrame:
    """Add each reference's close, aligned backward only within `tolerance` (older → null)."""
    out = lazy.sort("ts", maintain_order=True)  # join_asof needs the left side sorted by time
    for symbol in sorted(refs["symbol"].unique().to_list()):
        one = refs.filter(pl.col("symbol") == symbol).select("ts", pl.col("close").alias(close_column(symbol)))
        out = out.join_asof(one.sort("ts").lazy(), on="ts", strategy="backward", tolerance=tolerance)
    return out.sort("symbol", "ts", maintain_order=True)


def with_group_returns(frame: pl.DataFrame, references: References, needed: set[str]) -> pl.DataFrame:
    """Add each needed group's one-bar return: the mean of its members' one-bar log returns (on the
    symbol's calendar, by the diff kernel) over the members that have one; null when none has."""
    groups = [(g, m) for g, m in references.groups if group_column(g) in needed]
    if not groups:
        return frame
    panel = Panel(frame)
    columns = []
    with errstate():
        for group, members in groups:
            returns = np.vstack([_returns(panel, close_column(s), False) for s in members])
            present = ~np.isnan(returns)
            count = present.sum(axis=0)
            mean = np.where(present, returns, 0.0).sum(axis=0) / np.where(count > 0, count, 1)
            columns.append(pl.Series(group_column(group), np.where(count > 0, mean, np.nan)))
    return frame.with_columns(columns)


def reference_only(bars: pl.DataFrame, references: References | None) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """(bars to compute features for, reference bars): references from another dataset are inputs
    only, so a request's bars of them leave the scored symbols; same-dataset references stay."""
    if references is None or not references.external:
        return bars, None
    is_ref = pl.col("symbol").cast(pl.String).is_in(references.symbols)
    return bars.filter(~is_ref), bars.filter(is_ref)
