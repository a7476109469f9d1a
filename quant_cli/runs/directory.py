"""Run directories (DESIGN.md §5): creation, manifest, per-stage status, `latest` resolution.

A new run is built in a hidden staging folder and renamed into place only when the command
succeeds, so bad input never leaves a half-written run behind. Later stages (`backtest --run`)
write their outputs through `quant_cli.io` atomic helpers and record themselves in the manifest.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from quant_cli import __version__
from quant_cli.errors import DataError, QFactoryError, RunError, shown
from quant_cli.io import (
    STAGING_PREFIX,
    clean_stale_staging,
    owner,
    owner_gone,
    read_json,
    read_run_json,
    release_owner,
    staged_dir,
    storage_errors,
    write_json_atomic,
    write_owner,
    write_text_atomic,
)
from quant_cli.recipe import Recipe, fingerprint, to_toml
from quant_cli.report import SILENT, Reporter
from quant_cli.schema import RUN_NAME_DOC, RUN_NAME_PATTERN

# What each stage writes into a run. A stage is committed by its manifest entry, written last:
# these paths without that entry are leftovers of a killed process, removed before a redo.
STAGE_OUTPUTS = {
    "split": ("split",),
    "pretrain": ("pretrain",),
    "train": (
        "cv",
        "model",
        "predictions.parquet",
    ),  # not metrics.json: backtest and walkforward write it too, train rewrites it whole
    "backtest": ("backtest",),
    "walkforward": ("walkforward",),  # and its block of metrics.json, merged in like backtest's
    "bundle": ("bundle", "bundle.tar.gz"),
}
_STAGE_RESULT = {
    "split": "a split",
    "pretrain": "a pretrained encoder",
    "train": "a model",
    "backtest": "a backtest",
    "walkforward": "a walk-forward",
    "bundle": "a bundle",
}

_LIBRARIES = (
    "polars",
    "pyarrow",
    "numpy",
    "lightgbm",
    "catboost",
    "xgboost",
    "scikit-learn",
    "joblib",
    "torch",
    "typer",
)


def resolve_home(option: str | None, env_var: str, recipe_value: str | None, default: str) -> Path:
    """Highest precedence first: command-line option, environment, recipe, default."""
    return _pick_home(option, env_var, recipe_value, default, ("option", "recipe"))[0]


def _pick_home(
    option: str | None, env_var: str, recipe_value: str | None, default: str, names: tuple[str, str]
) -> tuple[Path, str]:
    """The home and where it came from, e.g. (Path('x'), '--runs-dir'); `names` = (option, recipe key)."""
    for candidate, where in ((option, names[0]), (os.environ.get(env_var), env_var), (recipe_value, names[1])):
        if candidate:
            return Path(candidate).expanduser(), where
    return Path(default), "the default home"


def _check_home(home: Path, where: str, error: type[QFactoryError]) -> Path:
    """A home must be a folder or creatable as one: no part of the path may be a regular file."""
    for part in (home, *home.parents):
        if part.exists() and not part.is_dir():
            blocker = "it is a file" if part == home else f"{part} is a file"
            raise error(
                f"{where} {home}: not a usable folder ({blocker}); pass a folder path (it is created if missing)"
            )
    return home


def data_home(option: str | None, recipe: Recipe | None = None) -> Path:
    recipe_value = recipe["data"].get("data_dir") if recipe else None
    home, where = _pick_home(option, "QFACTORY_DATA_DIR", recipe_value, "data", ("--data-dir", "data.data_dir"))
    return _check_home(home, where, DataError)


def runs_home(option: str | None, recipe: Recipe | None = None) -> Path:
    recipe_value = recipe["run"].get("runs_dir") if recipe else None
    home, where = _pick_home(option, "QFACTORY_RUNS_DIR", recipe_value, "runs", ("--runs-dir", "run.runs_dir"))
    return _check_home(home, where, RunError)


def library_versions() -> dict[str, str]:
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _git_commit() -> str | None:
    """The commit of the qfactory source that runs (a git checkout, e.g. an editable install),
    asked in the package's own folder: the working directory's repository, if any, says nothing
    about the code, and made one experiment two trials when run from two folders (runs/ledger.py)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@dataclass
class Run:
    """An existing run directory."""

    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def manifest(self) -> dict[str, Any]:
        return read_run_json(self.path, "manifest.json")

    def recipe(self) -> Recipe:
        from quant_cli.recipe import load_recipe

        return load_recipe(self.path / "recipe.toml")

    def update_manifest(self, **fields: Any) -> None:
        manifest = self.manifest()
        for key, value in fields.items():
            if isinstance(value, dict) and isinstance(manifest.get(key), dict):
                manifest[key].update(value)
            else:
                manifest[key] = value
        write_json_atomic(self.manifest_path, manifest)

    def has_stage(self, stage: str) -> bool:
        return self.manifest().get("stages", {}).get(stage, {}).get("status") == "done"

    def require_stage(self, stage: str, fix: str) -> None:
        """RunError unless `stage` is committed; `fix` says which command makes it."""
        if not self.has_stage(stage):
            raise RunError(f"run {self.id} has no committed {stage} stage; {fix}")

    def begin_stage(self, stage: str, reporter: Reporter = SILENT) -> None:
        """Make way for `stage`: refuse if it is committed, else clear an interrupted attempt.

        Runs are never overwritten, so a committed stage is an error. Outputs of a stage that
        never committed (the process was killed mid-way) and dead writers' staging folders are
        removed, with a notice, so the stage is simply redone.
        """
        if self.has_stage(stage):
            raise RunError(
                f"run {self.id} already has "
                f"{_STAGE_RESULT.get(stage, f'a {stage} stage')}; runs are never "
                "overwritten — "
                "start a new one with `qfactory train --recipe R`"
            )
        leftovers = [self.path / name for name in STAGE_OUTPUTS.get(stage, ()) if (self.path / name).exists()]
        for path in leftovers:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        stale = clean_stale_staging(self.path)
        if leftovers or stale:
            names = ", ".join(sorted(p.name for p in [*leftovers, *stale]))
            reporter.notice(
                f"run {self.id}: the {stage} stage never committed (interrupted); removed "
                f"its leftovers ({names}) and redoing it"
            )

    def log(self, event: str, **fields: Any) -> None:
        record = {"time": _now_iso(), "event": event, **fields}
        with storage_errors(self.path / "log.jsonl"), open(self.path / "log.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=str) + "\n")

    @contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        """Time a stage and record it as done in the manifest; the yielded dict is stored too.

        While it runs the manifest says so, with this process's pid and host: `runs ls` tells a
        stage still running from one whose process was killed (interrupted) before it wrote anything."""
        self.log("stage_start", stage=name)
        self.update_manifest(stages={name: {"status": "running", **owner(), "started": _now_iso()}})
        started = time.perf_counter()
        extra: dict[str, Any] = {}
        try:
            yield extra
        except (Exception, KeyboardInterrupt) as exc:
            self._record_failure(name, exc, round(time.perf_counter() - started, 3))
            raise
        seconds = round(time.perf_counter() - started, 3)
        self.update_manifest(stages={name: {"status": "done", "seconds": seconds, "finished": _now_iso(), **extra}})
        self.log("stage_done", stage=name, seconds=seconds)

    def _record_failure(self, name: str, exc: Exception | KeyboardInterrupt, seconds: float) -> None:
        """Best effort, so `runs ls --status failed` finds it: the manifest says the stage failed
        (or was interrupted by Ctrl-C); it stays uncommitted, so the next command redoes it."""
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        try:
            self.update_manifest(
                stages={
                    name: {"status": status, "seconds": seconds, "finished": _now_iso(), "error": type(exc).__name__}
                }
            )
            self.log(f"stage_{status}", stage=name, error=type(exc).__name__)
        except Exception:  # noqa: BLE001 - a damaged manifest or full disk must not hide the real error
            pass


def _now_iso(timespec: str = "seconds") -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec=timespec)


def new_run_id(name: str) -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{name}-{stamp}-{secrets.token_hex(2)}"


@contextmanager
def create_run(runs_dir: Path, recipe: Recipe) -> Iterator[Run]:
    """Create a run in a staging folder; it appears under `runs_dir` only if the block succeeds."""
    _check_run_name(recipe["run"]["name"])
    runs_dir = runs_dir.resolve()
    with storage_errors(runs_dir):
        runs_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(runs_dir)  # runs of killed processes never became runs: drop them
    run_id = new_run_id(recipe["run"]["name"])
    while (runs_dir / run_id).exists():
        run_id = new_run_id(recipe["run"]["name"])
    staging = runs_dir / f"{STAGING_PREFIX}{run_id}"
    with storage_errors(runs_dir, own_name=False):
        staging.mkdir()
    run = Run(staging)
    try:
        with storage_errors(runs_dir / run_id):
            write_owner(staging)
            write_text_atomic(staging / "recipe.toml", to_toml(recipe))
            write_json_atomic(staging / "manifest.json", _initial_manifest(run_id, recipe))
        yield run
        final = runs_dir / run_id
        with storage_errors(final, own_name=False):
            release_owner(staging)
            os.replace(staging, final)
        run.path = final
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _check_run_name(name: Any) -> None:
    """The recipe check, again for recipes built in code: the name becomes a directory name."""
    if not isinstance(name, str) or not re.fullmatch(RUN_NAME_PATTERN, name):
        raise RunError(f"run.name {shown(name)}: must be {RUN_NAME_DOC} (regex {RUN_NAME_PATTERN}); rename the run")


def _initial_manifest(run_id: str, recipe: Recipe) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "created": _now_iso("microseconds"),  # orders runs for `latest`, even within one second
        "qfactory_version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "libraries": library_versions(),
        "git_commit": _git_commit(),
        "seed": recipe["run"]["seed"],
        "device": "cpu",
        "fingerprints": {"recipe": fingerprint(recipe), "experiment": experiment_fingerprint(recipe)},
        "stages": {},
    }


def experiment_fingerprint(recipe: Recipe) -> str:
    """The resolved recipe less what only names or places a run (run.name, run.runs_dir,
    data.data_dir, [serve]): the trial ledger counts runs with the same one (and the same data
    and code) as one trial (runs/ledger.py)."""
    kept = {
        section: dict(values) if isinstance(values, dict) else values
        for section, values in recipe.items()
        if section != "serve"
    }
    for section, key in (("run", "name"), ("run", "runs_dir"), ("data", "data_dir")):
        if isinstance(kept.get(section), dict):
            kept[section].pop(key, None)
    return fingerprint(kept)


def resolve_run(ref: str, runs_dir: Path, label: str = "--run") -> Run:
    """`ref` is a path to a run directory, a run id under `runs_dir`, or `latest`; `label` names
    the argument in errors (`runs show RUN` passes 'run')."""
    if ref == "latest":
        return _latest(runs_dir, label)
    for candidate in (Path(ref), runs_dir / ref):
        if (candidate / "manifest.json").is_file():
            return Run(candidate.resolve())
    raise RunError(
        f"{label} {shown(ref)}: no run directory with a manifest.json there or under {runs_dir}; "
        "pass a run path, a run id, or 'latest'"
    )


def _latest(runs_dir: Path, label: str = "--run") -> Run:
    runs = (
        [p for p in runs_dir.glob("*/manifest.json") if not p.parent.name.startswith(".")] if runs_dir.is_dir() else []
    )
    if not runs:
        raise RunError(f"{label} latest: no runs under {runs_dir}; start one with `qfactory train --recipe R`")
    newest = max(runs, key=_created)
    return Run(newest.parent.resolve())


def _created(manifest_path: Path) -> str:
    """When a run was created; a damaged manifest sorts first, so it is never 'latest'."""
    try:
        manifest = read_json(manifest_path)
    except (OSError, ValueError):
        return ""
    return str(manifest.get("created", "")) if isinstance(manifest, dict) else ""


@contextmanager
def stage_outputs(run: Run, folder: str) -> Iterator[Path]:
    """Stage files for `<run>/<folder>/` in a hidden sibling and rename them in on success."""
    final = run.path / folder
    if final.exists():
        raise RunError(f"run {run.id} already has {folder}/; runs are never overwritten — start a new run")
    with staged_dir(final) as staging:
        yield staging


def busy(run_dir: Path) -> bool:
    """A command is working on this run now: a stage the manifest says is running in a live
    process (a fit writes nothing for minutes), or a staging folder whose writer is alive.
    `runs gc` never deletes such a run, not even with --force."""
    from quant_cli.io import _is_stale  # the one rule that tells a live writer from a dead one

    if any(isinstance(e, dict) and running_alive(e) for e in _manifest_stages(run_dir).values()):
        return True
    try:
        entries = list(Path(run_dir).iterdir())
    except OSError:
        return False
    return any(e.name.startswith(STAGING_PREFIX) and e.is_dir() and not _is_stale(e) for e in entries)


def _manifest_stages(run_dir: Path) -> dict[str, Any]:
    try:
        stages = read_json(Path(run_dir) / "manifest.json").get("stages")
    except (OSError, ValueError, AttributeError):  # absent, damaged, or not an object
        return {}
    return stages if isinstance(stages, dict) else {}


def running_alive(entry: dict[str, Any]) -> bool:
    """A manifest stage entry marked running whose process is alive (another host's: started
    within a day). A dead one's stage was interrupted: it never committed and is redone."""
    if entry.get("status") != "running":
        return False
    try:
        age = (dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(str(entry.get("started")))).total_seconds()
    except (TypeError, ValueError):
        age = float("inf")  # no readable start: judged by the pid alone
    return not owner_gone(entry, age)
