"""`qfactory runs`: list, show, compare, garbage-collect and export runs (with the trial ledger)."""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer

from quant_cli.cli import console
from quant_cli.cli.common import DebugOpt, QuietOpt, RunsDirOpt, cli_errors
from quant_cli.runs.directory import resolve_run, runs_home

app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Runs in the runs home: list, show, compare, garbage-collect, export to MLflow.\n\n"
    "Every Sharpe ratio comes with its deflated Sharpe ratio and N, the number of trials on that dataset.\n\n"
    "Example: qfactory runs ls --dataset daily --limit 20",
)

RunArg = Annotated[str, typer.Argument(help="Run directory, run id, or 'latest'.", show_default=False)]
RunsArg = Annotated[list[str], typer.Argument(help="Runs: directories, run ids, or 'latest'.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _resolve(refs: list[str], runs_dir: str | None) -> list[Any]:
    home = runs_home(runs_dir, None)
    return [resolve_run(ref, home, label="run") for ref in refs]


@app.command("ls")
def ls(
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="Only runs on this dataset.", show_default=False)
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Only runs of this model.", show_default=False)
    ] = None,
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            help="Only runs in this state (ok, failed, interrupted, running, damaged) "
            "or with this stage committed (e.g. backtest).",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", help="Show the newest N runs only.", show_default=False)
    ] = None,
    runs_dir: RunsDirOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """List runs, newest first: id, run name, dataset, model, val/test IC, Sharpe with its deflated Sharpe
    ratio (DSR) and N (trials on that dataset), status (committed stages, failed/interrupted), age.

    Reads manifest.json and metrics.json only. A run whose files cannot be read is listed as damaged.

    Example: qfactory runs ls --dataset daily --status backtest --limit 20
    """
    from quant_cli.runs.listing import list_runs

    with cli_errors(quiet, debug, as_json):
        rows = list_runs(runs_home(runs_dir, None), dataset, model, status, limit)
    if as_json:
        typer.echo(json.dumps(rows, sort_keys=True))
        return
    if not rows:
        console.info("no runs match; start one with `qfactory train --recipe R`")
    columns = ("run", "name", "dataset", "model", "val_ic", "test_ic", "sharpe", "dsr", "n", "status", "age")
    typer.echo(console.table([_ls_row(r) for r in rows], columns))


def _ls_row(row: dict[str, Any]) -> dict[str, Any]:
    trial = (row["trials"] or [{}])[0]  # the test-segment backtest, else the walk-forward
    if trial:
        shown_sharpe = f"{trial['sharpe']:.2f}" + (" (wf)" if trial["kind"] == "walkforward" else "")
    else:  # a validation-segment backtest: shown, but not a trial
        shown_sharpe = None if row["sharpe"] is None else f"{row['sharpe']:.2f} ({row['segment']})"
    return {
        "run": row["run_id"],
        "name": row["name"],
        "dataset": row["dataset"],
        "model": f"{row['model']} (pretrain)" if row.get("kind") == "pretrain" else row["model"],
        "val_ic": _num(row["val_ic"]),
        "test_ic": _num(row["test_ic"]),
        "sharpe": shown_sharpe,
        "dsr": _dsr(trial) if trial else None,
        "n": trial.get("n_trials"),
        "status": _status(row),
        "age": _age(row["age_seconds"]),
    }


def _num(value: float | None, digits: int = 4) -> str | None:
    return None if value is None else f"{value:.{digits}f}"


def _metric(value: float | None) -> str | None:
    """Counts as integers, everything else with 4 significant digits."""
    if value is None:
        return None
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"


def _dsr(trial: dict[str, Any]) -> str:
    """n/a when the Sharpe ratio has no `periods` (or moments) to deflate it with."""
    return "n/a" if trial.get("deflated_sharpe") is None else f"{trial['deflated_sharpe']:.2f}"


def _status(row: dict[str, Any]) -> str:
    if row["state"] in ("damaged", "running"):
        return row["state"]
    text = "+".join(row["committed"]) or "empty"
    for state in ("failed", "interrupted"):
        if row[state]:
            text += f" {state}:{','.join(row[state])}"
    return text


def _age(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(int(seconds), 0)}s"


@app.command("show")
def show(
    run: RunArg, runs_dir: RunsDirOpt = None, as_json: JsonOpt = False, quiet: QuietOpt = False, debug: DebugOpt = False
) -> None:
    """Describe one run: manifest summary, stages with timings, metrics, and its trial-ledger entry
    (Sharpe ratio, PSR, deflated Sharpe ratio with N trials now and at the run's creation).

    Example: qfactory runs show latest
    """
    from quant_cli.runs.compare import show_run

    with cli_errors(quiet, debug, as_json):
        info = show_run(_resolve([run], runs_dir)[0])
    typer.echo(json.dumps(info, sort_keys=True, default=str) if as_json else _describe(info))


def _describe(info: dict[str, Any]) -> str:
    keys = (
        "run_id",
        "path",
        "created",
        "dataset",
        "dataset_version",
        "model",
        "seed",
        "device",
        "qfactory_version",
        "git_commit",
    )
    head = [f"{k}: {'-' if info.get(k) is None else info[k]}" for k in keys]
    head.append(f"status: {_status(info)}")
    if info.get("references"):
        head.append(f"references: {', '.join(map(str, info['references']))}")
    if info["protected_by"]:
        head.append(f"protected from gc: {'; '.join(info['protected_by'])}")
    stages = [
        {"stage": n, **{k: e.get(k) for k in ("status", "seconds", "finished")}} for n, e in info["stages"].items()
    ]
    metrics = [{"metric": k, "value": _metric(v)} for k, v in _flat_numbers(info["metrics"]).items()]
    ledger = [
        {
            **t,
            "sharpe": _num(t["sharpe"], 2),
            "psr": _num(t["psr"], 3),
            "dsr": _dsr(t),
            "n": t["n_trials"],
            "dsr_at_creation": _num(t["deflated_sharpe_at_creation"], 3),
            "n_at_creation": t["n_trials_at_creation"],
            "periods": t["periods"] or "n/a",
        }
        for t in info["ledger"]
    ]
    parts = [
        "\n".join(head),
        console.table(stages, ("stage", "status", "seconds", "finished")),
        console.table(metrics, ("metric", "value")),
    ]
    if ledger:
        parts.append(
            "trial ledger\n"
            + console.table(
                ledger, ("kind", "sharpe", "periods", "psr", "dsr", "n", "dsr_at_creation", "n_at_creation")
            )
        )
    return "\n\n".join(parts)


def _flat_numbers(metrics: dict[str, Any]) -> dict[str, float]:
    from quant_cli.runs.compare import flatten, numeric

    return numeric(flatten(metrics))


@app.command("compare")
def compare(
    runs: RunsArg,
    runs_dir: RunsDirOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Compare runs: every metric side by side, then the resolved-recipe keys whose values differ.

    Example: qfactory runs compare quickstart-20260101T120000-ab12 latest
    """
    from quant_cli.runs.compare import compare_runs

    with cli_errors(quiet, debug, as_json):
        result = compare_runs(_resolve(runs, runs_dir))
    if as_json:
        typer.echo(json.dumps(result, sort_keys=True, default=str))
        return
    names = [f"run{i}" for i in range(1, len(result["runs"]) + 1)]  # run ids are too long for column headers
    legend = "\n".join(f"{name} = {rid}" for name, rid in zip(names, result["runs"]))
    metrics = [
        {"metric": k, **{n: _metric(v) for n, v in zip(names, values)}} for k, values in result["metrics"].items()
    ]
    recipe = [
        {"recipe key": k, **{n: _value(v) for n, v in zip(names, values)}} for k, values in result["recipe"].items()
    ]
    typer.echo(
        "\n\n".join(
            [
                legend,
                console.table(metrics, ("metric", *names)),
                console.table(recipe, ("recipe key", *names)) if recipe else "recipes: identical",
            ]
        )
    )


def _value(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str) if not isinstance(value, str) else value


@app.command("gc")
def gc(
    keep: Annotated[int, typer.Option("--keep", help="Keep the newest N runs.", show_default=False)],
    force: Annotated[
        bool, typer.Option("--force", help="Also delete runs a bundle or another run (a tune study) references.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be deleted.")] = False,
    runs_dir: RunsDirOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Delete all but the newest N runs; never one that holds a bundle, that a bundle names as its
    source, or that another run (a tune study) references, unless --force; never one being written.

    Each run is renamed to a hidden .trash-* folder first, so a killed gc never leaves a half-deleted run.

    Example: qfactory runs gc --keep 20 --dry-run
    """
    from quant_cli.runs.gc import gc as collect

    with cli_errors(quiet, debug, as_json):
        result = collect(runs_home(runs_dir, None), keep, force, dry_run, console.REPORTER)
    if as_json:
        typer.echo(json.dumps(result, sort_keys=True))
        return
    for run_id in result["removed"]:
        typer.echo(run_id)  # stdout: what went (or would go), one id a line, for scripts
    verb = "would delete" if dry_run else "deleted"
    console.info(
        f"{verb} {len(result['removed'])} run(s), kept {len(result['kept'])}"
        + "".join(f"; kept protected {rid} ({', '.join(why)})" for rid, why in result["protected"].items())
        + "".join(f"; skipped {rid} (a command is writing to it)" for rid in result["busy"])
    )


@app.command("export-mlflow")
def export_mlflow(
    runs: RunsArg,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            "--tracking-uri",
            help="MLflow tracking URI (else $MLFLOW_TRACKING_URI), e.g. file:///home/me/mlruns or http://mlflow:5000.",
            show_default=False,
        ),
    ] = None,
    experiment: Annotated[str, typer.Option("--experiment", help="MLflow experiment name.")] = "qfactory",
    runs_dir: RunsDirOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Log runs to MLflow: params (the flattened resolved recipe), metrics (metrics.json and the
    deflated Sharpe ratio), artifacts (recipe, manifest, metrics, model/, backtest report).

    Needs the mlflow extra: pip install 'qfactory[mlflow]'. Exporting a run again updates the same
    MLflow run (tagged qfactory.run_id) instead of creating a duplicate.

    Example: qfactory runs export-mlflow latest --tracking-uri file:///tmp/mlruns
    """
    from quant_cli.errors import RunError
    from quant_cli.runs.export import export_mlflow as export

    with cli_errors(quiet, debug, as_json):
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise RunError(
                "runs export-mlflow: no tracking URI; pass --tracking-uri URI (e.g. "
                "file:///tmp/mlruns) or set MLFLOW_TRACKING_URI"
            )
        results = export(_resolve(runs, runs_dir), uri, experiment, console.REPORTER)
    if as_json:
        typer.echo(json.dumps(results, sort_keys=True))
        return
    for result in results:
        typer.echo(result["mlflow_run_id"])
