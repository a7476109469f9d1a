"""A full disk, a read-only file system and a folder without write permission, on every kind of write
(polars parquet, Delta commits, JSON, staged folders), are exit 2 and one line naming the path.

Real faults, no mocks: a 2 MiB tmpfs mounted in a private mount namespace (`unshare -m`, as root: the
project's tests and CI run as root) and filled to a few KiB, then remounted read-only; permissions
are enforced on root by dropping CAP_DAC_OVERRIDE with `setpriv`. The commands run in that process
through the real CLI entry point (CliRunner), so the namespace holds for all of them.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import TINY_RECIPE as TINY

from quant_cli.errors import STORAGE_FIXES

# Runs inside the namespace: ingest onto the small disk, fill it to `free` KiB (or remount it read-only),
# then run each command; prints [exit code, stderr, run folders left, dataset versions] per command.
DRIVER = r"""
import json, os, subprocess, sys
from pathlib import Path
from typer.testing import CliRunner
from quant_cli.cli import app

disk, recipe, mode, free, data, runs = sys.argv[1:7]
commands = json.loads(sys.argv[7])
setup = CliRunner().invoke(app, ["ingest", "--recipe", recipe, "--quiet", "--data-dir", data])
assert setup.exit_code == 0, setup.stderr
if mode == "full":
    room = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize - int(free) * 1024
    with open(os.path.join(disk, "filler"), "wb") as fh:
        os.posix_fallocate(fh.fileno(), 0, room)
else:
    subprocess.run(["mount", "-o", "remount,ro", disk], check=True)
out = []
for command in commands:
    result = CliRunner().invoke(app, [*command, "--recipe", recipe, "--data-dir", data, "--runs-dir", runs, "--quiet"])
    log = Path(data) / "tiny" / "bars" / "_delta_log"
    left = sorted(p.name for p in Path(runs).iterdir()) if Path(runs).is_dir() else []
    out.append([result.exit_code, result.stderr, left, sorted(p.name for p in log.glob("*.json"))])
print(json.dumps(out))
"""
FULL = "no space left on device; free disk space there, or pass a --runs-dir / --data-dir on another disk"
READ_ONLY = "read-only file system; the file system is read-only; pass a writable --runs-dir / --data-dir"


def _can_unshare() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


needs_namespace = pytest.mark.skipif(not _can_unshare(), reason="a real full disk needs root and `unshare -m`")


def _on_small_disk(
    tmp_path: Path, mode: str, commands: list[list[str]], free_kib: int = 40, *, data_on_disk: bool = True
) -> tuple[Path, Path, list]:
    """Run `commands` with the data home (or the runs home) on a 2 MiB tmpfs that is full or read-only."""
    disk = tmp_path / "disk"
    disk.mkdir()
    (tmp_path / "tiny.toml").write_text(TINY)
    data = disk / "data" if data_on_disk else tmp_path / "data"
    runs = tmp_path / "runs" if data_on_disk else disk / "runs"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    mount = 'mount -t tmpfs -o size=2m tmpfs "$0" && exec "$@"'
    argv = [
        sys.executable,
        "-c",
        DRIVER,
        str(disk),
        str(tmp_path / "tiny.toml"),
        mode,
        str(free_kib),
        str(data),
        str(runs),
        json.dumps(commands),
    ]
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", mount, str(disk), *argv], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr
    return data, runs, json.loads(done.stdout.strip().splitlines()[-1])


@needs_namespace
def test_full_data_home_is_exit_2_naming_the_path(tmp_path):
    """train, walkforward and tune fail writing the feature table (polars: a ComputeError, not an
    OSError), run fails re-ingesting (deltalake: a DeltaError, and Rust panics on stderr): each is
    exit 2 and one line naming the path; no run is left behind and the dataset keeps its one version."""
    commands = [["train"], ["walkforward"], ["tune", "--trials", "1"], ["run"]]
    data, _, results = _on_small_disk(tmp_path, "full", commands)
    for command, (code, stderr, left, versions) in zip(commands, results):
        assert code == 2, (command, stderr)
        assert len(stderr.splitlines()) == 1, (command, stderr)
        where = re.escape(str(data / "tiny"))
        assert re.fullmatch(rf"error: {where}/\S+: {re.escape(FULL)}\n", stderr), (command, stderr)
        assert left == [] and versions == ["00000000000000000000.json"], command
    assert "part-00000.parquet" in results[0][1]  # the polars write itself
    assert results[3][1].startswith(f"error: {data / 'tiny' / 'bars'}: ")  # the Delta commit


@needs_namespace
def test_full_runs_home_is_exit_2_naming_the_path(tmp_path):
    """The disk fills while a run is written (with 32 KiB free: the split's parquet, io.write_parquet_atomic):
    one line naming the file, and no run (not even a staging folder) is left."""
    _, runs, [(code, stderr, left, _)] = _on_small_disk(tmp_path, "full", [["train"]], 32, data_on_disk=False)
    assert code == 2, stderr
    assert re.fullmatch(rf"error: {re.escape(str(runs))}/\S+: {re.escape(FULL)}\n", stderr), stderr
    assert left == []


@needs_namespace
def test_read_only_homes_are_exit_2_naming_the_path(tmp_path):
    data, _, results = _on_small_disk(tmp_path, "ro", [["train"], ["run"]])
    for code, stderr, left, _ in results:
        assert code == 2, stderr
        assert re.fullmatch(rf"error: {re.escape(str(data))}/\S+: {re.escape(READ_ONLY)}\n", stderr), stderr
        assert left == []


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="drops CAP_DAC_OVERRIDE with setpriv")
def test_unwritable_runs_home_is_exit_2_naming_the_path(tmp_path):
    """Root without CAP_DAC_OVERRIDE obeys permissions like any user: a runs home it may not write."""
    (tmp_path / "tiny.toml").write_text(TINY)
    runs = tmp_path / "runs"
    runs.mkdir()
    runs.chmod(0o555)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "QFACTORY_DATA_DIR": str(tmp_path / "data"),
        "QFACTORY_RUNS_DIR": str(runs),
    }
    drop = ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search"]
    cli = [sys.executable, "-c", "from quant_cli.cli import app; app()"]
    done = subprocess.run(
        [*drop, *cli, "train", "--recipe", str(tmp_path / "tiny.toml"), "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 2, done.stderr
    fix = re.escape(STORAGE_FIXES[errno.EACCES])
    assert re.fullmatch(rf"error: {re.escape(str(runs))}\S*: permission denied; {fix}\n", done.stderr), done.stderr


def test_an_unguarded_native_disk_error_is_still_exit_2(capsys):
    """The CLI's safety net for a native library's own exception type (here polars') outside every
    guarded write: exit 2 and one line, though the library names no path."""
    import polars as pl
    import typer

    from quant_cli.cli.common import cli_errors

    with pytest.raises(typer.Exit) as info, cli_errors():
        raise pl.exceptions.ComputeError("parquet: File out of specification: No space left on device (os error 28)")
    assert info.value.exit_code == 2
    fix = FULL.split("; ", 1)[1]
    expected = f"error: no space left on device while writing (ComputeError, which names no path); {fix}"
    assert capsys.readouterr().err.splitlines() == [expected]
