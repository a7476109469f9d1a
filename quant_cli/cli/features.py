"""`qfactory features`: build (or reuse) a recipe's feature table; list versions and the catalogue."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from quant_cli.cli import console
from quant_cli.cli.common import (
    BackendOpt,
    DataDirOpt,
    DebugOpt,
    JobsOpt,
    JsonOpt,
    OptionalRecipeOpt,
    QuietOpt,
    SetOpt,
    cli_errors,
    emit,
)
from quant_cli.errors import RecipeError
from quant_cli.recipe import load_recipe
from quant_cli.runs.directory import data_home

app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

DatasetOpt = Annotated[
    str | None, typer.Option("--dataset", help="List the versions of this dataset only.", show_default=False)
]


@app.callback(invoke_without_command=True)
def features(
    ctx: typer.Context,
    recipe: OptionalRecipeOpt = None,
    set_: SetOpt = None,
    data_dir: DataDirOpt = None,
    backend: BackendOpt = "local",
    jobs: JobsOpt = 1,
    as_json: JsonOpt = False,
    explain: Annotated[
        str | None,
        typer.Option(
            "--explain",
            help="Print how feature NAME is defined (an expression of --recipe: its parsed form, window and "
            "lookback; or a built-in feature) instead of building.",
            metavar="NAME",
            show_default=False,
        ),
    ] = None,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Build the recipe's feature table (or reuse the cached version) and print its directory.

    With --backend ray (or --jobs N) the symbol groups are built as parallel tasks; the result is
    the same table, bit for bit.

    The version lives in <data_dir>/<dataset>/features/<fingerprint>/ (table/part-*.parquet +
    spec.json); the fingerprint covers the [features] section, the data and the feature code.

    Example: qfactory features --recipe recipes/quickstart.toml --backend ray --jobs 4 --json

    Example: qfactory features --recipe r.toml --explain mom5
    """
    if ctx.invoked_subcommand is not None:
        return
    if explain is not None:
        _explain(explain, recipe, set_, as_json, quiet, debug)
        return
    from quant_cli.features.store import build_features  # heavy imports only when building

    with cli_errors(quiet, debug):
        if recipe is None:
            raise RecipeError(
                "--recipe is required to build features, e.g. `qfactory features "
                "--recipe r.toml`; see `qfactory features --help`"
            )
        loaded = load_recipe(recipe, set_)
        table = build_features(loaded, data_home(data_dir, loaded), backend, jobs, console.REPORTER)
    emit(
        table.path,
        as_json,
        {"fingerprint": table.fingerprint, "rows": table.rows, "features": len(table.columns), "cached": table.cached},
    )


def _explain(name: str, recipe: Any, set_: list[str] | None, as_json: bool, quiet: bool, debug: bool) -> None:
    from quant_cli.features.expression_eval import explain

    with cli_errors(quiet, debug):
        section = load_recipe(recipe, set_)["features"] if recipe is not None else {}
        described = explain(name, section)
    if as_json:
        typer.echo(json.dumps(described, sort_keys=True))
        return
    operators = described.pop("operators", [])
    lines = [f"{key}: {', '.join(v) if isinstance(v, list) else v}" for key, v in described.items()]
    typer.echo("\n".join([*lines, *(["operators:"] if operators else []), *(f"  {op}" for op in operators)]))


@app.command("ls")
def ls(
    dataset: DatasetOpt = None,
    recipe: OptionalRecipeOpt = None,
    set_: SetOpt = None,
    data_dir: DataDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of a table.")] = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """List stored feature versions (fingerprint, created, rows, features, build seconds).

    Without --dataset or --recipe, every dataset in the data home is listed.

    Example: qfactory features ls --dataset daily
    """
    from quant_cli.features.store import list_versions

    with cli_errors(quiet, debug):
        loaded = load_recipe(recipe, set_) if recipe is not None else None
        if loaded is not None and dataset is None:
            dataset = loaded["data"]["dataset"]
        rows = list_versions(data_home(data_dir, loaded), dataset)
    if not rows:
        console.info("no feature versions yet; build one with `qfactory features --recipe R`")
    columns = ("dataset", "fingerprint", "created", "rows", "features", "build_seconds")
    typer.echo(json.dumps(rows, sort_keys=True) if as_json else console.table(rows, columns))


@app.command("show")
def show(
    fingerprint: Annotated[
        str,
        typer.Argument(
            help="Fingerprint of the version (or a unique prefix), as `features ls` prints it.", show_default=False
        ),
    ],
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the version's spec.json (plus its path) instead of text.")
    ] = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Describe one stored feature version: rows, symbols, build time, and each feature's null share.

    Example: qfactory features show 3f9a2c1d
    """
    from quant_cli.features.store import show_version

    with cli_errors(quiet, debug):
        spec = show_version(data_home(data_dir, None), fingerprint, dataset)
    if as_json:
        typer.echo(json.dumps(spec, sort_keys=True))
        return
    typer.echo(_describe(spec))


def _describe(spec: dict[str, Any]) -> str:
    keys = (
        "fingerprint",
        "dataset",
        "path",
        "created",
        "rows",
        "symbols_count",
        "build_seconds",
        "feature_code_version",
    )
    head = [f"{k}: {spec.get(k)}" for k in keys] + [f"features: {len(spec.get('features', []))}"]
    if spec.get("skipped"):
        head.append(f"skipped (missing inputs): {', '.join(spec['skipped'])}")
    expressions = (spec.get("features_section") or {}).get("expressions") or {}
    head += [f"expression {name} = {text}" for name, text in sorted(expressions.items())]
    shares = spec.get("null_share", {})
    rows = [{"feature": f, "null_share": f"{shares.get(f, 0.0):.4f}"} for f in spec.get("features", [])]
    return "\n".join(head) + "\n\n" + console.table(rows, ("feature", "null_share"))


@app.command("ls-specs")
def ls_specs(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of a table.")] = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """List every registered feature: name pattern, input columns, tags, sets, description.

    Names with {w} expand over features.windows; use names or tags in features.include/exclude.

    Example: qfactory features ls-specs --json
    """
    from quant_cli.features import REGISTRY

    with cli_errors(quiet, debug):
        rows = REGISTRY.catalogue()
    if as_json:
        typer.echo(json.dumps(rows, sort_keys=True))
        return
    flat = [{**r, **{k: ",".join(r[k]) or "-" for k in ("inputs", "tags", "sets")}} for r in rows]
    typer.echo(console.table(flat, ("name", "inputs", "tags", "sets", "description")))
