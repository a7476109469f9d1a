"""`qfactory runs gc --keep N`: what it deletes, what it never deletes, and crash safety."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest
from runs_fakes import fake_run, stamp, trial

from quant_cli.cli import app
from quant_cli.runs import gc as gc_module
from quant_cli.runs.directory import resolve_run

RUNS = Path("runs")


def _runs(n: int) -> list[str]:
    ids = [f"r{i}-20260101T000000-000{i}" for i in range(n)]
    for i, run_id in enumerate(ids):
        fake_run(RUNS, run_id, stamp(i))
    return ids  # oldest first


def _gc(runner, *args: str) -> dict:
    result = runner.invoke(app, ["runs", "gc", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _left() -> set[str]:
    return {p.name for p in RUNS.iterdir()}


def test_keeps_the_newest_n_and_dry_run_deletes_nothing(runner):
    ids = _runs(5)
    plan = _gc(runner, "--keep", "2", "--dry-run")
    assert plan["kept"] == [ids[4], ids[3]] and plan["removed"] == [ids[2], ids[1], ids[0]] and plan["dry_run"]
    assert _left() == set(ids)
    result = runner.invoke(app, ["runs", "gc", "--keep", "2"])
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [ids[2], ids[1], ids[0]]
    assert _left() == {ids[4], ids[3]}


def test_referenced_runs_are_protected_unless_forced(runner):
    ids = _runs(4)
    (RUNS / ids[0] / "bundle").mkdir()  # holds a bundle
    study = fake_run(RUNS, "tune-20260101T000000-0009", stamp(9), references=[ids[1], str((RUNS / "gone").resolve())])
    (RUNS / "exports" / "b1").mkdir(parents=True)  # a bundle elsewhere names its source
    (RUNS / "exports" / "b1" / "manifest.json").write_text(json.dumps({"source_run": ids[2]}))
    plan = _gc(runner, "--keep", "1")
    assert plan["kept"] == [study.name] and plan["removed"] == [ids[3]]
    assert plan["protected"] == {
        ids[2]: ["source of bundle exports/b1"],
        ids[1]: [f"referenced by run {study.name}"],
        ids[0]: ["holds a bundle/"],
    }
    assert _left() == {study.name, ids[2], ids[1], ids[0], "exports"}
    info = json.loads(runner.invoke(app, ["runs", "show", ids[1], "--json"]).stdout)
    assert info["protected_by"] == [f"referenced by run {study.name}"]
    plan = _gc(runner, "--keep", "1", "--force")
    assert sorted(plan["removed"]) == sorted(ids[:3]) and _left() == {study.name, "exports"}


def test_a_run_being_written_is_never_deleted_and_live_staging_survives(runner):
    ids = _runs(3)
    mine = {"pid": os.getpid(), "host": socket.gethostname()}
    (RUNS / ids[0] / ".staging-backtest-x").mkdir()
    (RUNS / ids[0] / ".staging-backtest-x" / ".qfactory-owner.json").write_text(json.dumps(mine))
    (RUNS / ".staging-new-20260101T000000-aaaa").mkdir()  # a new run being created now
    (RUNS / ".staging-new-20260101T000000-aaaa" / ".qfactory-owner.json").write_text(json.dumps(mine))
    (RUNS / ".staging-dead-20260101T000000-bbbb").mkdir()  # its writer is gone
    (RUNS / ".staging-dead-20260101T000000-bbbb" / ".qfactory-owner.json").write_text(
        json.dumps({**mine, "pid": 2**22 + 12345})
    )
    plan = _gc(runner, "--keep", "0", "--force")
    assert plan["busy"] == [ids[0]] and sorted(plan["removed"]) == sorted(ids[1:])
    assert _left() == {ids[0], ".staging-new-20260101T000000-aaaa"}


def test_a_run_whose_stage_is_running_is_never_deleted(runner):
    """A model fit writes nothing for minutes (no staging folder yet): the manifest's running
    entry, with a live pid, keeps gc away; a dead pid's entry does not."""
    from quant_cli.runs.directory import Run

    ids = _runs(3)
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": "2026-01-01T00:00:00+00:00"}
    Run(RUNS / ids[0]).update_manifest(stages={"train": {"status": "running", **mine}})
    Run(RUNS / ids[1]).update_manifest(stages={"train": {"status": "running", **mine, "pid": 2**22 + 12345}})
    plan = _gc(runner, "--keep", "0", "--force")
    assert plan["busy"] == [ids[0]] and sorted(plan["removed"]) == sorted(ids[1:])


def test_a_gc_killed_mid_delete_leaves_no_half_deleted_run(runner, monkeypatch):
    ids = _runs(3)
    for run_id in ids:
        (RUNS / run_id / "model").mkdir()
        (RUNS / run_id / "model" / "model.txt").write_text("trees")
    real_rmtree = shutil.rmtree

    def killed_half_way(path, ignore_errors=False):
        os.remove(Path(path) / "metrics.json")  # part of the run is gone ...
        raise KeyboardInterrupt  # ... when the process dies

    monkeypatch.setattr(gc_module.shutil, "rmtree", killed_half_way)
    result = runner.invoke(app, ["runs", "gc", "--keep", "1"])
    assert result.exit_code == 130
    monkeypatch.setattr(gc_module.shutil, "rmtree", real_rmtree)
    trash = [name for name in _left() if name.startswith(".trash-")]
    assert len(trash) == 1 and (RUNS / trash[0] / "manifest.json").is_file()  # hidden: not a run any more
    rows = json.loads(runner.invoke(app, ["runs", "ls", "--json"]).stdout)
    assert {r["run_id"] for r in rows} == {ids[2], ids[0]} and all(r["state"] == "ok" for r in rows)
    assert resolve_run("latest", RUNS).path.name == ids[2]
    plan = _gc(runner, "--keep", "1")  # the next gc finishes the job
    assert plan["removed"] == [ids[0]] and plan["cleaned"] == trash and _left() == {ids[2]}


def test_gc_warns_that_deleted_trials_leave_the_ledger(runner):
    fake_run(RUNS, "a-20260101T000000-0001", stamp(1), backtest=trial(1.0))
    fake_run(RUNS, "b-20260101T000000-0002", stamp(2), backtest=trial(2.0))
    result = runner.invoke(app, ["runs", "gc", "--keep", "1", "--dry-run"])
    assert result.exit_code == 0 and result.stdout.splitlines() == ["a-20260101T000000-0001"]
    assert "warning: 1 on 'd' trial(s) would leave the trial ledger" in result.stderr


def test_negative_keep_and_missing_keep_are_one_line(runner):
    result = runner.invoke(app, ["runs", "gc", "--keep", "-1"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: --keep -1: must be 0 or more (the number of newest runs to keep), e.g. `qfactory runs gc --keep 20`"
    ]
    result = runner.invoke(app, ["runs", "gc"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == ["error: Missing option '--keep'. (see `qfactory runs gc --help`)"]


@pytest.mark.parametrize("damage", ["{not json", "[]"])
def test_damaged_runs_count_as_oldest(runner, damage):
    _runs(2)
    (RUNS / "x").mkdir()
    (RUNS / "x" / "manifest.json").write_text(damage)
    assert _gc(runner, "--keep", "2")["removed"] == ["x"]
