"""Shared fixtures: small synthetic panels made in memory, homes in tmp_path, a CLI runner."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from helpers import SYN_RECIPE
from typer.testing import CliRunner

from quant_cli.cli import app, console
from quant_cli.data.synthetic import generate


@pytest.fixture(autouse=True)
def _isolated_homes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own data and runs homes; nothing leaks into the working tree."""
    monkeypatch.setenv("QFACTORY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("QFACTORY_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("QFACTORY_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    console.set_quiet(False)  # a --quiet command in an earlier test must not silence this one


@pytest.fixture(autouse=True)
def _forget_plugins() -> Iterator[None]:
    """Factor plugins (a recipe's plugins = [...]) register in the process-wide registry: dropped after
    each test, so tests that compare the registry's families see the built-in ones only."""
    yield
    from quant_cli.features import REGISTRY

    for name in [n for n, f in REGISTRY.families.items() if f.plugin is not None]:
        del REGISTRY.families[name]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="session")
def small_panel() -> pl.DataFrame:
    """5 symbols x 300 daily bars: enough for 60-bar windows, fast everywhere."""
    return generate(symbols=5, bars=300, seed=7)


def snapshot_tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes, to prove a failed command changed nothing."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> tuple[Path, pl.DataFrame]:
    """A recipe and its ingested dataset; returns (recipe path, the dataset's bars)."""
    root = tmp_path_factory.mktemp("audit")
    (root / "r.toml").write_text(SYN_RECIPE)
    result = CliRunner().invoke(
        app, ["ingest", "--recipe", str(root / "r.toml"), "--quiet", "--data-dir", str(root / "data")]
    )
    assert result.exit_code == 0, result.output
    return root, pl.read_delta(str(root / "data" / "syn" / "bars"))
