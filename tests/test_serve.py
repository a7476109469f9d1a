"""`qfactory serve` (issue 12 §7-8): a real uvicorn server on loopback — endpoints, token, limits,
422s naming the field, metrics, hot reload, and a bounded schemathesis run against its OpenAPI."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from serving import LiveServer, free_port, train

from quant_cli import stages
from quant_cli.cli import app
from quant_cli.io import read_json
from quant_cli.serve.app import Limits, create_app
from quant_cli.serve.bundle import load

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    first = train(root)
    second = train(root, extra=("model.params.n_estimators=10",), data_dir=first.data_dir)
    return stages.bundle_existing(first.run, first.data_dir).bundle, stages.bundle_existing(
        second.run, second.data_dir
    ).bundle


@pytest.fixture(scope="module")
def server(bundles):
    app = create_app(load(bundles[0]), token=TOKEN, limits=Limits(max_rows=5_000, max_body_bytes=2_000_000))
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=30) as client:
        yield live, client


def _example(bundle):
    return read_json(bundle / "example" / "input.json"), read_json(bundle / "example" / "expected.json")["predictions"]


def test_health_is_open_everything_else_needs_the_token(server):
    _, client = server
    assert client.get("/health").json() == {"status": "ok"}
    for path in ("/ready", "/metadata", "/metrics", "/docs", "/openapi.json"):
        refused = client.get(path)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer", path
        assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get(path, headers=AUTH).status_code == 200, path
    assert client.post("/predict", json={}).status_code == 401


def test_metadata_and_the_example_round_trip(server, bundles):
    _, client = server
    meta = client.get("/metadata", headers=AUTH).json()
    spec = read_json(bundles[0] / "input_schema.json")["x-qfactory"]
    assert meta["lookback"]["required_bars"] == spec["required_bars"] and meta["input"]["required_symbols"] == []
    assert (
        meta["model"]["name"] == "lightgbm" and meta["features"] == read_json(bundles[0] / "pipeline.json")["features"]
    )
    body, expected = _example(bundles[0])
    got = client.post("/predict", json=body, headers=AUTH).json()
    assert got["bundle_id"] == meta["bundle_id"]
    assert [p["symbol"] for p in got["predictions"]] == [p["symbol"] for p in expected]
    assert [p["score"] for p in got["predictions"]] == pytest.approx([p["score"] for p in expected], rel=1e-9)


def _bars(bundle, **change):
    body, _ = _example(bundle)
    bars = body["bars"]
    for index, values in change.items():
        bars[int(index.strip("_"))] = {**bars[int(index.strip("_"))], **values}
    return {"bars": bars}


@pytest.mark.parametrize(
    "case,status,error",
    [
        ("field", 422, "body.bars.0.close: Input should be a valid number, unable to parse string as a number"),
        ("extra", 422, "body.bars.0.colour: Extra inputs are not permitted"),
        ("bar", 422, "request bars row 4, column 'high': high 1.0 is below low"),
        ("short", 422, "symbol 'S000' has 10 bar(s); this bundle needs at least"),
        ("column", 422, "the bars lack column 'volume'"),
        ("empty", 422, "body.bars: List should have at least 1 item after validation, not 0"),
        ("rows", 413, "5,001 rows is more than this server takes per request (5,000); send fewer"),
    ],
)
def test_bad_payloads_are_4xx_naming_what_is_wrong(server, bundles, case, status, error):
    _, client = server
    body, _ = _example(bundles[0])
    bars = body["bars"]
    payload = {
        "field": lambda: {"bars": [{**bars[0], "close": "abc"}, *bars[1:]]},
        "extra": lambda: {"bars": [{**bars[0], "colour": 1}, *bars[1:]]},
        "bar": lambda: {"bars": [*bars[:3], {**bars[3], "high": 1.0}, *bars[4:]]},
        "short": lambda: {"bars": [b for b in bars if b["symbol"] == "S000"][:10]},
        "column": lambda: {"bars": [{k: v for k, v in b.items() if k != "volume"} for b in bars]},
        "empty": lambda: {"bars": []},
        "rows": lambda: {"bars": [bars[0]] * 5_001},
    }[case]()
    response = client.post("/predict", json=payload, headers=AUTH)
    assert response.status_code == status, response.text
    assert response.json()["error"].startswith(error)


def test_body_size_limit_with_and_without_content_length(server):
    _, client = server
    big = b"{" + b" " * 2_000_001 + b"}"
    declared = client.post("/predict", content=big, headers={**AUTH, "content-type": "application/json"})
    assert declared.status_code == 413 and "over 2,000,000 bytes" in declared.json()["error"]
    chunked = client.post(
        "/predict",
        content=iter([big[:1_000_000], big[1_000_000:]]),
        headers={**AUTH, "content-type": "application/json"},
    )
    assert chunked.status_code == 413
    broken = client.post("/predict", content=b'{"bars": [', headers={**AUTH, "content-type": "application/json"})
    assert broken.status_code == 422
    assert (
        broken.json()["error"]
        == "body: invalid JSON (EOF while parsing a list at line 1 column 10); send one JSON object"
    )


def test_feature_rows_score_like_raw_bars(server, bundles):
    _, client = server
    loaded = load(bundles[0])
    body, expected = _example(bundles[0])
    from quant_cli.serve.loaded import bars_from_records

    table = loaded.pipeline.compute(bars_from_records(body["bars"])).group_by("symbol", maintain_order=True).last()
    rows = [
        {"symbol": r["symbol"], "ts": r["ts"].isoformat(), "features": {f: r[f] for f in loaded.pipeline.features}}
        for r in table.iter_rows(named=True)
    ]
    got = client.post("/predict/features", json={"rows": rows}, headers=AUTH).json()
    assert [p["score"] for p in got["predictions"]] == pytest.approx([p["score"] for p in expected], rel=1e-6)
    first = loaded.pipeline.features[0]
    missing = client.post("/predict/features", json={"rows": [{**rows[0], "features": {}}]}, headers=AUTH)
    assert missing.status_code == 422 and missing.json()["error"].startswith(
        f"rows.0.features: feature {first!r} is missing"
    )
    unknown = client.post(
        "/predict/features", json={"rows": [{**rows[0], "features": {**rows[0]["features"], "zzz": 1.0}}]}, headers=AUTH
    )
    assert unknown.status_code == 422 and "unknown feature 'zzz'" in unknown.json()["error"]


def test_reload_swaps_without_dropping_requests_and_a_failed_one_keeps_the_old(server, bundles):
    _, client = server
    ids = [read_json(b / "manifest.json")["bundle_id"] for b in bundles]
    body, _ = _example(bundles[0])
    results: list[int] = []

    def hammer() -> None:
        with httpx.Client(base_url=client.base_url, timeout=30) as own:
            for _ in range(15):
                response = own.post("/predict", json=body, headers=AUTH)
                results.append(response.status_code if response.json().get("bundle_id") in ids else -1)

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    for target in (bundles[1], bundles[0], bundles[1]):
        swapped = client.post("/reload", json={"bundle": str(target)}, headers=AUTH)
        assert (
            swapped.status_code == 200
            and swapped.json()["bundle_id"] == read_json(target / "manifest.json")["bundle_id"]
        )
    for t in threads:
        t.join()
    assert results == [200] * 45  # every request in flight during the swaps finished, on one bundle or the other
    failed = client.post("/reload", json={"bundle": "/nowhere"}, headers=AUTH)
    assert failed.status_code == 422
    assert failed.json()["error"] == (
        f"reload failed, still serving {ids[1]}: bundle /nowhere: not found; pass a bundle folder "
        "or its .tar.gz (made by `qfactory bundle --run RUN`)"
    )
    assert client.get("/ready", headers=AUTH).json() == {"ready": True, "bundle_id": ids[1]}
    client.post("/reload", json={"bundle": str(bundles[0])}, headers=AUTH)


def test_metrics_count_requests_latency_and_errors(server):
    _, client = server
    client.post("/predict", json={"bars": []}, headers=AUTH)
    text = client.get("/metrics", headers=AUTH).text
    assert 'qfactory_requests_total{endpoint="/predict",status="200"}' in text
    assert 'qfactory_request_seconds_bucket{endpoint="/predict",le="0.005"}' in text
    assert (
        'qfactory_errors_total{kind="invalid_input"}' in text and 'qfactory_errors_total{kind="unauthorized"}' in text
    )


def test_schemathesis_finds_no_server_error(server, tmp_path):
    """A bounded fuzz of every operation in the OpenAPI schema: no input gives a 5xx or stops the server."""
    live, client = server
    cmd = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{live.url}/openapi.json",
        "-H",
        f"Authorization: Bearer {TOKEN}",
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        "--max-examples",
        "5",
        "--max-time",
        "20",
        "--seed",
        "7",
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--no-color",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert client.get("/health").status_code == 200


def test_serve_command_binds_loopback_and_refuses_a_bad_bundle(runner, bundles, tmp_path):
    from quant_cli.cli import app

    bad = runner.invoke(app, ["serve", "--bundle", str(tmp_path / "none")])
    assert bad.exit_code == 2 and bad.stderr.strip().startswith(f"error: bundle {tmp_path / 'none'}: not found")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(__import__("pathlib").Path(__file__).resolve().parents[1]), env["PYTHONPATH"]]
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from quant_cli.cli import app; app()",
            "serve",
            "--bundle",
            str(bundles[0]),
            "--port",
            str(port),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5).status_code == 200  # no token set: open
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert f"serve: bundle {read_json(bundles[0] / 'manifest.json')['bundle_id']} on http://127.0.0.1:{port}" in err


@pytest.fixture(scope="module")
def bundle(home, tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    root, _ = home
    runs = tmp_path_factory.mktemp("audit-bundle")
    trained = CliRunner().invoke(
        app,
        [
            "train",
            "--recipe",
            str(root / "r.toml"),
            "--quiet",
            "--data-dir",
            str(root / "data"),
            "--runs-dir",
            str(runs),
        ],
    )
    assert trained.exit_code == 0, trained.output
    bundled = CliRunner().invoke(
        app, ["bundle", "--run", trained.stdout.strip(), "--quiet", "--data-dir", str(root / "data")]
    )
    assert bundled.exit_code == 0, bundled.output
    return Path(bundled.stdout.strip())


def test_serve_refuses_a_port_out_of_range(runner, tmp_path):
    """Was a server 'on http://127.0.0.1:99999' that never listened (and -1: uvicorn's exit 3)."""
    result = runner.invoke(app, ["serve", "--bundle", str(tmp_path / "none"), "--port", "99999"])
    assert result.exit_code == 2
    assert (
        result.output.strip() == "error: Invalid value for '--port': Input should be less than or equal "
        "to 65535 (see `qfactory serve --help`)"
    )


def test_serve_that_cannot_bind_is_one_line_exit_2(runner, bundle):
    """Was uvicorn's own 'ERROR: [Errno 98] ...' and exit 3 for a port in use or an unknown host."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["serve", "--bundle", str(bundle), "--port", str(port)])
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"error: serve: cannot listen on 127.0.0.1:{port} (") and line.endswith(
        "); free the port or pick another with --port, and bind a local address with --host"
    )


def test_serve_holds_its_port_from_the_check_until_uvicorn_serves_it():
    """Was a probe socket bound and closed before uvicorn bound again: another process could take
    the port in between. The checked socket itself is handed to uvicorn, listening."""
    from quant_cli.errors import RecipeError
    from quant_cli.serve.listen import bound_socket

    held = bound_socket("127.0.0.1", 0)
    try:
        port = held.getsockname()[1]
        with pytest.raises(RecipeError, match=f"cannot listen on 127.0.0.1:{port}"):
            bound_socket("127.0.0.1", port).close()
    finally:
        held.close()
