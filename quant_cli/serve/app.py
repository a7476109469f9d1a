"""The HTTP server (FastAPI): a bundle's scores for raw bars or feature rows, with hot reload.

Every request takes the bundle current when it starts and finishes on it, so `POST /reload`
(which verifies and loads the new bundle first, then swaps one reference) never disturbs a request
in flight, and a failed reload keeps serving the old bundle. Client input never produces a 5xx:
bad payloads are 422 naming the field (pydantic) or the row and column (the ingest validation),
too much is 413, and a missing token 401 (serve/guard.py).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import pydantic_core
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from quant_cli import __version__
from quant_cli.errors import QFactoryError, clip_huge_values
from quant_cli.serve import bundle as bundles
from quant_cli.serve.batching import Batcher
from quant_cli.serve.guard import Guard, Metrics
from quant_cli.serve.loaded import REQUEST_SEP, FeatureRows, LoadedBundle, attempt, validated
from quant_cli.serve.schemas import (
    ErrorResponse,
    Health,
    PredictFeaturesRequest,
    PredictRequest,
    PredictResponse,
    Ready,
    ReloadRequest,
    ReloadResponse,
)

DEFAULT_MAX_ROWS = 100_000
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
_BAR_COLUMNS = ("open", "high", "low", "close", "volume", "adj_close", "vwap", "sector")
_ERRORS = {422: {"model": ErrorResponse}, 413: {"model": ErrorResponse}, 401: {"model": ErrorResponse}}


class InputError(Exception):
    def __init__(self, status: int, message: str, kind: str) -> None:
        super().__init__(message)
        self.status, self.kind = status, kind


@dataclass
class Limits:
    max_rows: int = DEFAULT_MAX_ROWS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


class Holder:
    """The current bundle; reloads are serialised, requests read the reference once."""

    def __init__(self, bundle: LoadedBundle, trust_pickle: bool, trust_plugins: bool = False) -> None:
        self.current = bundle
        self.trust_pickle = trust_pickle
        self.trust_plugins = trust_plugins  # the server's flag: a /reload payload cannot grant it
        self.lock = threading.Lock()

    def reload(self, path: str) -> tuple[LoadedBundle, LoadedBundle]:
        with self.lock:
            new = bundles.load(path, self.trust_pickle, self.trust_plugins)  # verified and loaded before the swap
            warm_up(new)
            old, self.current = self.current, new
        return new, old


def warm_up(bundle: LoadedBundle) -> None:
    """Score the bundle's own example once, so the feature kernels are compiled (or loaded from
    numba's disk cache) and the model touched before the server listens and /ready can answer.
    The example is the verified one `load` read (and already scored, serve/bundle.py): never read
    again from the bundle's path, which may be a .tar.gz or have changed since."""
    if bundle.example is not None:
        bundle.score_bars(bundle.example[0])


def create_app(
    bundle: LoadedBundle,
    token: str | None = None,
    limits: Limits | None = None,
    trust_pickle: bool = False,
    trust_plugins: bool = False,
) -> Any:
    """The ASGI app: FastAPI routes inside the guard (token, size limit, metrics); warmed up first."""
    warm_up(bundle)
    limits = limits or Limits()
    holder = Holder(bundle, trust_pickle, trust_plugins)
    app = FastAPI(title="qfactory", version=__version__, description="Scores from a verified qfactory bundle.")
    app.router.route_class = _Route
    metrics = Metrics()
    _routes(app, holder, limits, metrics)
    _handlers(app)
    app.state.holder = holder
    endpoints = {route.path for route in app.routes}
    return Guard(app, metrics, endpoints, token, limits.max_body_bytes)


def _routes(app: FastAPI, holder: Holder, limits: Limits, metrics: Metrics) -> None:
    # Scoring endpoints are async and queue their work: one thread scores every request waiting,
    # in one feature-engine call (serve/batching.py); each request keeps its own validation and errors.
    batcher = Batcher(limits.max_rows)

    @app.get("/health", response_model=Health)
    def health() -> dict[str, str]:
        """Liveness: the process answers (no token needed)."""
        return {"status": "ok"}

    @app.get("/ready", response_model=Ready)
    def ready() -> dict[str, Any]:
        """Readiness: a verified bundle is loaded."""
        return {"ready": True, "bundle_id": holder.current.bundle_id}

    @app.get("/metadata")
    def metadata() -> dict[str, Any]:
        """Bundle manifest, features, lookback (bars per symbol), model, required symbols and columns."""
        return holder.current.metadata()

    @app.post("/predict", response_model=PredictResponse, responses=_ERRORS)
    async def predict(request: PredictRequest) -> Response:
        """Raw bars (long format, one or more symbols) → a score per symbol for its latest bar."""
        current = holder.current
        _check_rows(len(request.bars), limits)
        scores = await batcher.submit(
            (id(current), "bars"), functools.partial(_score_bar_requests, current), request, len(request.bars)
        )
        return _response(current, _guarded(lambda: _raised(scores)))

    @app.post("/predict/features", response_model=PredictResponse, responses=_ERRORS)
    async def predict_features(request: PredictFeaturesRequest) -> Response:
        """Precomputed feature rows (raw, as the run's feature table holds them) → a score per row."""
        current = holder.current
        _check_rows(len(request.rows), limits)
        _check_feature_names(request, current)
        scores = await batcher.submit(
            (id(current), "features"),
            functools.partial(_score_feature_requests, current),
            request,
            len(request.rows),
            cheap=not current.model.uses_panel(),
        )
        return _response(current, _guarded(lambda: _raised(scores)))

    @app.post("/reload", response_model=ReloadResponse, responses=_ERRORS)
    def reload(request: ReloadRequest) -> dict[str, str]:
        """Hot swap to another verified bundle; on failure (a 422 with the reason) the old one keeps serving."""
        try:
            new, old = holder.reload(request.bundle)
        except Exception as exc:  # noqa: BLE001 - a refused bundle is the caller's input: never a 5xx
            reason = str(exc) if isinstance(exc, QFactoryError) else f"{type(exc).__name__}: {_first_line(exc)}"
            kind = type(exc).__name__ if isinstance(exc, QFactoryError) else "BundleError"
            raise InputError(422, f"reload failed, still serving {holder.current.bundle_id}: {reason}", kind) from None
        return {"bundle_id": new.bundle_id, "previous": old.bundle_id}

    @app.get("/metrics", response_class=Response)
    def prometheus() -> Response:
        """Prometheus text: requests, latency histogram, errors by kind."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


class _JSONRequest(Request):
    """A request whose JSON body is parsed by pydantic-core (Rust): ~3x faster than json.loads on a
    158-feature row, the same values (NaN and Infinity literals read as the stdlib reads them, the
    last of duplicate keys wins); invalid JSON stays FastAPI's 422 "JSON decode error"."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = pydantic_core.from_json(body)
            except ValueError as exc:
                raise json.JSONDecodeError(str(exc), body.decode("utf-8", "replace"), 0) from None
        return self._json


class _Route(APIRoute):
    """FastAPI's documented hook for a custom request class (its "custom request and APIRoute class" recipe)."""

    def get_route_handler(self) -> Any:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(_JSONRequest(request.scope, request.receive))

        return route


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = clip_huge_values(f"{where}: {first.get('msg', 'invalid')}")
        if first.get("type") == "json_invalid":  # the parser's own words say where
            message = clip_huge_values(
                f"body: invalid JSON ({first.get('ctx', {}).get('error', 'unreadable')}); send one JSON object"
            )
        return JSONResponse(
            {"error": message, "kind": "ValidationError", "detail": jsonable_encoder(errors, exclude={"ctx", "input"})},
            422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # a body that is not JSON at all: malformed, like any other bad payload
            return JSONResponse({"error": f"body: not valid JSON ({exc.detail})", "kind": "ValidationError"}, 422)
        return JSONResponse(
            {"error": str(exc.detail), "kind": "HTTPError"}, exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(InputError)
    async def refused(request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse({"error": clip_huge_values(str(exc)), "kind": exc.kind}, exc.status)


def _check_rows(n: int, limits: Limits) -> None:
    if n > limits.max_rows:
        raise InputError(
            413, f"{n:,} rows is more than this server takes per request ({limits.max_rows:,}); send fewer", "TooLarge"
        )


def _guarded(work: Any) -> pl.DataFrame:
    """Input problems (ours, or polars/numpy refusing values) are 422 with one line."""
    try:
        return work()
    except QFactoryError as exc:
        raise InputError(422, str(exc), type(exc).__name__) from None
    except (pl.exceptions.PolarsError, ValueError, TypeError, OverflowError) as exc:
        raise InputError(
            422,
            f"the request could not be scored: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            "InvalidInput",
        ) from None


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else "no message"


def _raised(result: pl.DataFrame | Exception) -> pl.DataFrame:
    if isinstance(result, Exception):
        raise result
    return result


def _timestamps(values: list[dt.datetime]) -> pl.Series:
    """Datetime("us", "UTC") of request timestamps (naive ones are UTC), via integer microseconds:
    polars converts a list of aware datetime objects several times slower."""
    return pl.Series("ts", [(_utc(ts) - _EPOCH) // _MICROSECOND for ts in values], pl.Int64).cast(
        pl.Datetime("us", "UTC")
    )


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MICROSECOND = dt.timedelta(microseconds=1)


def _utc(ts: dt.datetime) -> dt.datetime:
    return ts.replace(tzinfo=dt.timezone.utc) if ts.tzinfo is None else ts.astimezone(dt.timezone.utc)


def _bars(request: PredictRequest) -> pl.DataFrame:
    """Long-format bars as canonical columns, through the ingest validation (errors name the row)."""
    return validated(_raw_bars(request.bars, [b.symbol for b in request.bars]), "request bars")


def _raw_bars(rows: list[Any], symbols: list[str]) -> pl.DataFrame:
    data: dict[str, Any] = {"symbol": symbols, "ts": _timestamps([b.ts for b in rows])}
    for column in _BAR_COLUMNS:
        values = [getattr(b, column) for b in rows]
        if any(v is not None for v in values):
            data[column] = values
    return pl.DataFrame(data, strict=False)


def _score_bar_requests(current: LoadedBundle, requests: list[PredictRequest]) -> list[pl.DataFrame | Exception]:
    """The batch's work (in the scoring thread). Every request's bars go into ONE frame, symbols
    renamed apart, through one validation and one engine call (LoadedBundle.score_keyed): building,
    validating and checking 16 small frames one by one cost more than their features. If any
    request breaks a rule, each is validated alone for its own error and the valid ones are scored
    together (score_bars_many)."""
    if len(requests) > 1 and current.batchable:
        try:
            return current.score_keyed(validated(_keyed_bars(requests), "request bars"), len(requests))
        except Exception:
            pass  # some request is refused: find which, below
    frames = [attempt(_bars, request) for request in requests]
    valid = [i for i, frame in enumerate(frames) if not isinstance(frame, Exception)]
    for i, scores in zip(valid, current.score_bars_many([frames[i] for i in valid])):
        frames[i] = scores
    return frames


def _keyed_bars(requests: list[PredictRequest]) -> pl.DataFrame:
    """All requests' bars in one frame, each request's symbols renamed apart ("<request>\x1f<symbol>"),
    so the same symbol and bar in two requests is no duplicate; pydantic already refuses empty symbols.
    Raises when the requests carry different columns: a column one request lacks would be null in
    its rows, not absent (vwap absent is derived from high, low, close; null is missing)."""
    layouts = {
        frozenset(c for c in _BAR_COLUMNS if any(getattr(bar, c) is not None for bar in request.bars))
        for request in requests
    }
    if len(layouts) > 1:
        raise ValueError("the requests carry different columns; score each alone")
    rows = [bar for request in requests for bar in request.bars]
    return _raw_bars(
        rows, [f"{i}{REQUEST_SEP}{bar.symbol}" for i, request in enumerate(requests) for bar in request.bars]
    )


def _score_feature_requests(
    current: LoadedBundle, requests: list[PredictFeaturesRequest]
) -> list[pl.DataFrame | Exception]:
    """The batch's work: every request's rows as one matrix, scored in one call."""
    try:
        rows = _feature_rows([row for request in requests for row in request.rows], current.pipeline.features)
    except Exception as exc:
        return (
            [exc]
            if len(requests) == 1
            else [r for request in requests for r in _score_feature_requests(current, [request])]
        )
    return current.score_features_many(rows, [len(request.rows) for request in requests])


def _check_feature_names(request: PredictFeaturesRequest, current: LoadedBundle) -> None:
    names = current.pipeline.features
    known = set(names)
    for i, row in enumerate(request.rows):
        if len(row.features) == len(names) and all(k in known for k in row.features):
            continue  # the common case: exactly the bundle's features
        extra = next((k for k in row.features if k not in known), None)
        missing = next((k for k in names if k not in row.features), None)
        what = f"unknown feature {extra!r}" if extra is not None else f"feature {missing!r} is missing"
        raise InputError(
            422,
            clip_huge_values(f"rows.{i}.features: {what}; send exactly the features GET /metadata lists"),
            "ValidationError",
        )


def _feature_rows(rows: list[Any], names: list[str]) -> FeatureRows:
    """The keys and raw feature matrix of checked rows (None → NaN), built with numpy in one call."""
    values = np.array([[row.features[n] for n in names] for row in rows], dtype=np.float64).astype(np.float32)
    return FeatureRows(
        pl.Series("symbol", [r.symbol for r in rows], pl.String), _timestamps([r.ts for r in rows]), values
    )


def _response(current: LoadedBundle, scores: pl.DataFrame) -> Response:
    """The PredictResponse, validated and written to JSON by pydantic-core in one step (what FastAPI
    does for a returned dict, less its Python json.dumps pass)."""
    probs = [c for c in scores.columns if c.startswith("p_")]
    out = []
    for row in scores.iter_rows(named=True):
        item = {"symbol": row["symbol"], "ts": row["ts"], "score": row["score"]}
        if probs:
            item["probabilities"] = {p: row[p] for p in probs}
        out.append(item)
    body = PredictResponse.model_validate({"bundle_id": current.bundle_id, "predictions": out}).model_dump_json()
    return Response(body, media_type="application/json")
