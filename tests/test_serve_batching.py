"""Concurrent requests scored together (serve/batching.py): every request gets exactly the scores
it would get alone, and its own error — batching is a cost saving, never a different answer."""

from __future__ import annotations

import asyncio
import threading

import httpx
import polars as pl
import pytest
from serving import LiveServer, train

from quant_cli import stages
from quant_cli.io import read_json
from quant_cli.serve.app import create_app
from quant_cli.serve.batching import Batcher
from quant_cli.serve.bundle import load
from quant_cli.serve.loaded import FeatureRows, bars_from_records


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    trained = train(tmp_path_factory.mktemp("batching"))
    return stages.bundle_existing(trained.run, trained.data_dir).bundle


def _requests(bundle):
    """Three requests: two symbols, the same symbol again with older bars, one too short."""
    bars = bars_from_records(read_json(bundle / "example" / "input.json")["bars"], "example")
    first = bars["symbol"].unique().sort()[0]
    one = bars.filter(pl.col("symbol") == first)
    trend = 1 + 0.002 * pl.int_range(
        pl.len()
    )  # the same symbol with other prices (every OHLC scaled alike: still valid bars)
    other = one.with_columns(pl.col([c for c in ("open", "high", "low", "close") if c in one.columns]) * trend)
    return [bars, other, one.tail(3)]


def test_a_batch_scores_each_request_exactly_as_alone(bundle):
    loaded = load(bundle)
    assert loaded.batchable
    requests = _requests(bundle)
    together = loaded.score_bars_many(requests)
    for alone, batched in zip(requests[:2], together[:2]):
        assert batched.equals(loaded.score_bars(alone))  # exact: the same engine call, symbols renamed apart
    assert together[1]["score"][0] != together[0]["score"][0]  # the same symbol in two requests stays two answers
    assert isinstance(together[2], Exception) and "has 3 bar(s); this bundle needs at least" in str(together[2])


def test_a_batch_of_feature_rows_splits_back_per_request(bundle):
    loaded = load(bundle)
    table = loaded.pipeline.compute(_requests(bundle)[0])
    rows = table.tail(5)
    parts = loaded.score_features_many(FeatureRows.of(rows, loaded.pipeline.features), [2, 1, 2])
    assert pl.concat(parts).equals(loaded.score_features(rows))
    assert [p.height for p in parts] == [2, 1, 2]


def test_concurrent_http_requests_each_get_their_own_answer(bundle):
    loaded = load(bundle)
    requests = _requests(bundle)
    bodies = [{"bars": [{**r, "ts": r["ts"].isoformat()} for r in frame.to_dicts()]} for frame in requests]
    broken = {"bars": [dict(bar) for bar in bodies[0]["bars"]]}
    broken["bars"][4]["close"] = -1.0  # a bad bar: validated with the batch, refused on its own
    bodies.append(broken)
    expected = [loaded.score_bars(frame)["score"].to_list() for frame in requests[:2]]
    got: dict[int, list] = {}

    with LiveServer(create_app(loaded)) as live:

        def client(i: int) -> None:
            with httpx.Client(base_url=live.url, timeout=60) as own:
                got[i] = [own.post("/predict", json=bodies[i % 4]) for _ in range(4)]

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for i, responses in got.items():
        for response in responses:
            if i % 4 == 2:
                assert response.status_code == 422 and "has 3 bar(s)" in response.json()["error"]
            elif i % 4 == 3:
                assert response.status_code == 422 and response.json()["error"] == (
                    "request bars row 5, column 'close': price -1.0 is not positive; "
                    "prices must be > 0; fix the value or delete the row"
                )
            else:
                assert response.status_code == 200
                assert [p["score"] for p in response.json()["predictions"]] == expected[i % 4]


def test_batcher_groups_only_alike_work_and_bounds_rows():
    seen: list[list[str]] = []

    def run(items: list[str]) -> list:
        seen.append(items)
        return [ValueError(item) if item == "bad" else item.upper() for item in items]

    async def main() -> list:
        batcher = Batcher(max_rows=3)
        jobs = [("a", "x", 1), ("a", "y", 2), ("b", "z", 1), ("a", "bad", 1), ("a", "w", 1)]
        return await asyncio.gather(*(batcher.submit(group, run, item, rows) for group, item, rows in jobs))

    results = asyncio.run(main())
    assert results[:3] == ["X", "Y", "Z"] and isinstance(results[3], ValueError) and results[4] == "W"
    assert len(seen) < len(set(i for batch in seen for i in batch))  # requests waiting together shared a call
    assert all(sum({"x": 1, "y": 2, "z": 1, "bad": 1, "w": 1}[i] for i in batch) <= 3 for batch in seen)
    assert not any({"z"} < set(batch) for batch in seen)  # group b never shares a call with group a


def test_one_frame_for_a_batch_scores_each_request_exactly_as_alone(bundle):
    """The server's batch path (every request's bars in one validated frame, symbols renamed apart)
    gives each request exactly its own scores; one bad request gets its own error, the rest still score."""
    from quant_cli.serve.app import _score_bar_requests
    from quant_cli.serve.schemas import PredictRequest

    loaded = load(bundle)
    frames = _requests(bundle)[:2]
    requests = [PredictRequest(bars=frame.to_dicts()) for frame in frames]
    alone = [loaded.score_bars(frame) for frame in frames]
    for got, expected in zip(_score_bar_requests(loaded, [*requests, requests[0]]), [*alone, alone[0]]):
        assert got.equals(expected)
    broken = PredictRequest(
        bars=[{**bar, "close": -1.0} if i == 4 else bar for i, bar in enumerate(frames[0].to_dicts())]
    )
    got = _score_bar_requests(loaded, [requests[0], broken, requests[1]])
    assert got[0].equals(alone[0]) and got[2].equals(alone[1])
    assert str(got[1]) == (
        "request bars row 5, column 'close': price -1.0 is not positive; "
        "prices must be > 0; fix the value or delete the row"
    )


def test_requests_with_different_columns_are_not_scored_as_one_frame(tmp_path):
    """A request without vwap has its VWAP features from the typical price; in one frame with a
    request that sends vwap, its rows would hold null vwap instead. Each gets its answer alone."""
    from quant_cli.serve.app import _score_bar_requests
    from quant_cli.serve.schemas import PredictRequest

    trained = train(tmp_path, extra=("features.sets=[]", 'features.include=["VWAP0", "ret_5"]'))
    loaded = load(stages.bundle_existing(trained.run, trained.data_dir).bundle)
    bars = bars_from_records(read_json(loaded.path / "example" / "input.json")["bars"], "example")
    plain = bars.filter(pl.col("symbol") == bars["symbol"].min())
    with_vwap = plain.with_columns(((pl.col("high") + pl.col("low")) / 2).alias("vwap"))
    frames = [plain, with_vwap, plain]
    alone = [loaded.score_bars(frame) for frame in frames]
    assert alone[0]["score"][0] != alone[1]["score"][0]  # vwap matters to this bundle
    got = _score_bar_requests(loaded, [PredictRequest(bars=frame.to_dicts()) for frame in frames])
    for batched, expected in zip(got, alone):
        assert batched.equals(expected)


def test_only_small_batches_of_cheap_work_run_on_the_event_loop():
    """Cheap work (precomputed feature rows) up to INLINE_ROWS runs on the loop; more rows, or
    anything else (the feature engine), runs in the scoring thread so the loop keeps answering."""
    from quant_cli.serve.batching import INLINE_ROWS

    def run(items: list[str]) -> list:
        return [threading.get_ident()] * len(items)

    async def main() -> list:
        batcher = Batcher(max_rows=10 * INLINE_ROWS)
        return [
            await batcher.submit("g", run, "x", rows, cheap=cheap)
            for rows, cheap in ((1, True), (INLINE_ROWS + 1, True), (1, False))
        ]

    loop_thread = threading.get_ident()
    small_cheap, big_cheap, engine = asyncio.run(main())
    assert small_cheap == loop_thread and big_cheap != loop_thread and engine != loop_thread


def _hostile(bars: list[dict]) -> list[list[dict]]:
    """Requests a batch may hold together: valid ones beside each kind of broken or odd one."""
    changed = lambda i, **kv: [{**b, **kv} if j == i else b for j, b in enumerate(bars)]  # noqa: E731
    return [
        bars,
        changed(4, close=-1.0),
        changed(4, close=None),
        changed(5, ts=bars[4]["ts"]),
        bars[:5],
        bars[::-1],
        [{**b, "symbol": "X\x1fY"} for b in bars],
        [{k: v for k, v in b.items() if k != "volume"} for b in bars],
        [{**b, "vwap": b["close"]} for b in bars],
        changed(3, high=bars[3]["low"] / 2),
        changed(2, volume=1e30),
        bars + [{**b, "symbol": "ZZ"} for b in bars],
        [{**b, "symbol": "ü" * 64} for b in bars],
        bars,
    ]


def test_a_hostile_batch_gives_every_request_the_answer_it_gets_alone(bundle):
    """Fourteen requests sent at once (so they are batched): each status and body equals what the
    same request gets alone, and none is a 5xx."""
    example = read_json(bundle / "example" / "input.json")["bars"]
    bodies = [{"bars": bars} for bars in _hostile([b for b in example if b["symbol"] == example[0]["symbol"]])]

    async def main(url: str) -> tuple[list, list]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            together = await asyncio.gather(*(client.post("/predict", json=body) for body in bodies))
            alone = [await client.post("/predict", json=body) for body in bodies]
        return together, alone

    with LiveServer(create_app(load(bundle))) as live:
        together, alone = asyncio.run(main(live.url))
    assert all(r.status_code < 500 for r in together)
    assert [r.status_code for r in together] == [r.status_code for r in alone]
    assert [r.json() for r in together] == [r.json() for r in alone]
    assert {r.status_code for r in together} == {200, 422}
