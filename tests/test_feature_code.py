"""The feature code is part of the feature-store fingerprint, and numba loads only when features run.

A cached table built by other feature code must never be reused (issue 21: the same folder name
served values differing by 0.13 after a family changed). The fingerprint hashes the source of the
kernels, the engine and every module that defines a registered family.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from quant_cli.data.store import write_store
from quant_cli.data.synthetic import generate
from quant_cli.features import REGISTRY, code_hash
from quant_cli.features.store import feature_table
from quant_cli.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    write_store(root, "ds", generate(symbols=3, bars=120, seed=1), source="synthetic")
    return root


def _recipe(tmp_path: Path) -> dict:
    path = tmp_path / "r.toml"
    path.write_text('[data]\ndataset = "ds"\n[features]\nsets = ["core"]\n', encoding="utf-8")
    return load_recipe(path)


def test_the_kernels_the_engine_and_every_family_module_are_hashed() -> None:
    files = {p.relative_to(ROOT).as_posix() for p in code_hash.code_files()}
    families = {
        (f.compute or f.build).__module__.replace(".", "/") + ".py"
        for f in REGISTRY.families.values()
        if f.plugin is None  # a user's plugin is fingerprinted by its source hash (tests/test_plugins.py)
    }
    assert families <= files
    assert {
        "quant_cli/features/kernels.py",
        "quant_cli/features/_compiled.py",
        "quant_cli/features/engine.py",
        "quant_cli/features/panel.py",
    } <= files


@pytest.fixture
def edited(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """Make code_hash see `path` with different bytes, as after an edit of that file."""

    def edit(relative: str) -> None:
        target = (ROOT / relative).resolve()
        real = code_hash._read
        monkeypatch.setattr(code_hash, "_read", lambda p: real(p) + (b"\n# edited\n" if p == target else b""))
        code_hash.feature_code_hash.cache_clear()

    yield edit
    code_hash.feature_code_hash.cache_clear()


@pytest.mark.parametrize("relative", ["quant_cli/features/core.py", "quant_cli/features/_compiled.py"])
def test_changed_feature_code_builds_a_new_version(
    tmp_path: Path,
    data_dir: Path,
    edited,  # noqa: ANN001
    relative: str,
) -> None:
    before = feature_table(_recipe(tmp_path), data_dir)
    assert feature_table(_recipe(tmp_path), data_dir).cached  # unchanged code: the cache serves it
    edited(relative)
    after = feature_table(_recipe(tmp_path), data_dir)
    assert not after.cached and after.fingerprint != before.fingerprint
    assert (after.path / "spec.json").read_text().count(code_hash.feature_code_hash()) == 1


def _python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_commands_that_compute_no_features_do_not_load_numba(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from quant_cli.cli import app\n"
        f"result = CliRunner().invoke(app, ['runs', 'ls', '--runs-dir', {str(tmp_path)!r}])\n"
        "assert result.exit_code == 0, result.output\n"
        "print('numba' in sys.modules)\n"
        "from quant_cli.data.synthetic import generate\n"
        "from quant_cli.features import compute_features\n"
        "compute_features(generate(symbols=2, bars=40), ['ret_5'])\n"
        "print('numba' in sys.modules)\n"
    )
    assert _python(code).split() == ["False", "True"]  # and computing a feature does load it
