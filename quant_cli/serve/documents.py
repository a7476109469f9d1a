"""The bundle's JSON documents checked after their hashes (issue 21 §3): a hash proves the bytes are
the ones the manifest lists, not that whoever wrote the manifest wrote sensible bytes.

`pipeline.json` and the input spec (input_schema.json's "x-qfactory") are validated with pydantic,
then semantically: at least one feature, every per-feature table naming exactly the features, a
fitted preprocessing state of the pipeline's shape (its columns are the features, the statistics
its scaler and fill need, positive scales), durations that parse, and a request size of at least
the features' measured lookback. Each failure is one BundleError line naming the file and field.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from quant_cli.data.frequency import parse_frequency
from quant_cli.errors import BundleError, QFactoryError, clip_huge_values
from quant_cli.pipeline.fitted import FittedPipeline
from quant_cli.serve.contents import REBUILD, Contents
from quant_cli.serve.loaded import InputSpec

MAX_BARS = 10_000_000  # a request size beyond any request limit is a broken document, not a bundle
Finite = Annotated[float, Field(allow_inf_nan=False)]
Bars = Annotated[int, Field(ge=1, le=MAX_BARS)]
Text = Annotated[str, Field(min_length=1, max_length=256)]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Preprocess(_Doc):
    scaler: Literal["zscore", "robust", "rank_gauss", "none"]
    clip: Finite = Field(ge=0)
    fill: Literal["zero", "median", "drop", "none"]


class Options(_Doc):
    benchmark: Text | None = None
    max_staleness: Text | None = None
    bar_spacing: Text | None = None

    @field_validator("max_staleness", "bar_spacing")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            _duration(value)
        return value


class AdjustmentDoc(_Doc):
    mode: Literal["none", "split_dividend"]
    raw_symbols: list[Text] = []


class State(_Doc):
    """The fitted preprocessing (pipeline/preprocess.py::fit_preprocess)."""

    kind: Literal["zscore", "robust", "rank_gauss", "none"]
    fill: Literal["zero", "median", "drop", "none"]
    clip: Finite = Field(ge=0)
    columns: list[Text]
    median: dict[str, Finite] | None = None
    center: dict[str, Finite] | None = None
    scale: dict[str, Finite] | None = None
    quantiles: dict[str, list[Finite]] | None = None

    @model_validator(mode="after")
    def _statistics(self) -> State:
        needed = {
            "center": self.kind in ("zscore", "robust"),
            "scale": self.kind in ("zscore", "robust"),
            "median": self.fill == "median" or self.kind == "robust",
            "quantiles": self.kind == "rank_gauss",
        }
        for stat, need in needed.items():
            table = getattr(self, stat)
            if need and (table is None or set(table) != set(self.columns)):
                raise ValueError(
                    f"{stat} must give a value for every column (scaler {self.kind!r}, fill {self.fill!r})"
                )
        if self.scale and any(v <= 0 for v in self.scale.values()):
            raise ValueError("scale values must be positive")
        for name, qs in (self.quantiles or {}).items():
            if len(qs) < 2 or any(b < a for a, b in itertools.pairwise(qs)):
                raise ValueError(f"quantiles of {name!r} must be at least two values in increasing order")
        return self


class PipelineDoc(_Doc):
    format_version: Literal[1]
    features: list[Text] = Field(min_length=1, max_length=100_000)
    preprocess: Preprocess
    options: Options
    lookback: dict[str, Bars]
    adjustment: AdjustmentDoc
    symbol_encoding: Literal["none", "one_hot", "index", "embedding"]
    unseen_symbols: Literal["error", "neutral"]
    feature_version: Text | None = None
    state: State
    dtype: Literal["float32"] = "float32"
    warmup: dict[str, Bars] = {}
    expressions: dict[Text, Annotated[str, Field(min_length=1, max_length=10_000)]] = {}  # checked by from_json

    @model_validator(mode="after")
    def _shapes(self) -> PipelineDoc:
        features = self.features
        if odd := sorted(set(self.expressions) - set(features)):
            raise ValueError(f"expressions must name features only ({odd[0]!r} is not a feature)")
        if len(set(features)) != len(features):
            raise ValueError(f"features: {next(f for f in features if features.count(f) > 1)!r} appears twice")
        for table in ("lookback", "warmup"):
            names = getattr(self, table)
            if (names or table == "lookback") and set(names) != set(features):
                odd = min(set(names) ^ set(features))
                raise ValueError(f"{table} must name exactly the features ({odd!r} is in one and not the other)")
        if self.state.columns != features:
            raise ValueError("state.columns must be the features, in order")
        if (self.state.kind, self.state.fill) != (self.preprocess.scaler, self.preprocess.fill):
            raise ValueError(
                f"state is fitted for scaler {self.state.kind!r}, fill {self.state.fill!r}; "
                f"preprocess says {self.preprocess.scaler!r}, {self.preprocess.fill!r}"
            )
        return self


class SpecDoc(_Doc):
    required_bars: Bars
    columns: list[Literal["open", "high", "low", "close", "volume", "adj_close", "vwap"]]
    required_symbols: list[Text] = Field(default=[], max_length=1_000_000)
    why_symbols: str = Field(default="", max_length=10_000)
    keys: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]] = []  # grouping columns, e.g. sector
    window: Bars = 1
    timeframes: list[Text] | None = None

    @field_validator("timeframes")
    @classmethod
    def _durations(cls, value: list[str] | None) -> list[str] | None:
        for item in value or []:
            _duration(item)
        return value


def pipeline_of(contents: Contents, trust_plugins: bool = False) -> FittedPipeline:
    data = contents.json("pipeline.json")
    _validated(PipelineDoc, data, contents, "pipeline.json")
    check_plugins(contents.label, data, trust_plugins)
    try:
        return FittedPipeline.from_json(data)
    except QFactoryError as exc:  # e.g. a feature this qfactory does not know
        raise BundleError(f"bundle {contents.label}: {exc}; {REBUILD}") from None


def check_plugins(label: str, pipeline: dict[str, Any], trust_plugins: bool) -> None:
    """A bundle carrying factor plugins (Python that runs when it loads) is refused unless trusted."""
    carried = pipeline.get("plugins") or []
    if carried and not trust_plugins:
        files = ", ".join(str(p.get("file", "?")) if isinstance(p, dict) else "?" for p in carried)
        raise BundleError(
            clip_huge_values(
                f"bundle {label}: it carries factor plugin code ({files}), which runs when the bundle loads; "
                "pass --trust-plugins only for bundles you made yourself"
            )
        )


def spec_of(contents: Contents, pipeline: FittedPipeline) -> InputSpec:
    data = contents.json("input_schema.json")
    spec = data.get("x-qfactory") if isinstance(data, dict) else None
    _validated(SpecDoc, spec, contents, "input_schema.json: x-qfactory")
    loaded = InputSpec.from_json(spec)  # type: ignore[arg-type]
    if loaded.required_bars < pipeline.required_bars:
        raise BundleError(
            f"bundle {contents.label}: input_schema.json asks for {loaded.required_bars} bars per "
            f"symbol, fewer than the {pipeline.required_bars} its features need (pipeline.json warmup); "
            f"{REBUILD}"
        )
    return loaded


def _validated(doc: type[BaseModel], data: Any, contents: Contents, name: str) -> None:
    try:
        doc.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        message = first["msg"].removeprefix("Value error, ")
        raise BundleError(
            clip_huge_values(
                f"bundle {contents.label}: {name} is not what this qfactory writes ({where}: {message}); {REBUILD}"
            )
        ) from None


def _duration(text: str) -> None:
    """A duration such as '1d' (pydantic reports a ValueError raised in a validator, not a DataError)."""
    try:
        parse_frequency(text)
    except QFactoryError as exc:
        raise ValueError(str(exc)) from None
