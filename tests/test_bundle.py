"""`qfactory bundle` / `bundle verify` (issue 12 §4-5): contents, hashes, tampering, pickle, stage."""

from __future__ import annotations

import json
import shutil
import tarfile

import pytest
from serving import train

from quant_cli.cli import app
from quant_cli.io import read_json, write_json_atomic
from quant_cli.serve.manifest import sha256, write_manifest

PARTS = {
    "manifest.json",
    "pipeline.json",
    "input_schema.json",
    "output_schema.json",
    "example/input.json",
    "example/expected.json",
    "lookback.json",
    "versions.json",
    "source.json",
    "recipe.toml",
    "metrics.json",
    "model/model.json",
    "model/model.txt",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def built(trained):
    from typer.testing import CliRunner

    result = CliRunner().invoke(
        app, ["bundle", "--run", str(trained.run.path), "--archive", "--data-dir", str(trained.data_dir)]
    )
    assert result.exit_code == 0, result.output
    return trained.run.path / "bundle"


def _copy(built, tmp_path):
    return shutil.copytree(built, tmp_path / "b")


def test_bundle_holds_every_part_with_its_hash(trained, built):
    files = {p.relative_to(built).as_posix() for p in built.rglob("*") if p.is_file()}
    assert files == PARTS
    manifest = read_json(built / "manifest.json")
    assert manifest["schema_version"] == 1 and manifest["source_run"] == trained.run.id
    assert set(manifest["files"]) == PARTS - {"manifest.json"}
    assert all(sha256(built / name) == digest for name, digest in manifest["files"].items())
    assert manifest["bundle_id"].startswith(trained.run.id)
    pipeline = read_json(built / "pipeline.json")
    schema = read_json(built / "input_schema.json")["x-qfactory"]
    assert (
        schema["required_bars"] == max(pipeline["warmup"].values()) > 100
    )  # MACD / RSI need far more than their windows
    assert schema["columns"] == ["high", "low", "close", "volume"]
    assert read_json(built / "source.json")["source_run"] == trained.run.id
    assert set(read_json(built / "metrics.json")) >= {"val", "test", "train"}
    assert (trained.run.path / "bundle.tar.gz").is_file()
    assert trained.run.manifest()["stages"]["bundle"]["bundle_id"] == manifest["bundle_id"]


@pytest.mark.parametrize("which", ["folder", "archive"])
def test_verify_rechecks_hashes_and_the_example(runner, trained, built, which):
    path = built if which == "folder" else trained.run.path / "bundle.tar.gz"
    result = runner.invoke(app, ["bundle", "verify", str(path), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["example_rows"] == 2 and out["max_relative_difference"] <= 1e-12


def _change(b):
    (b / "pipeline.json").write_text((b / "pipeline.json").read_text() + " ")


def _remove(b):
    (b / "model" / "model.txt").unlink()


def _add(b):
    (b / "notes.txt").write_text("hello")


def _version(b):
    manifest = read_json(b / "manifest.json")
    write_json_atomic(b / "manifest.json", {**manifest, "schema_version": 99})


TAMPER = {
    "changed": (
        _change,
        "file pipeline.json was changed (SHA-256 differs from manifest.json); "
        "the bundle was modified after it was built; rebuild it with `qfactory "
        "bundle --run RUN`",
    ),
    "missing": (
        _remove,
        "file model/model.txt is missing; the bundle was modified after it was "
        "built; rebuild it with `qfactory bundle --run RUN`",
    ),
    "extra": (
        _add,
        "file notes.txt is not in manifest.json (extra file); the bundle was "
        "modified after it was built; rebuild it with `qfactory bundle --run RUN`",
    ),
    "version": (
        _version,
        "manifest.json has schema_version 99, this qfactory reads 1; rebuild the bundle with this qfactory version",
    ),
}


@pytest.mark.parametrize("case", TAMPER)
def test_a_tampered_bundle_is_refused_naming_the_file(runner, built, tmp_path, case):
    b = _copy(built, tmp_path)
    tamper, message = TAMPER[case]
    tamper(b)
    for args in (
        ["bundle", "verify", str(b)],
        ["predict", "--bundle", str(b), "--source", "p", "--out", str(tmp_path / "s.csv")],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert result.stderr.strip() == f"error: bundle {b}: {message}"


def test_verify_fails_when_the_example_no_longer_matches(runner, built, tmp_path):
    """Library drift: same files (re-hashed), different scores → exit 2."""
    b = _copy(built, tmp_path)
    expected = read_json(b / "example" / "expected.json")
    expected["predictions"][0]["score"] += 1.0
    write_json_atomic(b / "example" / "expected.json", expected)
    manifest = read_json(b / "manifest.json")
    (b / "manifest.json").unlink()
    write_manifest(b, {k: v for k, v in manifest.items() if k not in ("files", "bundle_id", "schema_version")})
    result = runner.invoke(app, ["bundle", "verify", str(b)])
    assert result.exit_code == 2
    assert "differ from example/expected.json" in result.stderr and result.stderr.count("\n") == 1


def test_a_damaged_archive_is_one_line(runner, trained, tmp_path):
    bad = tmp_path / "b.tar.gz"
    bad.write_bytes(b"not a tar")
    result = runner.invoke(app, ["bundle", "verify", str(bad)])
    assert result.exit_code == 2 and result.stderr.startswith(f"error: bundle {bad}: not a readable .tar.gz")
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 0
        tar.addfile(info)
    result = runner.invoke(app, ["bundle", "verify", str(evil)])
    assert result.exit_code == 2 and not (tmp_path.parent / "escape.txt").exists()


def test_runs_are_never_rebundled_and_a_killed_bundle_never_blocks(runner, tmp_path, trained, built):
    again = runner.invoke(app, ["bundle", "--run", str(trained.run.path), "--data-dir", str(trained.data_dir)])
    run_id = trained.run.path.name
    assert again.exit_code == 2 and again.stderr.splitlines() == [
        f"error: run {run_id} already has a bundle (runs are never overwritten); to build another, "
        f"pass --out DIR: `qfactory bundle --run {run_id} --out DIR`"
    ]
    out = tmp_path / "elsewhere"
    made = runner.invoke(
        app, ["bundle", "--run", str(trained.run.path), "--data-dir", str(trained.data_dir), "--out", str(out)]
    )
    assert made.exit_code == 0 and made.stdout.strip() == str(out)
    assert (
        read_json(out / "manifest.json")["files"]["model/model.txt"]
        == read_json(built / "manifest.json")["files"]["model/model.txt"]
    )
    exists = runner.invoke(
        app, ["bundle", "--run", str(trained.run.path), "--data-dir", str(trained.data_dir), "--out", str(out)]
    )
    assert (
        exists.exit_code == 2
        and exists.stderr.strip()
        == f"error: --out {out} already exists; bundles are never overwritten — pass a new folder"
    )


def test_killed_bundle_leftovers_are_redone(runner, tmp_path_factory):
    trained = train(tmp_path_factory.mktemp("killed"))
    (trained.run.path / "bundle").mkdir()
    (trained.run.path / "bundle" / "half.json").write_text("{")
    result = runner.invoke(app, ["bundle", "--run", str(trained.run.path), "--data-dir", str(trained.data_dir)])
    assert result.exit_code == 0, result.output
    assert "never committed" in result.stderr and not (trained.run.path / "bundle" / "half.json").exists()


def test_pickled_models_need_trust(runner, tmp_path_factory):
    trained = train(tmp_path_factory.mktemp("forest"), "random_forest")
    args = ["bundle", "--run", str(trained.run.path), "--data-dir", str(trained.data_dir)]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2
    assert refused.stderr.startswith(
        f"error: {trained.run.path / 'model'}: model.joblib is a pickle, which "
        "runs code when it is loaded; pass --trust-pickle"
    )
    assert runner.invoke(app, [*args, "--trust-pickle"]).exit_code == 0
    bundle = trained.run.path / "bundle"
    verify = runner.invoke(app, ["bundle", "verify", str(bundle)])
    assert verify.exit_code == 2 and "model/model.joblib is a pickle" in verify.stderr
    assert runner.invoke(app, ["bundle", "verify", str(bundle), "--trust-pickle"]).exit_code == 0


def test_bundle_needs_a_trained_run(runner, tmp_path):
    result = runner.invoke(app, ["bundle"])
    assert result.exit_code == 2
    assert (
        result.stderr.strip()
        == "error: pass --run RUN (a run path, run id or 'latest'), or use `qfactory bundle verify B`"
    )
