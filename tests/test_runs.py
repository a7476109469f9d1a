import pytest

from quant_cli.errors import RunError
from quant_cli.io import read_json
from quant_cli.recipe import load_recipe
from quant_cli.runs.directory import create_run, resolve_home, resolve_run


def test_run_dir_name_manifest_and_recipe(tmp_path):
    recipe = load_recipe(None, ["run.name=exp"])
    with create_run(tmp_path, recipe) as run:
        assert run.path.name.startswith(".staging-")
    assert run.path.parent == tmp_path
    name, stamp, suffix = run.id.rsplit("-", 2)
    assert name == "exp" and len(stamp) == 15 and stamp[8] == "T" and len(suffix) == 4
    manifest = read_json(run.path / "manifest.json")
    assert manifest["run_id"] == run.id and manifest["seed"] == 42
    assert {"python", "platform", "libraries", "qfactory_version", "fingerprints", "stages"} <= set(manifest)
    assert load_recipe(run.path / "recipe.toml") == recipe


def test_failed_block_leaves_no_run_dir(tmp_path):
    with pytest.raises(ValueError):
        with create_run(tmp_path, load_recipe(None)):
            raise ValueError("boom")
    assert list(tmp_path.iterdir()) == []


def test_resolve_by_path_id_and_latest(tmp_path):
    recipe = load_recipe(None)
    with create_run(tmp_path, recipe) as first:
        pass
    with create_run(tmp_path, recipe) as second:
        pass
    assert resolve_run(str(first.path), tmp_path).path == first.path
    assert resolve_run(first.id, tmp_path).path == first.path
    assert resolve_run("latest", tmp_path).path == second.path


def test_resolve_unknown_run(tmp_path):
    with pytest.raises(RunError, match="--run 'nope': no run directory"):
        resolve_run("nope", tmp_path)
    with pytest.raises(RunError, match="--run latest: no runs under"):
        resolve_run("latest", tmp_path / "empty")


def test_home_precedence(monkeypatch):
    monkeypatch.setenv("QFACTORY_X", "from-env")
    assert str(resolve_home("opt", "QFACTORY_X", "rec", "default")) == "opt"
    assert str(resolve_home(None, "QFACTORY_X", "rec", "default")) == "from-env"
    monkeypatch.delenv("QFACTORY_X")
    assert str(resolve_home(None, "QFACTORY_X", "rec", "default")) == "rec"
    assert str(resolve_home(None, "QFACTORY_X", None, "default")) == "default"
