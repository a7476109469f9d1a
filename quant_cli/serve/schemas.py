"""Request and response models of the server (pydantic, so the OpenAPI schema is exact), and the
bundle's own input/output JSON schema (which adds what THIS bundle needs: columns, symbols, bars)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

Finite = Annotated[float, Field(allow_inf_nan=False)]
Name = Annotated[str, Field(min_length=1, max_length=64)]


class Bar(BaseModel):
    """One raw bar, long format. Naive timestamps are UTC. Send the columns GET /metadata lists."""

    model_config = ConfigDict(extra="forbid")
    symbol: Name
    ts: dt.datetime
    open: Finite | None = None
    high: Finite | None = None
    low: Finite | None = None
    close: Finite | None = None
    volume: Finite | None = None
    adj_close: Finite | None = None
    vwap: Finite | None = None
    sector: Name | None = None


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bars: list[Bar] = Field(
        min_length=1, description="Bars of one or more symbols; each symbol needs the bundle's required_bars."
    )


class FeatureRow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    symbol: Name
    ts: dt.datetime
    features: dict[str, Finite | None] = Field(
        description="Every feature GET /metadata lists, raw (before preprocessing)."
    )


class PredictFeaturesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows: list[FeatureRow] = Field(min_length=1)


class Prediction(BaseModel):
    symbol: str
    ts: dt.datetime
    score: float
    probabilities: dict[str, float] | None = Field(None, description="p_<class> for classifiers")


class PredictResponse(BaseModel):
    bundle_id: str
    predictions: list[Prediction]


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bundle: Annotated[str, Field(min_length=1, max_length=4096)]
    trust_pickle: bool = False


class ReloadResponse(BaseModel):
    bundle_id: str
    previous: str


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    ready: bool
    bundle_id: str


class ErrorResponse(BaseModel):
    error: str
    kind: str


# ---- the bundle's own schema files ---------------------------------------------------------------------

_JSON_SCHEMA = "https://json-schema.org/draft/2020-12/schema"
_NUMBER = {"type": "number"}


def input_schema(spec: Any) -> dict[str, Any]:
    """JSON schema of a POST /predict body for this bundle; `x-qfactory` holds the numbers."""
    bar = {
        "type": "object",
        "required": ["symbol", "ts", *spec.columns, *spec.keys],
        "properties": {
            "symbol": {"type": "string"},
            "ts": {"type": "string", "format": "date-time"},
            **{c: _NUMBER for c in spec.columns},
            **{k: {"type": "string"} for k in spec.keys},
        },
    }
    return {
        "$schema": _JSON_SCHEMA,
        "title": "qfactory predict request (raw bars, long format)",
        "type": "object",
        "required": ["bars"],
        "properties": {"bars": {"type": "array", "items": bar}},
        "description": f"At least {spec.required_bars} bars per symbol"
        + (f"; must include symbols {spec.required_symbols}" if spec.required_symbols else ""),
        "x-qfactory": spec.to_json(),
    }


def output_schema(columns: list[str]) -> dict[str, Any]:
    probs = [c for c in columns if c.startswith("p_")]
    row = {
        "type": "object",
        "required": ["symbol", "ts", "score"],
        "properties": {
            "symbol": {"type": "string"},
            "ts": {"type": "string", "format": "date-time"},
            "score": _NUMBER,
            "probabilities": {"type": "object", "properties": {p: _NUMBER for p in probs}},
        },
    }
    return {
        "$schema": _JSON_SCHEMA,
        "title": "qfactory predict response",
        "type": "object",
        "required": ["bundle_id", "predictions"],
        "properties": {"bundle_id": {"type": "string"}, "predictions": {"type": "array", "items": row}},
        "x-qfactory": {"columns": columns},
    }
