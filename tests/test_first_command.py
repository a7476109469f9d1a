"""A recipe is its own first command on a new machine: `train`, `split`, `features`, `walkforward` and
`tune` with --recipe ingest the recipe's [data] source when its dataset is not in the store yet (one
notice), and never re-ingest one that is there. Two commands starting at once on one empty data home
both succeed and ingest the dataset once (the store's writer lock)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import TINY_RECIPE as TINY
from typer.testing import CliRunner

from quant_cli.cli import app
from quant_cli.data import delta

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
SMALL = ["--set", "data.synthetic.symbols=3", "--set", "data.synthetic.bars=300"]
QFACTORY = [sys.executable, "-c", "from quant_cli.cli import app; app()"]  # the real CLI, in its own process
NOTICE = "notice: dataset 'tiny' is not in {data} yet: ingesting it from the recipe's data.source ('synthetic') first"


def _versions(data_dir: Path, dataset: str) -> list[int]:
    """The table versions committed to a dataset (one per ingest)."""
    log = delta.table_dir(data_dir / dataset) / delta.LOG
    return sorted(int(p.stem) for p in log.glob("*.json"))


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


@pytest.mark.parametrize("command", [["train"], ["split"], ["features"], ["walkforward"], ["tune", "--trials", "1"]])
def test_recipe_commands_ingest_a_missing_dataset_with_one_notice(command, tiny, tmp_path):
    data = tmp_path / "data"
    result = CliRunner().invoke(app, [*command, "--recipe", str(tiny)])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines().count(NOTICE.format(data=data)) == 1
    assert _versions(data, "tiny") == [0]
    # the dataset is there now: a second command reads it as it is, no notice, no new version
    again = CliRunner().invoke(app, ["split", "--recipe", str(tiny)])
    assert again.exit_code == 0, again.stderr
    assert "ingesting" not in again.stderr
    assert _versions(data, "tiny") == [0]


def test_a_recipe_without_source_still_names_the_missing_dataset(tiny, tmp_path):
    result = CliRunner().invoke(app, ["train", "--recipe", str(tiny), "--set", 'data.source=""'])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: dataset 'tiny' not found in {tmp_path / 'data'}; "
        "create it with `qfactory ingest --source ... --dataset tiny`"
    )


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.glob("*.toml")))
def test_every_shipped_recipe_is_its_own_first_command(recipe, tmp_path):
    """Each recipe in recipes/ (made small) splits in an empty data home: its source is ingested first."""
    result = CliRunner().invoke(app, ["split", "--recipe", str(RECIPES / recipe), *SMALL, "--quiet"])
    assert result.exit_code == 0, result.stderr
    assert (Path(result.stdout.strip()) / "split" / "boundaries.json").is_file()


def test_two_commands_at_once_on_an_empty_data_home_ingest_once(tiny, tmp_path):
    """Two real processes run `train --recipe` at once: both find the dataset missing and queue on its
    writer lock (held here until both wait, so they truly race); both train, and it is ingested once."""
    from filelock import FileLock

    root = tmp_path / "data" / "tiny"
    root.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    waiting = "waiting for another write to dataset 'tiny' to finish"
    with FileLock(str(root / ".writer.lock")):
        children = [
            subprocess.Popen(
                [*QFACTORY, "train", "--recipe", str(tiny)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        seen = [_read_until(child, waiting) for child in children]
    outputs = [child.communicate(timeout=300) for child in children]
    errors = [before + after for before, (_, after) in zip(seen, outputs)]
    assert [child.returncode for child in children] == [0, 0], errors
    runs = {Path(out.strip()) for out, _ in outputs}
    assert len(runs) == 2 and all((run / "metrics.json").is_file() for run in runs)
    assert _versions(tmp_path / "data", "tiny") == [0]
    assert sum(NOTICE.format(data=tmp_path / "data") in err for err in errors) == 1


def _read_until(child: subprocess.Popen, line: str) -> str:
    """The child's stderr up to and including `line` (it ends early if the child exits first)."""
    seen = []
    for got in child.stderr:
        seen.append(got)
        if got.strip() == line:
            break
    return "".join(seen)
