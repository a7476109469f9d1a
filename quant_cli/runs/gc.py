"""`qfactory runs gc --keep N`: delete all but the newest N runs, never a referenced one.

A run is protected (kept unless `--force`) when it holds a `bundle/` folder, when another run's
manifest lists it in `"references": [...]` (tune studies reference their trial runs that way),
or when a bundle anywhere under the runs home names it as `source_run` in its manifest.json. A
run a command is working on right now (a stage its manifest says is running in a live process, or
a live staging folder inside it) is never deleted, not even with `--force`.

Deletion is crash-safe: a run is first renamed to a hidden `.trash-<id>-<hex>` folder (one atomic
rename), then removed. A gc killed mid-way leaves a hidden folder that no listing, ledger or
`latest` sees, never a half-deleted run that looks valid; the next gc finishes removing it.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from quant_cli.errors import RunError
from quant_cli.io import clean_stale_staging
from quant_cli.report import SILENT, Reporter
from quant_cli.runs.directory import busy
from quant_cli.runs.listing import RunRecord, ledger_of, read_object, scan

TRASH_PREFIX = ".trash-"
# Folders a stage writes data into: no bundle lives there, so the bundle search skips them.
_DATA_FOLDERS = frozenset({"split", "cv", "model", "backtest", "walkforward"})


def protections(runs_dir: Path, records: list[RunRecord]) -> dict[str, list[str]]:
    """run id -> why it must be kept (bundle folder, referencing runs, bundles naming it)."""
    reasons: dict[str, list[str]] = {}
    for record in records:
        if "bundle" in record.names:
            reasons.setdefault(record.run_id, []).append("holds a bundle/")
        for ref in _references(record.manifest):
            reasons.setdefault(ref, []).append(f"referenced by run {record.run_id}")
    for bundle, source in _bundle_sources(runs_dir):
        reasons.setdefault(source, []).append(f"source of bundle {bundle}")
    return reasons


def _references(manifest: dict[str, Any]) -> list[str]:
    """Run ids in a manifest's "references" list (ids, run paths, or {"run_id": ...} objects)."""
    refs = manifest.get("references")
    out = []
    for ref in refs if isinstance(refs, list) else []:
        ref = ref.get("run_id") if isinstance(ref, dict) else ref
        if isinstance(ref, str) and ref:
            out.append(Path(ref).name)
    return out


def _bundle_sources(runs_dir: Path) -> list[tuple[str, str]]:
    """(bundle folder, source run id) of every bundle manifest.json under the runs home."""
    found = []
    for folder, dirs, files in os.walk(runs_dir):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in _DATA_FOLDERS]
        if "manifest.json" in files and Path(folder) != runs_dir:
            manifest, _ = read_object(Path(folder) / "manifest.json")
            source = manifest.get("source_run") if manifest else None
            if isinstance(source, str) and source:
                found.append((os.path.relpath(folder, runs_dir), Path(source).name))
    return found


def gc(
    runs_dir: Path, keep: int, force: bool = False, dry_run: bool = False, reporter: Reporter = SILENT
) -> dict[str, Any]:
    """Delete all but the newest `keep` runs (by manifest `created`; damaged runs count as oldest)."""
    if keep < 0:
        raise RunError(
            f"--keep {keep}: must be 0 or more (the number of newest runs to keep), e.g. `qfactory runs gc --keep 20`"
        )
    records = scan(runs_dir)  # newest first
    protected = protections(runs_dir.resolve(), records) if runs_dir.is_dir() else {}
    plan: dict[str, Any] = {
        "kept": [r.run_id for r in records[:keep]],
        "removed": [],
        "protected": {},
        "busy": [],
        "dry_run": dry_run,
    }
    doomed = []
    for record in records[keep:]:
        if busy(record.path):
            plan["busy"].append(record.run_id)
        elif protected.get(record.run_id) and not force:
            plan["protected"][record.run_id] = protected[record.run_id]
        else:
            doomed.append(record)
    plan["removed"] = [r.run_id for r in doomed]
    plan["trials_removed"] = _trials_removed(records, doomed)
    if not dry_run:
        for record in doomed:
            _delete(record.path)
        plan["cleaned"] = [p.name for p in _finish_earlier(runs_dir)]
    _warn_ledger(plan["trials_removed"], dry_run, reporter)
    return plan


def _trials_removed(records: list[RunRecord], doomed: list[RunRecord]) -> dict[str, int]:
    """Trials per dataset that leave the ledger with the deleted runs."""
    per_run, _ = ledger_of(records)
    gone = {r.run_id for r in doomed}
    return dict(Counter(t.dataset for rid, trials in per_run.items() if rid in gone for t in trials))


def _warn_ledger(trials_removed: dict[str, int], dry_run: bool, reporter: Reporter) -> None:
    if trials_removed:
        counts = ", ".join(f"{n} on {d!r}" for d, n in sorted(trials_removed.items()))
        verb = "would leave" if dry_run else "left"
        reporter.warn(
            f"{counts} trial(s) {verb} the trial ledger: the deflated Sharpe ratios of the remaining runs "
            "no longer count them, so they overstate what the survivors are worth"
        )


def _delete(path: Path) -> None:
    """Rename into a hidden trash name (atomic: the run vanishes whole), then remove it."""
    trash = path.with_name(f"{TRASH_PREFIX}{path.name}-{secrets.token_hex(3)}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _finish_earlier(runs_dir: Path) -> list[Path]:
    """Trash a killed gc left behind, and staging folders of dead writers (never a live one's)."""
    if not runs_dir.is_dir():
        return []
    trash = [p for p in runs_dir.iterdir() if p.name.startswith(TRASH_PREFIX) and p.is_dir() and not p.is_symlink()]
    for path in trash:
        shutil.rmtree(path, ignore_errors=True)
    return trash + clean_stale_staging(runs_dir)
