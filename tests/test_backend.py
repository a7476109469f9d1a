"""The local|ray backend: a feature build and a tuning study through a real Ray instance on
loopback give the same results as local, bit for bit; homes workers cannot see are refused."""

from __future__ import annotations

import posixpath
import sys
from pathlib import Path

import polars as pl
import pytest

from quant_cli.backend import _read_probes, map_tasks, open_backend
from quant_cli.cli import app
from quant_cli.data.store import write_store
from quant_cli.data.synthetic import generate
from quant_cli.features.store import feature_table
from quant_cli.recipe import load_recipe


@pytest.fixture(scope="module")
def ray_instance():
    """ONE local Ray instance for the module (starting Ray takes seconds); the backend reuses it."""
    ray = pytest.importorskip("ray")
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        object_store_memory=256 * 1024**2,
        _node_ip_address="127.0.0.1",
    )
    yield ray
    ray.shutdown()


def _parts(folder: Path) -> dict[str, tuple]:
    """Each part's values, bit for bit (row hashes of the raw bits, and the values themselves);
    not the parquet bytes, which polars lays out differently between two writes of a large part."""
    frames = {p.name: pl.read_parquet(p) for p in sorted((folder / "table").glob("part-*.parquet"))}
    return {name: (f.hash_rows(seed=0).to_list(), f.rows()) for name, f in frames.items()}


def test_a_feature_build_through_ray_equals_local_bit_for_bit(ray_instance, runner, tmp_path):
    bars = generate(symbols=6, bars=200, seed=4)
    for home in ("local", "ray"):
        write_store(tmp_path / home, "p", bars, "test")
    # alpha158 (per symbol) plus a cross-sectional rank (pass 2, after the groups), in 3 groups
    sets = ['data.dataset="p"', 'features.sets=["core", "alpha158"]', 'features.cross_sectional=["ret_5"]']
    local = feature_table(load_recipe(None, sets), tmp_path / "local", chunk_rows=400)
    (tmp_path / "r.toml").write_text(
        '[data]\ndataset = "p"\n[features]\nsets = ["core", "alpha158"]\ncross_sectional = ["ret_5"]\n'
    )
    from quant_cli.features import build

    build.DEFAULT_CHUNK_ROWS, default = 400, build.DEFAULT_CHUNK_ROWS
    try:
        result = runner.invoke(
            app, ["features", "--recipe", "r.toml", "--data-dir", str(tmp_path / "ray"), "--backend", "ray", "--json"]
        )
    finally:
        build.DEFAULT_CHUNK_ROWS = default
    assert result.exit_code == 0, result.output
    remote = Path(pl.from_dicts([__import__("json").loads(result.stdout)])["path"][0])
    assert remote.name == local.path.name and len(_parts(remote)) == 3
    assert _parts(remote) == _parts(local.path)


def test_a_tuning_study_through_ray_equals_local(ray_instance, tmp_path):
    from quant_cli.tune.study import tune_new

    write_store(tmp_path / "data", "p", generate(symbols=5, bars=250, seed=2), "test")
    recipe = load_recipe(
        None,
        [
            'data.dataset="p"',
            "label.horizon=2",
            "model.params={n_estimators=30, min_data_in_leaf=20}",
            "train.early_stopping=0",
            "train.threads=1",
            "tune.refit=false",
            "tune.startup_trials=2",
            "tune.report_every=10",
            'tune.space={"model.params.num_leaves"={int=[4, 32]}, '
            '"model.params.learning_rate"={float=[0.02, 0.2], log=true}}',
        ],
    )
    # One job each: the same batches of one trial (in this process locally; a Ray worker loads
    # the tune run's stored split). Batches of N trials are the same on both backends likewise.
    studies = [
        tune_new(recipe, tmp_path / "data", tmp_path / "runs", trials=4, backend=b).trials.drop("seconds")
        for b in ("ray", "local")
    ]
    assert studies[0].height == 4 and studies[0].equals(studies[1])


def test_map_keeps_task_order_and_the_probe_sees_shared_homes(ray_instance, tmp_path):
    with open_backend("ray") as backend:
        assert backend.map(posixpath.basename, ["a/x", "b/y", "z"]) == ["x", "y", "z"]
        backend.check_shared({"data home": tmp_path / "data", "runs home": tmp_path / "runs"})
    assert ray_instance.is_initialized()  # a Ray it did not start is left running
    assert not list((tmp_path / "data").iterdir())  # the probe files are removed
    assert map_tasks(posixpath.basename, ["a/x", "y"]) == ["x", "y"]


def test_a_home_a_worker_cannot_read_is_named(tmp_path):
    probe = tmp_path / ".qfactory-probe-x"
    probe.write_text(probe.name)
    host, unseen = _read_probes({"data home": str(probe), "runs home": str(tmp_path / "elsewhere" / probe.name)})
    assert unseen == ["runs home"]


def test_ray_missing_is_one_line(runner, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    (tmp_path / "r.toml").write_text('[data]\ndataset = "p"\n')
    result = runner.invoke(app, ["features", "--recipe", "r.toml", "--backend", "ray"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --backend ray needs Ray: install it with `pip install 'qfactory[ray]'`"


def test_an_unreachable_ray_head_and_an_unknown_backend_are_one_line(runner, tmp_path):
    from quant_cli.backend import _check_reachable
    from quant_cli.errors import QFactoryError

    with pytest.raises(QFactoryError) as error:  # checked before ray.init, which retries for minutes
        _check_reachable("127.0.0.1:1")
    assert str(error.value) == (
        "--backend ray: cannot reach the Ray head at RAY_ADDRESS=127.0.0.1:1 (Connection refused); "
        "start it with `ray start --head` and check the address, or unset RAY_ADDRESS to run locally"
    )
    (tmp_path / "r.toml").write_text('[data]\ndataset = "p"\n')
    result = runner.invoke(app, ["tune", "--recipe", "r.toml", "--backend", "foo"])
    assert (
        result.exit_code == 2
        and result.stderr.strip() == "error: --backend 'foo' is not a backend; allowed: local, ray"
    )


def test_walkforward_folds_through_ray_equal_local(ray_instance, runner, tmp_path):
    """`walkforward --backend ray` fits every fold as a Ray task: same predictions and folds as local."""
    import json

    from test_walkforward import _ingest, _walkforward

    _ingest(runner)
    runs = []
    for backend in ("local", "ray"):
        result = _walkforward(runner, tmp_path, "--backend", backend, "--jobs", "1", "--json", "-q")
        assert result.exit_code == 0, result.output
        runs.append(Path(json.loads(result.stdout)["path"]) / "walkforward")
    local, remote = (pl.read_parquet(r / "predictions.parquet") for r in runs)
    assert local.height > 0 and local.equals(remote)
    assert json.loads((runs[0] / "folds.json").read_text()) == json.loads((runs[1] / "folds.json").read_text())
